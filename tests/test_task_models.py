"""The task model flows unchanged from training to `.keras` to export.

* `.keras` round trip of the classifier and the tagger with their preprocessors, loaded in a fresh process
  after the vocab file is deleted: same outputs on raw strings (and pairs).
* The classifier on raw strings, on string pairs and on token ids gives the same logits.
* Export from a loaded `.keras` task model (library and `trainers/export.py`) gives a SavedModel equal in
  signatures and outputs to the export of the in-memory model.
"""

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the ops the exports use)

import bert_tf
from bert_tf.export import saved_model as export_lib
from bert_tf.tasks.classification.export import export_classifier

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABELS = ["negative", "neutral", "positive"]
TEXTS = ["A short one.", "Café 北京 — naïve résumé, with punctuation!", "", "ok " * 40]
PAIRS = ["Second segment here.", "x", "Another one, a bit longer than the first.", ""]


def _classifier(vocab_file, is_pair=False, num_classes=3):
    keras.utils.set_random_seed(0)
    config = bert_tf.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=64)
    pre = bert_tf.BertPreprocessor(vocab_file, seq_length=32, dynamic_padding=True)
    labels = LABELS if num_classes == 3 else None
    model = bert_tf.BertClassifier(bert_tf.BertEncoder(config), pre, num_classes=num_classes, labels=labels,
                                   is_pair=is_pair)
    model.build()
    return model


@pytest.fixture()
def own_vocab(minilm_vocab, tmp_path):
    """A vocab file the test may delete."""
    path = str(tmp_path / "vocab" / "vocab.txt")
    os.makedirs(os.path.dirname(path))
    shutil.copyfile(minilm_vocab, path)
    return path


_LOAD_SCRIPT = r"""
import json, sys
import keras, tensorflow as tf
import bert_tf  # registers the bert_tf classes
texts, pairs = json.loads(sys.argv[2]), json.loads(sys.argv[3])
model = keras.saving.load_model(sys.argv[1])
single = model(tf.constant(texts)).numpy().tolist()
paired = model([tf.constant(texts), tf.constant(pairs)]).numpy().tolist()
print(json.dumps({"single": single, "pairs": paired, "labels": model.labels, "is_pair": model.is_pair,
                  "seq_length": model.preprocessor.seq_length}))
"""


def test_keras_round_trip_in_a_fresh_process_without_the_vocab_file(own_vocab, tmp_path):
    model = _classifier(own_vocab, is_pair=True)
    want_single = model(tf.constant(TEXTS)).numpy()
    want_pairs = model([tf.constant(TEXTS), tf.constant(PAIRS)]).numpy()
    path = str(tmp_path / "classifier.keras")
    model.save(path)
    shutil.rmtree(os.path.dirname(own_vocab))
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT, path, json.dumps(TEXTS), json.dumps(PAIRS)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(got["single"], want_single, atol=1e-5)
    np.testing.assert_allclose(got["pairs"], want_pairs, atol=1e-5)
    assert (got["labels"], got["is_pair"], got["seq_length"]) == (LABELS, True, 32)


def test_raw_strings_pairs_and_token_ids_give_the_same_logits(minilm_vocab):
    model = _classifier(minilm_vocab)
    pre = model.preprocessor
    np.testing.assert_allclose(model(tf.constant(TEXTS)).numpy(), model(pre(tf.constant(TEXTS))).numpy(),
                               atol=1e-6)
    pairs = [tf.constant(TEXTS), tf.constant(PAIRS)]
    np.testing.assert_allclose(model(pairs).numpy(), model(pre(pairs)).numpy(), atol=1e-6)
    # NumPy strings and a fixed-length preprocessor's ids (more padding) agree too.
    fixed = pre.with_padding(dynamic_padding=False)
    np.testing.assert_allclose(model(np.array(TEXTS, dtype=object)).numpy(),
                               model(fixed(tf.constant(TEXTS))).numpy(), atol=2e-5)
    outputs = model.outputs_from_logits(model(tf.constant(TEXTS)))
    assert [x.decode() for x in outputs["labels"].numpy()] == [LABELS[i] for i in outputs["class_ids"].numpy()]


def _signature_summary(path):
    loaded = tf.saved_model.load(path)
    out = {}
    for name, fn in loaded.signatures.items():
        inputs = {k: (v.dtype.name, v.shape.as_list()) for k, v in fn.structured_input_signature[1].items()}
        outputs = {k: v.dtype.name for k, v in fn.structured_outputs.items()}
        out[name] = (inputs, outputs)
    return loaded, out


_TAGGER_SCRIPT = r"""
import json, sys
import keras, tensorflow as tf
import bert_tf
model = keras.saving.load_model(sys.argv[1])
out = model.tag_text(tf.constant(json.loads(sys.argv[2])))
print(json.dumps({"tags": [[t.decode() for t in row] for row in out["tags"].numpy()],
                  "entity_start": out["entity_start"].numpy().tolist(), "labels": model.labels,
                  "scheme": model.tag_scheme}))
"""


def test_tagger_keras_round_trip_in_a_fresh_process_without_the_vocab_file(own_vocab, tmp_path):
    keras.utils.set_random_seed(1)
    config = bert_tf.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=64)
    tagger = bert_tf.BertTokenTagger(bert_tf.BertEncoder(config),
                                     bert_tf.BertPreprocessor(own_vocab, seq_length=16, dynamic_padding=True),
                                     labels=["O", "B-PER", "I-PER", "B-LOC", "I-LOC"], tag_scheme="IOB2")
    want = tagger.tag_text(tf.constant(TEXTS))
    path = str(tmp_path / "tagger.keras")
    tagger.save(path)
    shutil.rmtree(os.path.dirname(own_vocab))
    proc = subprocess.run([sys.executable, "-c", _TAGGER_SCRIPT, path, json.dumps(TEXTS)], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=ROOT), cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["tags"] == [[t.decode() for t in row] for row in want["tags"].numpy()]
    assert got["entity_start"] == want["entity_start"].numpy().tolist()
    assert (got["labels"], got["scheme"]) == (tagger.labels, "IOB2")


@pytest.mark.parametrize("num_classes", [3, 1])
def test_export_from_a_loaded_keras_model_equals_the_in_memory_export(own_vocab, tmp_path, num_classes):
    model = _classifier(own_vocab, is_pair=num_classes == 1, num_classes=num_classes)
    direct = export_classifier(model, str(tmp_path / "direct"), task="t")
    path = str(tmp_path / "m.keras")
    model.save(path)
    os.remove(own_vocab)
    reloaded = export_classifier(keras.saving.load_model(path), str(tmp_path / "reloaded"), task="t")
    # The program does the same from the .keras file.
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "trainers", "export.py"), f"--keras_model={path}",
                           f"--export_base={tmp_path / 'program'}", "--task=t"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, sig_a = _signature_summary(direct)
    for other in (reloaded, str(tmp_path / "program" / "1")):
        b, sig_b = _signature_summary(other)
        assert sig_a == sig_b
        assert export_lib.read_metadata(other) == export_lib.read_metadata(direct)
        for name in ("serving_default", "encode"):
            want, got = a.signatures[name](text=tf.constant(TEXTS)), b.signatures[name](text=tf.constant(TEXTS))
            for key in want:
                if want[key].dtype == tf.string:
                    assert want[key].numpy().tolist() == got[key].numpy().tolist()
                else:
                    np.testing.assert_allclose(want[key].numpy(), got[key].numpy(), atol=1e-6)


def test_with_compute_dtype_keeps_the_weights_and_round_trips(minilm_vocab, tmp_path):
    model = _classifier(minilm_vocab)
    want = model(tf.constant(TEXTS)).numpy()
    fast = model.with_compute_dtype("bfloat16")
    assert {layer.compute_dtype for layer in fast.encoder.transformer_layers} == {"bfloat16"}
    assert (fast.labels, fast.preprocessor.seq_length, fast.dropout_rate) == (LABELS, 32, model.dropout_rate)
    assert [w.dtype for w in fast.weights] == [w.dtype for w in model.weights]
    for a, b in zip(fast.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    got = fast(tf.constant(TEXTS))
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), want, atol=0.05)  # bfloat16 keeps 8 bits of mantissa
    assert np.abs(got.numpy() - want).max() > 0  # it did compute in bfloat16
    path = str(tmp_path / "bf16.keras")
    fast.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.encoder.transformer_layers[0].compute_dtype == "bfloat16"
    np.testing.assert_allclose(loaded(tf.constant(TEXTS)).numpy(), got.numpy(), atol=1e-6)
    back = loaded.with_compute_dtype("float32")
    np.testing.assert_allclose(back(tf.constant(TEXTS)).numpy(), want, atol=1e-5)
    with pytest.raises(ValueError, match="one of float32"):
        model.with_compute_dtype("int8")
