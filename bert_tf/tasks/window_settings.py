"""The sliding-window settings shared by the tasks that read long single texts (`--max_windows`,
`--window_stride`, `--window_pooling`): classification pools the window logits of a document, the embedding task
its window embeddings. One flag each, so both tasks declare the same field (`bert_tf.text.windows` has the rule)."""

from bert_tf.text.windows import POOLINGS
from bert_tf.training.settings import setting

MAX_WINDOWS_HELP = ("Single-text tasks: > 1 reads a text longer than --max_seq_length over up to this many sliding "
                    "windows (window logits or embeddings pooled per document; a longer text keeps its first "
                    "max_windows windows, counted in the eval results as documents_over_max_windows). 1: truncate "
                    "to the first window.")
WINDOW_STRIDE_HELP = ("With --max_windows > 1: wordpieces between the starts of consecutive windows "
                      "(1 .. max_seq_length - 2; smaller = more overlap).")
WINDOW_POOLING_HELP = ("With --max_windows > 1: how the window logits (classification) or window embeddings "
                       "(embedding: mean weighted by each window's tokens) of a document are pooled.")


def max_windows_setting():
    return setting(1, MAX_WINDOWS_HELP)


def window_stride_setting():
    return setting(0, WINDOW_STRIDE_HELP)


def window_pooling_setting():
    return setting("mean", WINDOW_POOLING_HELP, choices=POOLINGS)
