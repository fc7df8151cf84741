"""Multi-label classification (`--task=tsv --multi_label`): reader and bad rows, loss and metrics against
scikit-learn / the formula, threshold tuning, and a short real MiniLM fine-tune on real CoNLL-2003 sentences
labelled by the entity types they name (fixtures/multi_label.py) whose export, session load (TF Serving's way and
in TF 2.12) and .keras round trip are checked on the trained model.
"""

import json
import os
import subprocess

import keras
import numpy as np
import pytest
import sklearn.metrics
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer ops the export uses)

from bert_tf.export.saved_model import read_metadata
from bert_tf.export.serving_ops import check_serving_ops
from bert_tf.tasks import task_class
from bert_tf.tasks.classification import multi_label_metrics as mlm
from bert_tf.tasks.classification.data import MalformedRowError
from bert_tf.tasks.classification.multi_label_data import MultiLabelTextTask
from bert_tf.tasks.classification.multi_label_task import MultiLabelTask, binary_cross_entropy
from bert_tf.tasks.classification.task import SentencePredictionConfig
from bert_tf.training import finetuning
from fixtures import multi_label

LABELS = ["LOC", "MISC", "ORG", "PER"]
TEXTS = ["Peter Blackburn met officials of the European Commission in Brussels .", "It rained all day .",
         "   "]


def _write(path, text):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


# ----------------------------------------------------------------------------- reader
def test_reader_separated_labels_and_bad_rows(tmp_path, capsys):
    _write(tmp_path / "train.tsv", "sentence\tlabel\n"
           "Peter went to Paris\tPER,LOC\n"      # line 2
           "It rained\t\n"                       # 3: the empty set
           "IBM hired Ann\tPER, ORG\n"           # 4: spaces around names are fine
           "Bad one\tPER,CITY\n"                 # 5: CITY is not in the given label set
           "   \tPER\n"                          # 6: whitespace-only text
           "Twice\tPER,PER\n"                    # 7: a label named twice
           "Too\tmany\tfields\n")                # 8
    task = MultiLabelTextTask(str(tmp_path), labels=["LOC", "ORG", "PER"])
    examples = task.get_examples("train")
    out = capsys.readouterr()
    assert [e.label for e in examples] == [("LOC", "PER"), (), ("ORG", "PER")]
    assert "skipped 4 malformed rows" in out.out and "1 of the 3 examples of train carry no label" in out.out
    for line, why in ((5, "label 'CITY' is not one of"), (6, "empty text"), (7, "label(s) ['PER'] named twice"), (8, "3 fields")):
        assert f"train.tsv:{line}: malformed row ({why}" in out.err
    with pytest.raises(MalformedRowError, match=r"train.tsv:5: .*'CITY'"):
        MultiLabelTextTask(str(tmp_path), labels=["LOC", "ORG", "PER"], strict=True).get_examples("train")
    detected = MultiLabelTextTask(str(tmp_path))
    assert detected.labels == ["CITY", "LOC", "ORG", "PER"]  # every label seen in train, sorted


def test_reader_one_column_per_label_and_label_set_errors(tmp_path, capsys):
    _write(tmp_path / "train.csv", 'text,toxic,insult\n"you, fool",1,1\nhello,0,0\nmeh,0,2\n')
    task = MultiLabelTextTask(str(tmp_path), fmt="csv", text_column="text", label_columns=["toxic", "insult"])
    assert [e.label for e in task.get_examples("train")] == [("toxic", "insult"), ()]
    assert "train.csv:4: malformed row (column 'insult' holds '2', not 0 or 1)" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"train.csv:1: no label column\(s\) \['obscene'\]"):
        MultiLabelTextTask(str(tmp_path), fmt="csv", text_column="text",
                           label_columns=["toxic", "obscene"]).get_examples("train")
    _write(tmp_path / "train.tsv", "sentence\tlabel\na\tX\nb\t\n")
    with pytest.raises(ValueError, match="needs at least 2"):
        _ = MultiLabelTextTask(str(tmp_path)).labels
    with pytest.raises(ValueError, match="contain the separator"):
        MultiLabelTextTask(str(tmp_path), labels=["A,B", "C"])


def test_flags_make_the_multi_label_task(tmp_path):
    config = SentencePredictionConfig(data_dir=str(tmp_path), multi_label=True, threshold_tuning="global")
    task = task_class("tsv").from_config("tsv", config)
    assert isinstance(task, MultiLabelTask) and task.threshold_tuning == "global" and task.main_metric == "micro_f1"
    with pytest.raises(ValueError, match="--task=tsv or --task=csv"):
        task_class("sst2").from_config("sst2", config)


# ----------------------------------------------------------------------------- loss, metrics, thresholds
def test_loss_and_metrics_against_sklearn():
    rng = np.random.default_rng(0)
    labels = (rng.random((60, 5)) < 0.3).astype(np.float32)
    labels[:, 4] = 0  # a label that never occurs: F1 0.0, as scikit-learn's zero_division=0
    logits = rng.normal(size=(60, 5)).astype(np.float32)
    want = np.mean(np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits))))
    assert float(binary_cross_entropy(labels, logits)) == pytest.approx(want, rel=1e-5)
    predicted = logits > 0
    got = mlm.multi_label_metrics(predicted, labels, list("abcde"))
    y = labels.astype(int)
    assert got["micro_f1"] == pytest.approx(sklearn.metrics.f1_score(y, predicted, average="micro"))
    assert got["macro_f1"] == pytest.approx(sklearn.metrics.f1_score(y, predicted, average="macro",
                                                                     zero_division=0))
    assert got["exact_match"] == pytest.approx(sklearn.metrics.accuracy_score(y, predicted))
    per_label = sklearn.metrics.f1_score(y, predicted, average=None, zero_division=0)
    assert [got[f"f1_{c}"] for c in "abcde"] == pytest.approx(per_label.tolist())


def test_threshold_tuning():
    rng = np.random.default_rng(1)
    labels = np.zeros((400, 3), bool)
    labels[:, :2] = rng.random((400, 2)) < 0.4
    labels[:3, 2] = True  # 3 positives: under MIN_POSITIVES, keeps the global cut
    probabilities = np.where(labels, 0.5, 0.0) + rng.random((400, 3)) * 0.2
    probabilities[:, 0] = np.where(labels[:, 0], 0.32, 0.05) + rng.random(400) * 0.03  # separable at (0.08, 0.32]
    cuts, global_cut, info = mlm.tune_thresholds(probabilities, labels)
    assert 0.08 < cuts[0] <= 0.32 and cuts[0] == pytest.approx(0.32)  # the flat optimum's cut nearest 0.5
    assert info["kept_global"] == [2] and cuts[2] == global_cut
    for cut in mlm.THRESHOLD_GRID:  # the global cut maximises micro F1 over the grid
        assert mlm.micro_f1(probabilities >= global_cut, labels) >= mlm.micro_f1(probabilities >= cut, labels)
    assert mlm.per_label_f1(probabilities >= cuts, labels)[0] == 1.0


# ----------------------------------------------------------------------------- real fine-tune + export
@pytest.fixture(scope="module")
def trained(minilm_dir, tmp_path_factory):
    """MiniLM-L6-H384 fine-tuned 20 steps on 320 real CoNLL-2003 sentences (entity types), exported."""
    root = tmp_path_factory.mktemp("multi_label")
    data_dir = multi_label.entity_types_dir(str(root / "data"), train=320, dev=150, test=300)
    config = finetuning.FinetuneConfig(
        model_dir=str(root / "run"), init_checkpoint=minilm_dir, max_seq_length=32, train_batch_size=16,
        learning_rate=1e-4, num_train_epochs=1, eval_batch_size=150, do_train=True, do_eval=True, do_predict=True,
        export_dir=str(root / "export"))
    task = MultiLabelTask(MultiLabelTextTask(data_dir))
    results = finetuning.run(task, config)
    return task, config, results, os.path.join(str(root / "export"), "1")




def test_minilm_learns_entity_types_and_keeps_tuned_thresholds(trained):
    task, config, results, _ = trained
    test_labels = task._label_column(task.examples("test")).astype(bool)
    every_label = mlm.micro_f1(np.ones_like(test_labels), test_labels)
    print(f"test micro F1 {results['test_micro_f1']:.3f} (at 0.5: {results.get('test_at_0.5_micro_f1')}), "
          f"every label predicted {every_label:.3f}, all-negative 0.0")
    # All-negative scores 0; predicting every label (what tuned thresholds can give a model that learned nothing)
    # 0.489 here. Measured (2026-12-06): 0.413 at 0.5 (LOC learned first), 0.532 at the dev-tuned thresholds.
    assert results["test_at_0.5_micro_f1"] > 0.2
    assert results["test_micro_f1"] > every_label + 0.02
    thresholds = [results[f"threshold_{label}"] for label in LABELS]
    assert all(0 < t < 1 for t in thresholds) and "global_threshold" in results
    saved = json.load(open(os.path.join(config.model_dir, "eval_results.json")))
    assert saved["threshold_PER"] == results["threshold_PER"]
    model = keras.saving.load_model(os.path.join(config.model_dir, "model.keras"))
    np.testing.assert_allclose(model.thresholds, thresholds, atol=1e-6)
    rows = open(os.path.join(config.model_dir, "submission", "predictions.tsv")).read().splitlines()
    assert rows[0].split("\t") == ["index", "prediction", "p_LOC", "p_MISC", "p_ORG", "p_PER"] and len(rows) == 301


def test_export_returns_probabilities_and_label_set(trained):
    task, config, results, path = trained
    model = keras.saving.load_model(os.path.join(config.model_dir, "model.keras"))
    want = tf.sigmoid(model(tf.constant(TEXTS), training=False)).numpy()
    loaded = tf.saved_model.load(path)  # held: its functions need the object alive
    served = loaded.serving_default(tf.constant(TEXTS))
    np.testing.assert_allclose(served["probabilities"].numpy(), want, atol=1e-5)
    thresholds = np.array([results[f"threshold_{label}"] for label in LABELS])
    expected_sets = [",".join(l for l, p, t in zip(LABELS, row, thresholds) if p >= t) for row in want]
    assert [x.decode() for x in served["label_set"].numpy()] == expected_sets
    np.testing.assert_array_equal(served["predicted"].numpy(), want >= thresholds)
    metadata = read_metadata(path)
    assert metadata["multi_label"] and metadata["thresholds"] == pytest.approx(dict(zip(LABELS, thresholds)))
    assert check_serving_ops(path) == ["FastBertNormalize", "FastWordpieceTokenizeWithOffsets", "NormalizeUTF8"]
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:  # TF Serving's loader: a TF1 session
        meta = tf.compat.v1.saved_model.load(sess, ["serve"], path)
        sig = meta.signature_def["serving_default"]
        got = sess.run({k: v.name for k, v in sig.outputs.items()}, {sig.inputs["text"].name: TEXTS})
        classify = meta.signature_def["classify"]
        example = tf.train.Example(features=tf.train.Features(feature={"text": tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[TEXTS[0].encode()]))})).SerializeToString()
        scores = sess.run(classify.outputs["scores"].name, {classify.inputs["inputs"].name: [example]})
    np.testing.assert_allclose(got["probabilities"], want, atol=1e-5)
    np.testing.assert_allclose(scores[0], want[0], atol=1e-5)


_TF212_SCRIPT = r"""
import json, sys
import tensorflow as tf, tensorflow_text
assert tf.__version__.startswith("2.12"), tf.__version__
with tf.compat.v1.Session(graph=tf.Graph()) as sess:
    meta = tf.compat.v1.saved_model.load(sess, ["serve"], sys.argv[1])
    sig = meta.signature_def["serving_default"]
    res = sess.run({k: v.name for k, v in sig.outputs.items()}, {sig.inputs["text"].name: json.loads(sys.argv[2])})
print(json.dumps({"probabilities": res["probabilities"].tolist(), "label_set": [x.decode() for x in res["label_set"]]}))
"""


def test_export_runs_in_tf_2_12_session(trained, tf212_python):
    path = trained[3]
    proc = subprocess.run([tf212_python, "-c", _TF212_SCRIPT, path, json.dumps(TEXTS)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    loaded = tf.saved_model.load(path)  # held: its functions need the object alive
    want = loaded.serving_default(tf.constant(TEXTS))
    np.testing.assert_allclose(got["probabilities"], want["probabilities"].numpy(), atol=1e-5)
    assert got["label_set"] == [x.decode() for x in want["label_set"].numpy()]
