"""LiteRT export of the token tagger (bert_tf.tasks.tagging.litert): raw strings -> per-word tags and byte offsets.

A tiny random tagger on the real MiniLM vocabulary, compared with the Keras model's own `tag_words` on the words
of `split_words` (Google's rules), for real ASCII sentences that fit in one chunk.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

import bert_tf
from bert_tf.export import litert
from bert_tf.tasks.tagging import litert as litert_tagging
from fixtures import datasets

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


@pytest.fixture(scope="module")
def tagger():
    tf.keras.utils.set_random_seed(3)
    vocab = bert_tf.load_vocab(os.path.join(datasets.minilm_dir(), "vocab.txt"))
    enc = bert_tf.BertEncoder(bert_tf.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                                                 num_attention_heads=2, intermediate_size=64))
    model = bert_tf.BertTokenTagger(enc, bert_tf.BertPreprocessor(vocabulary=vocab, seq_length=64), labels=LABELS)
    model.build()
    kernel, bias = model.head.get_weights()
    model.head.set_weights([kernel * 40, bias])  # clear argmax decisions
    return model


def _words(out, row):
    """(tag id, byte start, byte end) per word of one row of the .tflite's outputs."""
    n = int(out["num_pieces"][row])
    starts = [i for i in range(n) if out["word_start"][row, i]]
    ends = starts[1:] + [n]
    return [(int(out["tag_ids"][row, s]), int(out["start_offsets"][row, s]), int(out["end_offsets"][row, e - 1]))
            for s, e in zip(starts, ends)]


def test_tagger_tflite_matches_keras_words(tagger, tmp_path):
    path = litert_tagging.export_litert_tagger(tagger, tmp_path / "tagger", precision="float32", task="tagging")
    meta = litert.read_metadata(tmp_path / "tagger")
    assert meta["labels"] == LABELS and meta["outputs"] == litert_tagging.OUTPUTS
    texts = [s for s in datasets.real_sentences(400) if s.isascii()
             and len(tagger.preprocessor.tokenize(tf.constant([s]))[0]) <= 62][:40]
    texts += ["John Smith lives in Paris.", "Mr. O'Neil (of New-York) said: ok!"]
    runner = litert.load_interpreter(path).get_signature_runner("serving_default")
    out = runner(text=np.array(texts, dtype=object))
    words, starts, ends = tagger.preprocessor.tokenizer.split_words(tf.constant(texts))
    want = tagger.tag_words(words)["tag_ids"].to_list()
    for row, text in enumerate(texts):
        got = _words(out, row)
        assert [g[0] for g in got] == want[row], text
        assert [(g[1], g[2]) for g in got] == list(zip(starts[row].numpy().tolist(), ends[row].numpy().tolist()))
        assert [text.encode()[g[1]:g[2]].decode() for g in got] == [w.decode() for w in words[row].numpy()]
    assert out["tags"][0, 0].decode() == LABELS[out["tag_ids"][0, 0]]


def test_tagger_tflite_cuts_long_text_and_runs_quantized(tagger, tmp_path):
    path = litert_tagging.export_litert_tagger(tagger, tmp_path / "q", precision="int8",
                                               representative_texts=datasets.real_sentences(30))
    assert litert.read_metadata(tmp_path / "q")["representative_examples"] == 30
    runner = litert.load_interpreter(path).get_signature_runner("serving_default")
    out = runner(text=np.array(["Paris " * 100, "Ana"], dtype=object))
    assert out["num_pieces"].tolist() == [62, 1]
    assert out["tag_ids"].shape == (2, 62) and out["word_start"][1].tolist() == [1] + [0] * 61
