"""`model.keras` files saved by the code before the one-folder-per-task layout (ba96aae) still load, by their
registered names, and give the outputs they gave then (tests/testdata/legacy_keras/make.py wrote them)."""

import json
import os

import keras
import numpy as np
import tensorflow as tf

import bert_tf  # noqa: F401  (registers the classes the files name)

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata", "legacy_keras")
EXPECTED = json.load(open(os.path.join(HERE, "expected.json")))


def _load(name):
    return keras.saving.load_model(os.path.join(HERE, f"{name}.keras"))


def test_classifier():
    model = _load("classifier")
    assert type(model).__name__ == "BertClassifier" and model.labels == ["negative", "neutral", "positive"]
    logits = model(tf.constant(EXPECTED["texts"]))
    np.testing.assert_allclose(np.asarray(logits), EXPECTED["outputs"]["classifier"]["logits"], atol=1e-6)


def test_tagger():
    model = _load("tagger")
    out = model.tag_text(tf.constant(EXPECTED["texts"]))
    assert [[t.decode() for t in row] for row in out["tags"].numpy().tolist()] == EXPECTED["outputs"]["tagger"]["tags"]
    assert [[w.decode() for w in row] for row in out["words"].numpy().tolist()] == \
        EXPECTED["outputs"]["tagger"]["words"]


def test_question_answerer():
    model = _load("question_answerer")
    out = model.answer(tf.constant(EXPECTED["questions"]), tf.constant(EXPECTED["contexts"]))
    want = EXPECTED["outputs"]["question_answerer"]
    assert [a.decode() for a in out["answer"].numpy()] == want["answer"]
    assert out["start"].numpy().tolist() == want["start"] and out["end"].numpy().tolist() == want["end"]
    np.testing.assert_allclose(out["score"].numpy(), want["score"], atol=1e-5)
