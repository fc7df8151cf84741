"""Sliding windows over texts longer than the model's window, and pooling of per-window values per document.

Shared by the tasks that read long single texts: classification pools window logits, the sentence embedder pools
window embeddings (`pool_windows`, optionally weighted, e.g. by each window's token count).

A single text's wordpieces are cut into windows of ``seq_length - 2`` pieces whose starts are ``window_stride``
pieces apart (window ``w`` covers pieces ``[w * window_stride, w * window_stride + seq_length - 2)``), each packed as
``[CLS] window [SEP]``. A document needs ``1 + ceil(max(n - (seq_length - 2), 0) / window_stride)`` windows for
``n`` pieces; it keeps at most ``max_windows`` of them (the first ones: the rest of a longer document is not
read, and `windows_needed` lets the caller count such documents). With ``max_windows=1`` the one window is
exactly the preprocessor's own truncation.

Features are int32 ``[B, W, T]``: ``W`` is the most windows a document of this batch keeps (<= ``max_windows``),
``T`` the packed length. Windows past a document's own count are all zero (``input_mask`` 0 everywhere), which
is how the model tells them apart (`valid_windows`). Only plain TF ops: the exports stay servable by TF Serving
2.12+.
"""

import tensorflow as tf

from bert_tf.text.packer import INPUT_KEYS

POOLINGS = ("mean", "max")


def check_windowing(seq_length, window_stride, max_windows, window_pooling):
    """Raises ValueError for settings that cannot window documents of `seq_length`-piece windows."""
    if int(max_windows) < 1:
        raise ValueError(f"max_windows must be >= 1 (1 = truncate to the first window), got {max_windows}")
    if window_pooling not in POOLINGS:
        raise ValueError(f"window_pooling must be one of {POOLINGS}, got {window_pooling!r}")
    if int(max_windows) == 1:
        if int(window_stride) != 0:
            raise ValueError(f"window_stride={window_stride} has no effect with max_windows=1; give max_windows > 1 "
                             "to read long documents over several windows")
        return
    body = int(seq_length) - 2
    if not 1 <= int(window_stride) <= body:
        raise ValueError(f"window_stride must be in [1, seq_length - 2 = {body}] with max_windows={max_windows} "
                         f"(windows must overlap or touch), got {window_stride}")


def windows_needed(lengths, seq_length, window_stride):
    """Wordpiece counts [B] -> int32 [B]: the windows covering each whole document (before `max_windows`)."""
    extra = tf.maximum(tf.cast(lengths, tf.int32) - (seq_length - 2), 0)
    return 1 + (extra + window_stride - 1) // window_stride


def window_features(preprocessor, texts, window_stride, max_windows):
    """Texts [B] -> (features: dict of int32 [B, W, T], needed: int32 [B] windows each whole text needs)."""
    texts = tf.reshape(tf.convert_to_tensor(texts, dtype=tf.string), [-1])
    seq_length = preprocessor.seq_length
    body = seq_length - 2
    # Pieces past the last window a document may keep are never read: tokenize only that far.
    width = (max_windows - 1) * window_stride + body
    ids, lengths = preprocessor.tokenizer.tokenize_dense(texts, width=width)
    needed = windows_needed(lengths, seq_length, window_stride)
    kept = tf.minimum(needed, max_windows)
    num_windows = tf.reduce_max(tf.concat([kept, [1]], 0))
    starts = tf.range(num_windows, dtype=tf.int32) * window_stride
    positions = starts[:, tf.newaxis] + tf.range(body, dtype=tf.int32)[tf.newaxis, :]
    pieces = tf.gather(ids, tf.minimum(positions, width - 1), axis=1)  # [B, W, body]
    valid = tf.range(num_windows)[tf.newaxis, :] < kept[:, tf.newaxis]  # [B, W]
    window_lengths = tf.where(valid, tf.clip_by_value(lengths[:, tf.newaxis] - starts[tf.newaxis, :], 0, body), 0)
    batch = tf.shape(ids)[0]
    packed = preprocessor.packer.pack_dense(tf.reshape(pieces, [-1, body]), tf.reshape(window_lengths, [-1]))
    keep = tf.reshape(tf.cast(valid, tf.int32), [-1, 1])
    features = {k: tf.reshape(packed[k] * keep, [batch, num_windows, -1]) for k in INPUT_KEYS}
    return features, needed


def valid_windows(input_mask):
    """`input_mask` [B, W, T] -> bool [B, W]: the windows that hold a piece of a document."""
    return input_mask[:, :, 0] > 0


def window_token_counts(input_mask):
    """`input_mask` [B, W, T] -> float32 [B, W]: the tokens ([CLS] and [SEP] included) of each window."""
    return tf.reduce_sum(tf.cast(input_mask, tf.float32), axis=-1)


def pool_windows(values, valid, pooling, weights=None):
    """Window values [B, W, D] and `valid` [B, W] -> document values [B, D]: the mean (weighted by `weights`
    [B, W] when given) or the max over the document's real windows; padding windows never count."""
    valid = tf.cast(valid, values.dtype)
    if pooling == "mean":
        weights = valid if weights is None else valid * tf.cast(weights, values.dtype)
        weights = weights[:, :, tf.newaxis]
        return tf.reduce_sum(values * weights, axis=1) / tf.maximum(tf.reduce_sum(weights, axis=1), 1e-12)
    if pooling == "max":
        real = valid[:, :, tf.newaxis] > 0
        return tf.reduce_max(tf.where(real, values, tf.fill(tf.shape(values), values.dtype.min)), axis=1)
    raise ValueError(f"window_pooling must be one of {POOLINGS}, got {pooling!r}")
