"""trainers/finetune.py end to end.

* Tiny random BERT (saved with save_pretrained) on SST-2-, MRPC- and STS-B-layout directories built from real
  labelled text (gensim's movie-review polarity sentences; Lee news-article pairs with human similarity
  ratings): eval_results.json, best checkpoint, GLUE submission files, resume, export.
(The real-data fine-tuning of MiniLM is in test_finetune_minilm.py.)
* The length-bucketed training pipeline: exact batch sizes, one epoch = every example once, each batch
  padded only to its longest sequence.

The program runs as a program (a subprocess, as a user runs it); the pipeline is tested through the library
(`bert_tf.tasks.SentencePredictionTask`).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import bert_tf
from bert_tf.tasks.classification import data as glue
from preemption import sigterm_when
from bert_tf.tasks import SentencePredictionTask
from fixtures import datasets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FINETUNE = os.path.join(ROOT, "trainers", "finetune.py")


def _run(args, expect_rc=0):
    """trainers/finetune.py with ``args`` in a fresh process; returns what it printed."""
    proc = subprocess.run([sys.executable, FINETUNE] + args, capture_output=True, text=True, timeout=900)
    print(proc.stdout[-20000:], proc.stderr[-5000:])
    assert proc.returncode == expect_rc, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _write(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write("\t".join(str(x) for x in r) + "\n")


def _read_tsv(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f]


def _tiny_encoder():
    import keras

    keras.utils.set_random_seed(0)
    cfg = bert_tf.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=128)
    return bert_tf.BertEncoder(cfg)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, minilm_vocab):
    path = str(tmp_path_factory.mktemp("tiny_bert"))
    bert_tf.save_pretrained(_tiny_encoder(), path, minilm_vocab, lower_case=True)
    return path


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    """SST-2, MRPC and STS-B directories in GLUE's exact layout, filled with real labelled text."""
    root = str(tmp_path_factory.mktemp("glue"))
    movies = datasets.movie_polarity()  # 200 sentences, alternating blocks of neg/pos
    rng = np.random.default_rng(0)
    movies = [movies[i] for i in rng.permutation(len(movies))]
    lab = {"neg": 0, "pos": 1}
    _write(os.path.join(root, "SST-2", "train.tsv"), [("sentence", "label")] + [(s, lab[l]) for s, l in movies[:120]])
    _write(os.path.join(root, "SST-2", "dev.tsv"), [("sentence", "label")] + [(s, lab[l]) for s, l in movies[120:160]])
    _write(os.path.join(root, "SST-2", "test.tsv"), [("index", "sentence")] + list(enumerate(s for s, _ in movies[160:])))

    pairs = datasets.lee_similarity_pairs(max_sentences=1)
    pairs = [pairs[i] for i in rng.permutation(len(pairs))[:170]]
    cols = ("#1 ID", "#2 ID", "#1 String", "#2 String")
    rows = [(int(s >= 0.5), 1000 + i, 2000 + i, a, b) for i, (a, b, s) in enumerate(pairs)]
    _write(os.path.join(root, "MRPC", "train.tsv"), [("Quality",) + cols] + rows[:100])
    _write(os.path.join(root, "MRPC", "dev.tsv"), [("Quality",) + cols] + rows[100:140])
    _write(os.path.join(root, "MRPC", "test.tsv"), [("index",) + cols] + [(i,) + r[1:] for i, r in enumerate(rows[140:])])

    sts = ("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2")
    rows = [(i, "main-news", "lee", "2005", f"{i:04d}", "none", "none", a, b, f"{5 * s:.3f}")
            for i, (a, b, s) in enumerate(pairs)]
    _write(os.path.join(root, "STS-B", "train.tsv"), [sts + ("score",)] + rows[:100])
    _write(os.path.join(root, "STS-B", "dev.tsv"), [sts + ("score",)] + rows[100:140])
    _write(os.path.join(root, "STS-B", "test.tsv"), [sts] + [r[:-1] for r in rows[140:]])
    return root


COMMON = ["--max_seq_length=64", "--train_batch_size=16", "--eval_batch_size=32", "--learning_rate=1e-3",
          "--num_train_epochs=2", "--do_train", "--do_eval", "--do_predict"]


def test_sst2_train_eval_predict_resume_export(tiny_bert, glue_dir, tmp_path):
    model_dir, export_dir = str(tmp_path / "run"), str(tmp_path / "export")
    args = ["--task=sst2", f"--data_dir={glue_dir}", f"--init_checkpoint={tiny_bert}", f"--model_dir={model_dir}",
            f"--export_dir={export_dir}"] + COMMON
    out = _run(args)
    assert "120 training examples, 8 steps/epoch, 16 steps" in out
    assert out.count("eval step") == 2  # after each epoch
    results = json.load(open(os.path.join(model_dir, "eval_results.json")))
    assert set(results) == {"accuracy", "global_step"} and 0.0 <= results["accuracy"] <= 1.0
    best = json.load(open(os.path.join(model_dir, "best", "best_metric.json")))
    assert best["metric"] == "accuracy" and best["value"] == pytest.approx(results["accuracy"])
    assert results["global_step"] == best["step"] in (8, 16)
    sub = _read_tsv(os.path.join(model_dir, "submission", "SST-2.tsv"))
    assert sub[0] == ["index", "prediction"]
    assert [r[0] for r in sub[1:]] == [str(i) for i in range(40)] and {r[1] for r in sub[1:]} <= {"0", "1"}
    # Serving export (raw text in): its predictions are the submission's.
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the ops the SavedModel uses)

    assert os.listdir(export_dir) == ["1"]
    # The trained task model, with its preprocessor and labels, is also saved as model.keras.
    import keras

    task_model = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
    assert task_model.labels == ["0", "1"] and task_model.preprocessor.seq_length == 64
    served = tf.saved_model.load(os.path.join(export_dir, "1"))
    test = glue.get_task("sst2", glue_dir).get_examples("test")
    labels = served.signatures["serving_default"](text=tf.constant([e.text_a for e in test]))["labels"]
    assert [x.decode() for x in labels.numpy()] == [r[1] for r in sub[1:]]
    # Rerun: resumes at the final step, trains no more, same results from the best checkpoint.
    # Rerun with predictions going elsewhere: resumes at the final step, trains no more, and gives the
    # same results and predictions from the best checkpoint.
    pred_dir = str(tmp_path / "pred")
    out = _run(args + [f"--predict_dir={pred_dir}"])
    assert "nothing to train" in out
    assert json.load(open(os.path.join(model_dir, "eval_results.json"))) == results
    assert _read_tsv(os.path.join(pred_dir, "SST-2.tsv")) == sub
    # Served predictions equal the in-memory task model's on raw text (the export is that model).
    want = task_model.outputs_from_logits(task_model(tf.constant([e.text_a for e in test])))["labels"]
    assert [x.decode() for x in want.numpy()] == [r[1] for r in sub[1:]]
    # Another task (pairs, another label set) in the same model_dir is refused with a clear error.
    out = _run(["--task=stsb", f"--data_dir={glue_dir}", f"--init_checkpoint={tiny_bert}",
                f"--model_dir={model_dir}", "--do_eval"], expect_rc=1)
    assert "use a fresh --model_dir" in out


def test_mrpc_and_stsb(tiny_bert, glue_dir, tmp_path):
    one_epoch = [a for a in COMMON if not a.startswith("--num_train_epochs")] + ["--num_train_epochs=1"]
    model_dir = str(tmp_path / "mrpc")
    _run(["--task=mrpc", f"--data_dir={glue_dir}", f"--init_checkpoint={tiny_bert}", f"--model_dir={model_dir}"]
         + one_epoch)
    results = json.load(open(os.path.join(model_dir, "eval_results.json")))
    assert {"accuracy", "f1", "acc_and_f1"} <= set(results)
    assert json.load(open(os.path.join(model_dir, "best", "best_metric.json")))["metric"] == "f1"
    sub = _read_tsv(os.path.join(model_dir, "submission", "MRPC.tsv"))
    assert sub[0] == ["index", "prediction"] and len(sub) == 31 and {r[1] for r in sub[1:]} <= {"0", "1"}

    model_dir = str(tmp_path / "stsb")
    _run(["--task=stsb", f"--data_dir={glue_dir}", f"--init_checkpoint={tiny_bert}", f"--model_dir={model_dir}"]
         + one_epoch)
    results = json.load(open(os.path.join(model_dir, "eval_results.json")))
    assert {"pearson", "spearman", "corr"} <= set(results)
    assert all(np.isfinite(results[k]) or np.isnan(results[k]) for k in ("pearson", "spearman"))
    sub = _read_tsv(os.path.join(model_dir, "submission", "STS-B.tsv"))
    assert sub[0] == ["index", "prediction"] and len(sub) == 31
    assert all(0.0 <= float(r[1]) <= 5.0 for r in sub[1:])


def test_training_pipeline_buckets_by_length(minilm_vocab, tmp_path):
    """Regression labels = example numbers, so batches show which examples they hold."""
    import tensorflow as tf

    sentences = datasets.real_sentences(64)
    _write(str(tmp_path / "train.tsv"), [("sentence", "label")] + [(s, i) for i, s in enumerate(sentences)])
    task = SentencePredictionTask(glue.get_task("tsv", str(tmp_path), regression=True))
    examples = task.examples("train")
    pre = bert_tf.BertPreprocessor(minilm_vocab, seq_length=64)
    model = task.build_model(_tiny_encoder(), pre)
    ds = task.build_train_dataset(model, examples, batch_size=8, seed=1, bucket_window=4, shuffle_batches=False)
    batches = list(ds.take(16))
    seen = []
    for features, labels in batches:
        assert labels.shape == (8,)
        mask = features["input_mask"].numpy()
        width = mask.shape[1]
        longest = mask.sum(1).max()
        assert width == min(64, -(-longest // 8) * 8)  # padded to its own longest, multiple of 8
        seen += labels.numpy().astype(int).tolist()
        # ids agree with the preprocessor run on these texts alone (static padding)
        texts = tf.constant([sentences[int(i)] for i in labels.numpy()])
        ref = bert_tf.BertPreprocessor(minilm_vocab, seq_length=64)(texts)
        np.testing.assert_array_equal(features["input_word_ids"].numpy(), ref["input_word_ids"].numpy()[:, :width])
    assert sorted(seen[:64]) == list(range(64)) and sorted(seen[64:]) == list(range(64))  # epochs
    widths = [b[0]["input_mask"].shape[1] for b in batches]
    assert len(set(widths)) > 1  # batches of different lengths
    # Sorted within each window of 4 batches (before the batches are shuffled).
    for w in range(0, 16, 4):
        assert widths[w:w + 4] == sorted(widths[w:w + 4])
    # Default: batches shuffled after bucketing; still exact batch sizes.
    ds = task.build_train_dataset(model, examples, batch_size=8, seed=1, bucket_window=4)
    assert all(lab.shape == (8,) for _, lab in ds.take(10))


def test_sigterm_checkpoints_exits_0_and_the_rerun_resumes(tiny_bert, glue_dir, tmp_path):
    """finetune.py under preemption: SIGTERM mid-epoch writes a checkpoint at the current step and exits 0;
    the same command then resumes from that step instead of starting over."""
    model_dir = str(tmp_path / "run")
    args = ["--task=sst2", f"--data_dir={glue_dir}", f"--init_checkpoint={tiny_bert}", f"--model_dir={model_dir}",
            "--max_seq_length=64", "--train_batch_size=4", "--learning_rate=1e-4", "--num_train_epochs=20",
            "--steps_per_loop=2", "--do_train"]
    # under way, before the first end-of-epoch checkpoint
    returncode, out, step = sigterm_when([sys.executable, FINETUNE] + args, "step 6/600")
    assert returncode == 0, out[-3000:]
    assert step is not None and 6 <= step < 30, out[-3000:]
    out = _run(args[:-1] + ["--num_train_epochs=0.3", "--do_train"])  # 9 steps in all: finishes from `step`
    assert f"(global step {step})" in out and "step 2/9" not in out


def test_non_finite_loss_stops_with_a_clear_error(tiny_bert, glue_dir, tmp_path):
    model_dir = str(tmp_path / "run")
    out = _run(["--task=stsb", f"--data_dir={glue_dir}", f"--init_checkpoint={tiny_bert}", f"--model_dir={model_dir}",
                "--max_seq_length=64", "--train_batch_size=8", "--learning_rate=1e30", "--warmup_proportion=0",
                "--num_train_epochs=1", "--steps_per_loop=1", "--do_train"], expect_rc=1)
    assert "non-finite training loss/gradients at global step" in out and "this state was NOT saved" in out
