"""Serving export: what TF Serving's loader checks (session load, op allow-list,
warmup records in its PredictionLog format), signatures vs the Keras model,
versioned atomic writes, and the TF Hub-style preprocessing/encoder pair."""

import json
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_text  # noqa: E402,F401  (registers the ops the exports use)

import keras  # noqa: E402
from tensorflow_serving.apis import prediction_log_pb2  # noqa: E402

import bert_tf  # noqa: E402
from bert_tf.export import saved_model as export_lib  # noqa: E402
from bert_tf.export.hub import export_hub_style  # noqa: E402
from bert_tf.tasks.classification.export import export_classifier  # noqa: E402
from bert_tf.tasks.classification.model import BertClassifier  # noqa: E402
from bert_tf.text.preprocessor import BertPreprocessor  # noqa: E402
from bert_tf.export.serving_ops import check_serving_ops, list_custom_ops  # noqa: E402

LABELS = ["negative", "neutral", "positive"]
TEXTS = ["A short one.", "A somewhat longer sentence, with punctuation and café 北京!", "", "ok"]
PAIRS_B = ["Second segment here.", "x", "Another one, a bit longer than the first.", ""]


def _tiny_encoder(seed=0):
    keras.utils.set_random_seed(seed)
    config = bert_tf.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=64)
    return bert_tf.BertEncoder(config)


def _session_runs(export_dir, requests):
    """Load like TF Serving does (TF1 session) once; run each (signature, {input: value})."""
    results = []
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        meta = tf.compat.v1.saved_model.load(sess, ["serve"], export_dir)
        for signature, feed_values in requests:
            sig = meta.signature_def[signature]
            feed = {sig.inputs[k].name: v for k, v in feed_values.items()}
            results.append(sess.run({k: v.name for k, v in sig.outputs.items()}, feed))
    return results


def _session_run(export_dir, signature, feed_values):
    return _session_runs(export_dir, [(signature, feed_values)])[0]


@pytest.fixture(scope="module")
def classifier(minilm_vocab):
    pre = BertPreprocessor(minilm_vocab, seq_length=32)
    clf = BertClassifier(_tiny_encoder(), num_classes=3, preprocessor=pre, labels=LABELS)
    clf(pre(tf.constant(TEXTS[:1])))
    return clf


@pytest.fixture(scope="module")
def exported(classifier, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("export") / "bert")
    path = export_classifier(classifier, base, task="tweets")
    return base, path


def test_versioned_layout_and_metadata(exported):
    base, path = exported
    assert path == os.path.join(base, "1")
    assert os.listdir(base) == ["1"]  # no temporary leftovers
    for f in ("saved_model.pb", "variables", export_lib.WARMUP_FILE, export_lib.METADATA_FILE):
        assert os.path.exists(os.path.join(path, f)), f
    meta = json.load(open(os.path.join(path, export_lib.METADATA_FILE)))
    assert meta["labels"] == LABELS and meta["task"] == "tweets" and meta["regression"] is False
    assert meta["signatures"] == ["serving_default", "predict_pairs", "classify", "encode"]


def test_signatures_match_the_keras_model(classifier, exported):
    _, path = exported
    m = tf.saved_model.load(path)
    fixed = classifier.preprocessor  # fixed seq_length padding
    want = tf.nn.softmax(classifier(fixed(tf.constant(TEXTS)), training=False)).numpy()
    out = m.serving_default(tf.constant(TEXTS))
    np.testing.assert_allclose(out["probabilities"], want, atol=1e-5)
    np.testing.assert_array_equal(out["class_ids"], want.argmax(-1))
    assert [x.decode() for x in out["labels"].numpy()] == [LABELS[i] for i in want.argmax(-1)]

    pairs_want = tf.nn.softmax(classifier(fixed([tf.constant(TEXTS), tf.constant(PAIRS_B)]))).numpy()
    pairs = m.predict_pairs(text_a=tf.constant(TEXTS), text_b=tf.constant(PAIRS_B))
    np.testing.assert_allclose(pairs["probabilities"], pairs_want, atol=1e-5)

    examples = tf.constant([export_lib.make_example(text=t) for t in TEXTS])
    cls = m.classify(examples)
    np.testing.assert_allclose(cls["scores"], want, atol=1e-5)
    assert cls["classes"].shape == (len(TEXTS), 3)
    assert [x.decode() for x in cls["classes"].numpy()[0]] == LABELS

    enc = m.encode(tf.constant(TEXTS))
    ref = classifier.encoder(fixed(tf.constant(TEXTS)), training=False)
    np.testing.assert_allclose(enc["pooled_output"], ref["pooled_output"], atol=1e-5)
    # Dynamic padding: the longest text here has 19 pieces + 2 -> 24 (multiple of 8), not 32.
    longest = int(fixed(tf.constant(TEXTS))["input_mask"].numpy().sum(1).max())
    t = enc["sequence_output"].shape[1]
    assert t % 8 == 0 and longest <= t < 32 and t - longest < 8
    np.testing.assert_allclose(enc["sequence_output"], ref["sequence_output"][:, :t], atol=1e-5)


def test_tf_serving_session_loader_and_ops(exported):
    _, path = exported
    res = _session_runs(path, [
        ("serving_default", {"text": TEXTS}),
        ("classify", {"inputs": [export_lib.make_example(text="fine")]}),
        ("predict_pairs", {"text_a": TEXTS, "text_b": PAIRS_B}),
        ("encode", {"text": ["one", "two words"]}),
    ])
    assert res[0]["probabilities"].shape == (4, 3) and res[0]["labels"].dtype == object
    assert res[1]["scores"].shape == (1, 3)
    assert res[2]["class_ids"].shape == (4,)
    assert res[3]["pooled_output"].shape == (2, 32)
    assert check_serving_ops(path) == ["FastBertNormalize", "FastWordpieceTokenizeWithOffsets", "NormalizeUTF8"]
    assert not any("RoundRobin" in op for op in list_custom_ops(path))


def test_warmup_records_replay_like_tf_serving(exported):
    _, path = exported
    raw = [r.numpy() for r in tf.data.TFRecordDataset(os.path.join(path, export_lib.WARMUP_FILE))]
    logs = [prediction_log_pb2.PredictionLog.FromString(r) for r in raw]
    kinds = [(log.WhichOneof("log_type"), (log.predict_log.request.model_spec.signature_name
                                          or log.classify_log.request.model_spec.signature_name)) for log in logs]
    assert kinds == [("predict_log", "serving_default"), ("predict_log", "predict_pairs"),
                     ("classify_log", "classify"), ("predict_log", "encode")]
    requests = []
    for log in logs:
        if log.WhichOneof("log_type") == "predict_log":
            req = log.predict_log.request
            requests.append((req.model_spec.signature_name,
                             {k: tf.make_ndarray(v) for k, v in req.inputs.items()}))
        else:
            req = log.classify_log.request
            requests.append(("classify", {"inputs": [e.SerializeToString() for e in req.input.example_list.examples]}))
    for (signature, feed), out in zip(requests, _session_runs(path, requests)):
        n = len(next(iter(feed.values())))
        assert all(np.all(np.isfinite(v)) for v in out.values() if v.dtype.kind == "f")
        assert all(len(v) == n for v in out.values()), signature


def test_export_in_dataset_map(exported):
    _, path = exported
    m = tf.saved_model.load(path)
    ds = tf.data.Dataset.from_tensor_slices(TEXTS).batch(3).map(lambda t: m.serving_default(t)["class_ids"])
    assert sum(len(b) for b in ds) == len(TEXTS)


def test_regression_pair_export(minilm_vocab, tmp_path):
    pre = BertPreprocessor(minilm_vocab, seq_length=24)
    reg = BertClassifier(_tiny_encoder(1), pre, num_classes=1, is_pair=True)
    base = str(tmp_path / "sts")
    path = export_classifier(reg, base, version=7)
    assert path.endswith(os.sep + "7")
    m = tf.saved_model.load(path)
    want = reg(pre([tf.constant(TEXTS), tf.constant(PAIRS_B)]), training=False).numpy()[:, 0]
    got = m.predict_pairs(text_a=tf.constant(TEXTS), text_b=tf.constant(PAIRS_B))["predictions"]
    np.testing.assert_allclose(got, want, atol=1e-5)
    examples = [export_lib.make_example(text_a=a, text_b=b) for a, b in zip(TEXTS, PAIRS_B)]
    res = _session_run(path, "regress", {"inputs": examples})
    np.testing.assert_allclose(res["outputs"], want, atol=1e-5)
    meta = json.load(open(os.path.join(path, export_lib.METADATA_FILE)))
    assert meta["signatures"] == ["serving_default", "predict_pairs", "regress", "encode"]
    assert meta["example_features"] == ["text_a", "text_b"]
    logs = export_lib.read_warmup_requests(path)
    assert logs[2].WhichOneof("log_type") == "regress_log"
    assert export_lib.next_version(base) == 8
    with pytest.raises(FileExistsError, match="7"):
        export_classifier(reg, base, version=7)


def test_atomic_versioning(tmp_path):
    base = str(tmp_path / "m")

    def write(d):
        open(os.path.join(d, "saved_model.pb"), "wb").close()

    assert export_lib.atomic_export(base, None, write) == os.path.join(base, "1")
    assert export_lib.atomic_export(base, None, write) == os.path.join(base, "2")
    os.makedirs(os.path.join(base, "not_a_version"))
    assert export_lib.existing_versions(base) == [1, 2]

    def broken(d):
        write(d)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        export_lib.atomic_export(base, None, broken)
    assert sorted(os.listdir(base)) == ["1", "2", "not_a_version"]  # nothing half-written
    assert export_lib.atomic_export(base, 2, write, overwrite=True) == os.path.join(base, "2")
    assert sorted(os.listdir(base)) == ["1", "2", "not_a_version"]


def test_hub_style_pair(classifier, tmp_path):
    pre, enc = classifier.preprocessor, classifier.encoder
    pre_dir, enc_dir = export_hub_style(pre, enc, str(tmp_path / "hub"))
    P = tf.saved_model.load(pre_dir)
    E = tf.saved_model.load(enc_dir)
    text = tf.constant(TEXTS)
    feats = P(text)
    want = pre(text)
    for k in want:
        np.testing.assert_array_equal(feats[k], want[k])
    out = E(feats)
    ref = enc(want, training=False)
    np.testing.assert_allclose(out["pooled_output"], ref["pooled_output"], atol=1e-5)
    assert len(out["encoder_outputs"]) == 2
    np.testing.assert_allclose(out["encoder_outputs"][-1], ref["sequence_output"], atol=1e-5)
    # tokenize + bert_pack_inputs with a chosen seq_length, as with TF Hub models.
    a, b = P.tokenize(text), P.tokenize(tf.constant(PAIRS_B))
    assert a.to_list() == pre.tokenize(text).to_list()
    packed = P.bert_pack_inputs([a, b], seq_length=16)
    np.testing.assert_array_equal(packed["input_word_ids"], pre.bert_pack_inputs([a, b], seq_length=16)["input_word_ids"])
    assert P.bert_pack_inputs([a], seq_length=10)["input_word_ids"].shape == (4, 10)
    # Inside tf.data.
    ds = tf.data.Dataset.from_tensor_slices(TEXTS).batch(2).map(P).map(lambda f: E(f)["pooled_output"])
    assert np.concatenate(list(ds)).shape == (4, 32)
    # As Keras layers.
    text_in = keras.Input(shape=(), dtype="string")
    features = keras.layers.TFSMLayer(pre_dir, call_endpoint="serving_default")(text_in)
    pooled = keras.layers.TFSMLayer(enc_dir, call_endpoint="serving_default")(features)["pooled_output"]
    model = keras.Model(text_in, pooled)
    np.testing.assert_allclose(model(text), ref["pooled_output"], atol=1e-5)
    # Both load in a TF1 session too (the encoder's serving_default signature).
    res = _session_run(enc_dir, "serving_default", {k: v.numpy() for k, v in want.items()})
    np.testing.assert_allclose(res["pooled_output"], ref["pooled_output"], atol=1e-5)
    assert "encoder_outputs_1" in res


def _export_program(*args):
    import subprocess
    import sys

    program = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "trainers", "export.py")
    return subprocess.run([sys.executable, program] + list(args), capture_output=True, text=True, timeout=600)


def test_program_exports_a_checkpoint_dir_with_a_google_head(classifier, minilm_vocab, tmp_path):
    """trainers/export.py over a save_pretrained dir with a Google-named head; an older bert_tf run's
    classifier_config.json beside it is still read (labels, sequence length, task)."""
    model_dir = str(tmp_path / "finetuned")
    bert_tf.save_pretrained(classifier.encoder, model_dir, minilm_vocab, lower_case=True,
                            extra_weights=classifier.head_weights())
    with open(os.path.join(model_dir, "classifier_config.json"), "w") as f:
        json.dump({"task": "tweets", "labels": LABELS, "regression": False, "num_classes": 3,
                   "is_pair": False, "max_seq_length": 32, "lower_case": True}, f)
    base = str(tmp_path / "served")
    proc = _export_program(f"--model_dir={model_dir}", f"--export_base={base}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"exported serving model to {os.path.join(base, '1')}" in proc.stdout
    m = tf.saved_model.load(os.path.join(base, "1"))
    want = tf.nn.softmax(classifier(classifier.preprocessor(tf.constant(TEXTS)), training=False)).numpy()
    out = m.serving_default(tf.constant(TEXTS))
    np.testing.assert_allclose(out["probabilities"], want, atol=1e-5)
    assert [x.decode() for x in out["labels"].numpy()] == [LABELS[i] for i in want.argmax(-1)]
    assert export_lib.read_metadata(os.path.join(base, "1"))["task"] == "tweets"
    bert_tf.save_pretrained(classifier.encoder, str(tmp_path / "bare"), minilm_vocab)
    proc = _export_program(f"--model_dir={tmp_path / 'bare'}", f"--export_base={base}")
    assert proc.returncode != 0 and "no classifier head" in proc.stderr


_TF212_SCRIPT = r"""
import json, sys
import tensorflow as tf, tensorflow_text
assert tf.__version__.startswith("2.12"), tf.__version__
texts = json.loads(sys.argv[2])
with tf.compat.v1.Session(graph=tf.Graph()) as sess:
    meta = tf.compat.v1.saved_model.load(sess, ["serve"], sys.argv[1])
    out = {}
    for name in ("serving_default", "encode"):
        sig = meta.signature_def[name]
        res = sess.run({k: v.name for k, v in sig.outputs.items()}, {sig.inputs["text"].name: texts})
        out[name] = {k: (v.tolist() if v.dtype != object else [x.decode() for x in v]) for k, v in res.items()}
print(json.dumps(out))
"""


def test_export_runs_in_tf_2_12_session(exported, tf212_python):
    """The real TF Serving 2.12 stack (TF 2.12 + tensorflow-text 2.12.1) runs the export.
    Runs in the `tf212_python` fixture's Python (`make setup-tf212`)."""
    import subprocess

    python = tf212_python
    _, path = exported
    proc = subprocess.run([python, "-c", _TF212_SCRIPT, path, json.dumps(TEXTS)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    m = tf.saved_model.load(path)
    want = m.serving_default(tf.constant(TEXTS))
    np.testing.assert_allclose(got["serving_default"]["probabilities"], want["probabilities"], atol=1e-5)
    assert got["serving_default"]["labels"] == [x.decode() for x in want["labels"].numpy()]
    enc = m.encode(tf.constant(TEXTS))
    np.testing.assert_allclose(got["encode"]["sequence_output"], enc["sequence_output"], atol=1e-5)
