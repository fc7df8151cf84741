"""trainers/pretrain.py end to end: continue from a Google checkpoint (heads included),
export, kill -9 + rerun resumes, SIGTERM checkpoints and exits 0.

Tiny model (hidden 16, 1 layer, seq 32) with the real MiniLM vocab, on records
made from DATA's real corpus.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import bert_tf
from bert_tf import BertConfig, BertEncoder
from preemption import sigterm_when
from bert_tf.pretraining.pretrainer import BertPretrainer, HEAD_NAMES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAM = os.path.join(ROOT, "trainers", "pretrain.py")
SEQ, PRED = 32, 5


@pytest.fixture(scope="module")
def work(minilm_vocab, tmp_path_factory):
    """Records + raw text from the real corpus, and a Google TF1 checkpoint with heads."""
    from fixtures import datasets
    from bert_tf.pretraining import data as pdata

    d = tmp_path_factory.mktemp("pretrain")
    text = open(datasets.pretraining_corpus_file(), encoding="utf-8").read()
    raw = d / "raw.txt"
    raw.write_text(text[:150_000].rsplit("\n\n", 1)[0] + "\n", encoding="utf-8")
    rec = str(d / "rec.tfrecord")
    pdata.create_pretraining_data([str(raw)], [rec], minilm_vocab, max_seq_length=SEQ,
                                  max_predictions_per_seq=PRED, dupe_factor=1, verbose=False)
    cfg = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=SEQ, type_vocab_size=2)
    model = BertPretrainer(BertEncoder(cfg))
    model({"input_word_ids": np.zeros((1, SEQ), "int32"), "input_mask": np.ones((1, SEQ), "int32"),
           "input_type_ids": np.zeros((1, SEQ), "int32"), "masked_lm_positions": np.zeros((1, PRED), "int32")})
    rng = np.random.RandomState(0)
    for v in model.mlm_head.weights + model.nsp_head.weights:
        v.assign(rng.randn(*v.shape).astype("float32"))
    google = d / "google"
    bert_tf.save_tf1_checkpoint(model.encoder, str(google / "bert_model.ckpt"),
                                extra_weights=model.head_weights(), vocab_file=minilm_vocab)
    cfg.to_json_file(str(d / "bert_config.json"))
    return {"dir": d, "raw": str(raw), "records": rec, "google": str(google),
            "heads": model.head_weights(), "config": str(d / "bert_config.json")}


def _cmd(model_dir, *extra, steps=40, inputs=None, work=None, vocab=None):
    return [sys.executable, PROGRAM, f"--bert_config_file={work['config']}", f"--vocab_file={vocab}",
            f"--input_files={inputs or work['records']}", f"--model_dir={model_dir}",
            "--train_batch_size=8", f"--max_seq_length={SEQ}", f"--max_predictions_per_seq={PRED}",
            f"--num_train_steps={steps}", "--num_warmup_steps=2", "--learning_rate=1e-3",
            "--steps_per_loop=2", "--save_checkpoints_steps=2", "--keep_checkpoint_max=3", *extra]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _steps(model_dir):
    ckpt = tf.train.get_checkpoint_state(model_dir)
    if not ckpt:
        return []
    return sorted(int(p.rsplit("-", 1)[1]) for p in ckpt.all_model_checkpoint_paths)


def _wait_for_checkpoint(proc, model_dir, min_step, timeout=240):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited early with {proc.returncode}: {proc.stdout.read()[-3000:]}")
        steps = _steps(model_dir) if os.path.isdir(model_dir) else []
        if steps and steps[-1] >= min_step:
            return steps[-1]
        time.sleep(0.3)
    raise AssertionError("no checkpoint in time")


def test_continues_from_google_checkpoint_and_exports(work, minilm_vocab, tmp_path):
    model_dir = str(tmp_path / "run")
    cmd = _cmd(model_dir, f"--init_checkpoint={work['google']}/bert_model.ckpt", "--optimizer=lamb",
               "--learning_rate=1e-6", steps=4, work=work, vocab=minilm_vocab)
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "step 4/4" in r.stdout and "mlm_accuracy" in r.stdout and "nsp_accuracy" in r.stdout
    assert "examples/s" in r.stdout and "ETA" in r.stdout
    assert os.listdir(os.path.join(model_dir, "train"))  # TensorBoard events
    # both exports carry the heads, which started from the Google checkpoint's values
    for path in (os.path.join(model_dir, "export"), os.path.join(model_dir, "export_tf1", "bert_model.ckpt")):
        pre = bert_tf.from_pretrained(path)
        for name in HEAD_NAMES:
            np.testing.assert_allclose(pre.extra_weights[name], work["heads"][name], atol=1e-3, err_msg=name)
    names = dict(tf.train.list_variables(os.path.join(model_dir, "export_tf1", "bert_model.ckpt")))
    assert "bert/embeddings/word_embeddings" in names and "cls/predictions/output_bias" in names


def test_kill_9_then_rerun_resumes(work, minilm_vocab, tmp_path):
    model_dir = str(tmp_path / "run")
    cmd = _cmd(model_dir, "--dynamic_masking", "--adam_bias_correction", steps=30, work=work, vocab=minilm_vocab)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    try:
        killed_at = _wait_for_checkpoint(proc, model_dir, 4)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    before = _steps(model_dir)[-1]
    assert before >= killed_at and before < 30
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"(global step {before})" in r.stdout, r.stdout[-2000:]  # resumed from the last checkpoint
    assert "step 30/30" in r.stdout and f"step {before + 2}/30" in r.stdout
    assert "step 2/30" not in r.stdout  # did not start over
    assert _steps(model_dir)[-1] == 30


def test_sigterm_checkpoints_and_exits_0(work, minilm_vocab, tmp_path):
    model_dir = str(tmp_path / "run")
    cmd = _cmd(model_dir, "--dynamic_masking", "--input_format=text", "--save_checkpoints_steps=1000",
               steps=100000, inputs=work["raw"], work=work, vocab=minilm_vocab)
    cmd = [c for c in cmd if not c.startswith("--save_checkpoints_steps=2")]

    def no_periodic_checkpoint_yet():
        assert _steps(model_dir) == []

    returncode, out, step = sigterm_when(cmd, "step 4/100000", env=_env(), before_signal=no_periodic_checkpoint_yet)
    assert returncode == 0, out[-3000:]
    assert step is not None, out[-3000:]
    assert _steps(model_dir) == [step] and step >= 4


def test_google_records_need_no_vocabulary(work, tmp_path):
    """From scratch on Google-format records without --vocab_file (as Google's run_pretraining.py):
    dynamic masking takes the vocabulary size from the config and the special ids from flags,
    and the export writes the weights and says that the vocabulary must be added."""
    model_dir = str(tmp_path / "run")
    cmd = [c for c in _cmd(model_dir, "--dynamic_masking", steps=4, work=work, vocab=None)
           if not c.startswith("--vocab_file")]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode != 0
    assert "--mask_token_id" in r.stderr + r.stdout and "--vocab_file" in r.stderr + r.stdout
    r = subprocess.run(cmd + ["--mask_token_id=103", "--cls_token_id=101", "--sep_token_id=102"],
                       capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "step 4/4" in r.stdout
    assert "vocab_size=30522 from the model config" in r.stdout
    assert "add the vocab.txt" in r.stdout
    tf1 = os.path.join(model_dir, "export_tf1")
    assert sorted(os.listdir(tf1))[:1] == ["bert_config.json"] and not os.path.exists(os.path.join(tf1, "vocab.txt"))
    names = dict(tf.train.list_variables(os.path.join(tf1, "bert_model.ckpt")))
    assert "bert/embeddings/word_embeddings" in names and "cls/predictions/output_bias" in names


def test_mlm_only_packed_text_to_a_time_budget(work, minilm_vocab, tmp_path):
    """--nonsp --input_format=text (packed chunks) --train_time_budget: the run stops at the deadline with the
    learning rate near zero, the export has no NSP head, and a rerun finds the budget spent."""
    model_dir = str(tmp_path / "run")
    cmd = _cmd(model_dir, "--dynamic_masking", "--input_format=text", "--nonsp", "--masked_lm_prob=0.3",
               "--train_time_budget=8", "--save_checkpoints_steps=1000", steps=100000, inputs=work["raw"],
               work=work, vocab=minilm_vocab)
    cmd = [c for c in cmd if not c.startswith("--save_checkpoints_steps=2")]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "time budget of 8 s used" in r.stdout and "nsp_accuracy" not in r.stdout, r.stdout[-2000:]
    assert "matmul peak" in r.stdout and "% |" in r.stdout.split("MFU ", 2)[-1][:12], r.stdout[-2000:]
    etas = [line.rsplit("ETA ", 1)[1] for line in r.stdout.splitlines() if "| ETA " in line]
    assert etas and all("day" not in eta and eta <= "0:00:08" for eta in etas), etas  # the budget's, not 100000 steps'
    step = _steps(model_dir)[-1]
    assert 2 <= step < 100000, r.stdout[-2000:]
    last_lr = float(r.stdout.rsplit("lr ", 1)[1].split()[0].rstrip(","))
    assert last_lr < 2e-4, r.stdout[-1000:]  # peak 1e-3, linear to 0 at the deadline
    names = dict(tf.train.list_variables(os.path.join(model_dir, "export_tf1", "bert_model.ckpt")))
    assert "cls/predictions/output_bias" in names and "cls/seq_relationship/output_weights" not in names
    again = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert again.returncode == 0 and _steps(model_dir)[-1] == step, again.stdout[-2000:]


def test_head_warmup_for_a_checkpoint_without_heads(work, minilm_vocab, tmp_path):
    """A checkpoint with the encoder only: a warning names the random heads; --head_warmup_steps trains them alone
    first (in model_dir/head_warmup), then the whole model; a rerun does not warm up again."""
    headless = str(tmp_path / "headless" / "bert_model.ckpt")
    bert_tf.save_tf1_checkpoint(bert_tf.from_pretrained(work["google"]).encoder, headless, vocab_file=minilm_vocab)
    plain = subprocess.run(_cmd(str(tmp_path / "plain"), f"--init_checkpoint={headless}", steps=2, work=work,
                                vocab=minilm_vocab), capture_output=True, text=True, env=_env(), timeout=600)
    assert plain.returncode == 0, plain.stdout[-3000:] + plain.stderr[-3000:]
    assert "has no cls/predictions/transform/dense/kernel" in plain.stderr and "--head_warmup_steps" in plain.stderr
    model_dir = str(tmp_path / "run")
    cmd = _cmd(model_dir, f"--init_checkpoint={headless}", "--head_warmup_steps=4", steps=4, work=work,
               vocab=minilm_vocab)
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "head warm-up done at step 4" in r.stdout and "has no cls/" not in r.stderr, r.stdout[-2000:]
    assert _steps(os.path.join(model_dir, "head_warmup"))[-1] == 4 and _steps(model_dir)[-1] == 4
    again = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert again.returncode == 0 and "head warm-up" not in again.stdout, again.stdout[-2000:]
