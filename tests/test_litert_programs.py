"""LiteRT export from the programs: trainers/finetune.py --litert_export_dir and trainers/export.py.

Both run as programs (subprocesses) on a tiny encoder with the real MiniLM vocabulary and real tweets; the
.tflite they write is run in ai_edge_litert's InterpreterWithCustomOps and compared with the model.keras and
the SavedModel the same run wrote.
"""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import bert_tf
from bert_tf.export import litert
from bert_tf.tasks.classification import litert as classifier_litert
from fixtures import datasets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(program, args):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "trainers", program)] + args, capture_output=True,
                          text=True, timeout=900)
    print(proc.stdout[-10000:], proc.stderr[-5000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, minilm_vocab):
    import keras

    root = tmp_path_factory.mktemp("litert_programs")
    keras.utils.set_random_seed(0)
    encoder = bert_tf.BertEncoder(bert_tf.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                                     num_attention_heads=2, intermediate_size=64,
                                                     max_position_embeddings=128))
    bert_dir = str(root / "tiny_bert")
    bert_tf.save_pretrained(encoder, bert_dir, minilm_vocab, lower_case=True)
    data = datasets.tweets_task_dir(str(root / "data"), train_size=300, dev_size=100, test_size=50)
    out = _run("finetune.py", [
        "--task=tsv", f"--data_dir={data}", f"--init_checkpoint={bert_dir}", f"--model_dir={root / 'model'}",
        "--max_seq_length=48", "--train_batch_size=32", "--learning_rate=1e-3", "--num_train_epochs=1",
        "--do_train", "--do_eval", f"--export_dir={root / 'export'}", f"--litert_export_dir={root / 'litert'}",
        "--litert_precision=int8", "--representative_examples=40"])
    assert "exported LiteRT model to" in out
    return root


def _dev_texts(root):
    with open(root / "data" / "dev.tsv", encoding="utf-8") as f:
        return [r["sentence"] for r in csv.DictReader(f, delimiter="\t")]


def test_finetune_writes_int8_tflite(run_dir):
    meta = litert.read_metadata(run_dir / "litert")
    assert meta["precision"] == "int8" and meta["representative_examples"] == 40 and meta["task"] == "tsv"
    assert meta["labels"] == ["negative", "neutral", "positive"] and meta["max_seq_length"] == 48
    texts = _dev_texts(run_dir)
    runner = classifier_litert.LiteRTClassifier(run_dir / "litert")
    got = np.concatenate([runner.predict(texts[i:i + 25])["class_ids"] for i in range(0, len(texts), 25)])
    import keras

    model = keras.saving.load_model(run_dir / "model" / "model.keras")
    pre = model.preprocessor.with_padding(dynamic_padding=True)
    want = model.outputs_from_logits(model(pre(tf.constant(texts)), training=False))["class_ids"].numpy()
    assert np.mean(got == want) >= 0.9


def test_export_program_from_keras_model(run_dir, tmp_path):
    keras_model = run_dir / "model" / "model.keras"
    rep = tmp_path / "rep.txt"
    rep.write_text("\n".join(_dev_texts(run_dir)[:30]) + "\n", encoding="utf-8")
    _run("export.py", [f"--keras_model={keras_model}", f"--litert_export_dir={tmp_path / 'f16'}",
                       "--litert_precision=float16"])
    _run("export.py", [f"--keras_model={keras_model}", f"--litert_export_dir={tmp_path / 'i8'}",
                       f"--representative_file={rep}", "--representative_examples=20"])
    assert litert.read_metadata(tmp_path / "f16")["precision"] == "float16"
    meta = litert.read_metadata(tmp_path / "i8")
    assert meta["precision"] == "int8" and meta["representative_examples"] == 20

    # The SavedModel of the same run and the float16 .tflite agree on raw text.
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops for the SavedModel)

    export = run_dir / "export"
    version = sorted(int(v) for v in os.listdir(export) if v.isdigit())[-1]
    serving = tf.saved_model.load(str(export / str(version))).signatures["serving_default"]
    texts = _dev_texts(run_dir)[:40]
    want = serving(text=tf.constant(texts))["probabilities"].numpy()
    got = classifier_litert.LiteRTClassifier(tmp_path / "f16").predict(texts)["probabilities"]
    np.testing.assert_allclose(got, want, atol=5e-3)

    # int8 without calibration texts is a usage error naming the way out.
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "trainers", "export.py"),
                           f"--keras_model={keras_model}", f"--litert_export_dir={tmp_path / 'no'}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "--representative_file" in proc.stdout + proc.stderr
    assert not os.path.exists(tmp_path / "no")


def test_export_program_from_checkpoint_dir(run_dir, tmp_path):
    """--model_dir: a from_pretrained directory with a Google-named classifier head, flags for the rest."""
    import keras

    model = keras.saving.load_model(run_dir / "model" / "model.keras")
    vocab = model.preprocessor.save_vocabulary(str(tmp_path / "vocab.txt"))
    ckpt = str(tmp_path / "ckpt")
    bert_tf.save_pretrained(model.encoder, ckpt, vocab, lower_case=True, extra_weights=model.head_weights())
    _run("export.py", [f"--model_dir={ckpt}", "--labels=negative,neutral,positive", "--max_seq_length=48",
                       f"--litert_export_dir={tmp_path / 'lite'}", "--litert_precision=float32"])
    meta = litert.read_metadata(tmp_path / "lite")
    assert meta["labels"] == ["negative", "neutral", "positive"] and meta["max_seq_length"] == 48
    texts = _dev_texts(run_dir)[:40]
    pre = model.preprocessor.with_padding(dynamic_padding=True)
    want = model.outputs_from_logits(model(pre(tf.constant(texts)), training=False))["probabilities"].numpy()
    got = classifier_litert.LiteRTClassifier(tmp_path / "lite").predict(texts)["probabilities"]
    np.testing.assert_allclose(got, want, atol=1e-4)
