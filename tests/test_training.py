"""Tests for bert_tf.training.Trainer.

Process-level behaviour (kill -9, SIGTERM, MirroredStrategy over 2 logical CPUs,
MultiWorkerMirroredStrategy with 2 processes on 127.0.0.1) runs tests/toy_trainer.py
in subprocesses; the rest runs in-process on tiny Keras models.
The reference for "resumed correctly" is an uninterrupted run: a resumed run must end
with the same weights (same step, optimizer state and data position).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from bert_tf.training.optimization import AdamWeightDecay, create_optimizer  # noqa: E402
from bert_tf.training import BestCheckpointExporter, NonFiniteLossError, Trainer, latest_checkpoint_step  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TOY = os.path.join(HERE, "toy_trainer.py")
STEPS = 30


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.update(extra)
    return env


def _toy_cmd(model_dir, out_json=None, *flags):
    cmd = [sys.executable, TOY, f"--model_dir={model_dir}", f"--num_train_steps={STEPS}",
           "--steps_per_loop=2", "--save_checkpoints_steps=10"]
    if out_json:
        cmd.append(f"--out_json={out_json}")
    return cmd + list(flags)


def _run(cmd, timeout=120, **env):
    p = subprocess.run(cmd, env=_env(**env), capture_output=True, text=True,
                       timeout=timeout)
    return p


def _weights(path):
    with open(path) as f:
        rec = json.load(f)
    return rec, [np.asarray(w) for w in rec["weights"]]


def _assert_same_weights(a, b, atol):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0)


def _wait_for(path, proc, timeout=90):
    t0 = time.time()
    while not os.path.exists(path):
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"trainer ended early rc={proc.returncode}\n{out}\n{err}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """An uninterrupted one-device run of the toy trainer."""
    d = tmp_path_factory.mktemp("baseline")
    out = str(d / "out.json")
    p = _run(_toy_cmd(str(d / "run"), out))
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"step {STEPS}/{STEPS}" in p.stdout and "examples/s" in p.stdout, p.stdout
    rec, w = _weights(out)
    assert rec["global_step"] == STEPS
    return {"dir": str(d / "run"), "weights": w, "stdout": p.stdout, "loss": rec["loss"],
            "pred": np.asarray(rec["pred"]), "pred_index": rec["pred_index"]}


def test_progress_checkpoints_and_tensorboard(baseline):
    out = baseline["stdout"]
    line = [ln for ln in out.splitlines() if ln.startswith("step 30/30")][0]
    for field in ("loss", "mae", "lr", "grad_norm", "examples/s", "steps/s", "ETA"):
        assert field in line, line
    names = sorted(os.listdir(baseline["dir"]))
    # keep_checkpoint_max=3: ckpt-10/20/30, named by global step
    assert [n for n in names if n.endswith(".index")] == [
        "ckpt-10.index", "ckpt-20.index", "ckpt-30.index"]
    assert latest_checkpoint_step(baseline["dir"]) == STEPS
    keys = {k for k, _ in tf.train.list_variables(os.path.join(baseline["dir"], "ckpt-30"))}
    assert any(k.startswith("optimizer/") for k in keys)
    assert "global_step/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert any(k.startswith("iterator/") for k in keys), sorted(keys)[:20]
    # the model's weights restore from it by object path (model=...)
    sys.path.insert(0, HERE)
    import toy_trainer

    fresh = toy_trainer.build_model()
    tf.train.Checkpoint(model=fresh).restore(
        os.path.join(baseline["dir"], "ckpt-30")).assert_existing_objects_matched()
    _assert_same_weights(fresh.get_weights(), baseline["weights"], atol=0)
    # TensorBoard scalars under model_dir/train
    events = tf.io.gfile.glob(os.path.join(baseline["dir"], "train", "events.*"))
    assert events
    tags = {}
    for ev in tf.compat.v1.train.summary_iterator(events[0]):
        for v in ev.summary.value:
            tags.setdefault(v.tag, []).append(ev.step)
            assert v.metadata.plugin_data.plugin_name in ("", "scalars")
    for tag in ("loss", "mae", "learning_rate", "grad_norm", "examples_per_second",
                "steps_per_second"):
        assert tag in tags, sorted(tags)
    assert max(tags["loss"]) == STEPS


def test_kill9_then_sigterm_then_resume_matches_uninterrupted_run(baseline, tmp_path):
    run = str(tmp_path / "run")
    out = str(tmp_path / "out.json")
    # 1. kill -9 mid-training: no chance to save; the last scheduled checkpoint stays
    proc = subprocess.Popen(_toy_cmd(run, out, "--sleep_per_loop=0.25"), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(os.path.join(run, "ckpt-10.index"), proc)
    time.sleep(0.3)
    proc.kill()
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    last = latest_checkpoint_step(run)
    assert last in (10, 20)
    # 2. rerun: it resumes from that checkpoint; SIGTERM it -> checkpoint at the
    #    current (unscheduled) step and exit code 0
    proc = subprocess.Popen(_toy_cmd(run, out, "--sleep_per_loop=0.25"), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first_lines = []
    for line in proc.stdout:
        first_lines.append(line)
        if line.startswith("step "):
            break
    assert first_lines[0].startswith(f"restored {run}/ckpt-{last} (global step {last})"), \
        first_lines
    assert first_lines[-1].startswith(f"step {last + 2}/"), first_lines
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 0, stdout + stderr
    pre = [ln for ln in stdout.splitlines() if ln.startswith("preempted")]
    assert pre, stdout
    step = int(pre[0].split("global step ")[1])
    assert last < step < STEPS, pre
    assert latest_checkpoint_step(run) == step
    assert os.path.exists(os.path.join(run, f"ckpt-{step}.index"))
    assert not os.path.exists(out)  # it stopped, it did not finish
    # 3. rerun to the end: same weights as the uninterrupted run (same step,
    #    optimizer state and data position after both interruptions)
    p = _run(_toy_cmd(run, out))
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"restored {run}/ckpt-{step} (global step {step})" in p.stdout
    rec, w = _weights(out)
    assert rec["global_step"] == STEPS
    _assert_same_weights(w, baseline["weights"], atol=1e-6)


def test_mirrored_two_logical_cpus_matches_one_device(baseline, tmp_path):
    out = str(tmp_path / "out.json")
    p = _run(_toy_cmd(str(tmp_path / "run"), out, "--strategy=mirrored",
                      "--logical_cpus=2"))
    assert p.returncode == 0, p.stdout + p.stderr
    rec, w = _weights(out)
    assert rec["replicas"] == 2
    _assert_same_weights(w, baseline["weights"], atol=2e-5)
    assert abs(rec["loss"] - baseline["loss"]) < 1e-4
    # Trainer.predict splits batches over the replicas and gathers them in order,
    # including the partial last batch
    assert rec["pred_index"] == baseline["pred_index"] == list(range(13))
    np.testing.assert_allclose(rec["pred"], baseline["pred"], atol=1e-4)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_multi_worker_two_processes(tmp_path):
    run = str(tmp_path / "run")
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        cmd = [sys.executable, TOY, f"--model_dir={run}", "--strategy=multi_worker",
               "--num_train_steps=6", "--steps_per_loop=3", "--save_checkpoints_steps=6",
               f"--out_json={tmp_path}/w{i}.json"]
        procs.append(subprocess.Popen(cmd, env=_env(TF_CONFIG=tf_config),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outs = []
    for proc in procs:
        try:
            outs.append(proc.communicate(timeout=150))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for proc, (o, e) in zip(procs, outs):
        assert proc.returncode == 0, o + e
    assert "step 6/6" in outs[0][0]  # the chief prints progress
    assert "step 6/6" not in outs[1][0]  # other workers stay quiet
    # one real checkpoint, in model_dir, written by the chief; no worker temp dirs left
    assert sorted(n for n in os.listdir(run) if n.startswith("ckpt-")) == [
        "ckpt-6.data-00000-of-00001", "ckpt-6.index"]
    assert not [n for n in os.listdir(run) if n.startswith(".tmp_")]
    # every worker saved its own input position
    assert sorted(os.listdir(os.path.join(run, "data_state"))) == ["worker_0", "worker_1"]
    r0, w0 = _weights(f"{tmp_path}/w0.json")
    _, w1 = _weights(f"{tmp_path}/w1.json")
    assert r0["replicas"] == 2 and r0["global_step"] == 6
    _assert_same_weights(w0, w1, atol=0)  # replicas stay in sync
    ckpt_vars = dict(tf.train.list_variables(os.path.join(run, "ckpt-6")))
    assert "global_step/.ATTRIBUTES/VARIABLE_VALUE" in ckpt_vars


# ----------------------------------------------------------------- in-process


def _toy_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    h = keras.layers.Dense(8, activation="tanh")(inputs)
    h = keras.layers.LayerNormalization()(h)
    return keras.Model(inputs, keras.layers.Dense(1)(h))


def _toy_data(n=64):
    rng = np.random.RandomState(0)
    x = rng.randn(n, 4).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [3.0]], "float32")).astype("float32")
    return x, y


def _mse(model, batch, training):
    x, y = batch
    err = keras.ops.cast(model(x, training=training), "float32") - y
    return keras.ops.mean(keras.ops.square(err)), {"mae": keras.ops.mean(keras.ops.abs(err))}


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path):
    x, y = _toy_data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(8)
    model = _toy_model()
    holder = {}

    def loss_fn(model, batch, training):
        loss, metrics = _mse(model, batch, training)
        bad = tf.equal(holder["t"].global_step + 1, 5)  # step 5 goes NaN
        return loss * tf.where(bad, float("nan"), 1.0), metrics

    trainer = Trainer(model, AdamWeightDecay(1e-3), loss_fn, model_dir=str(tmp_path),
                      num_train_steps=20, steps_per_loop=2, save_checkpoints_steps=2,
                      print_fn=lambda s: None)
    holder["t"] = trainer
    with pytest.raises(NonFiniteLossError) as info:
        trainer.train(ds)
    msg = str(info.value)
    assert "global step 5" in msg and "ckpt-4" in msg and "NOT saved" in msg, msg
    assert latest_checkpoint_step(str(tmp_path)) == 4
    assert not tf.io.gfile.glob(str(tmp_path / "ckpt-5*")) and not tf.io.gfile.glob(
        str(tmp_path / "ckpt-6*"))
    # the kept checkpoint holds finite weights
    fresh = _toy_model(1)
    tf.train.Checkpoint(model=fresh).restore(str(tmp_path / "ckpt-4")).expect_partial()
    assert all(np.isfinite(w).all() for w in fresh.get_weights())


def _train_weights(tmp_path, name, micro_batch, accum, steps=6):
    x, y = _toy_data(96)
    # no shuffling: k consecutive micro-batches of b == one batch of k*b
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(micro_batch)
    model = _toy_model()
    opt = create_optimizer("adamw", 1e-2, num_train_steps=steps, num_warmup_steps=2)
    trainer = Trainer(model, opt, _mse, model_dir=str(tmp_path / name),
                      num_train_steps=steps, steps_per_loop=3,
                      gradient_accumulation_steps=accum, print_fn=lambda s: None)
    result = trainer.train(ds)
    assert result.global_step == steps
    return model.get_weights(), int(opt.iterations.numpy())


def test_gradient_accumulation_matches_large_batch(tmp_path):
    w_big, it_big = _train_weights(tmp_path, "big", micro_batch=16, accum=1)
    w_acc, it_acc = _train_weights(tmp_path, "acc", micro_batch=4, accum=4)
    assert it_big == it_acc == 6  # one optimizer update per step
    _assert_same_weights(w_acc, w_big, atol=2e-5)
    # and it is not trivially equal to training on the micro-batches alone
    w_small, _ = _train_weights(tmp_path, "small", micro_batch=4, accum=1)
    assert max(np.abs(a - b).max() for a, b in zip(w_small, w_big)) > 1e-3


def test_jit_compile_matches_graph_mode(tmp_path):
    x, y = _toy_data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(8)
    weights = []
    for jit in (False, True):
        t = Trainer(_toy_model(), AdamWeightDecay(1e-2), _mse, jit_compile=jit,
                    model_dir=str(tmp_path / f"jit{jit}"), num_train_steps=4,
                    steps_per_loop=4, gradient_accumulation_steps=2,
                    print_fn=lambda s: None)
        t.train(ds)
        weights.append(t.model.get_weights())
    _assert_same_weights(weights[1], weights[0], atol=1e-5)


def test_eval_hook_and_best_checkpoint_exporter(tmp_path):
    x, y = _toy_data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(8)
    eval_ds = tf.data.Dataset.from_tensor_slices((x[:20], y[:20])).batch(6)
    scores = iter([0.5, 0.9, 0.7])
    seen = {}

    def predict_fn(model, batch):
        bx, by = batch
        return {"pred": model(bx, training=False), "label": by}

    def eval_fn(trainer):
        out = trainer.predict(eval_ds, predict_fn)
        seen["n"] = out["pred"].shape[0]
        np.testing.assert_allclose(out["label"], y[:20])  # order kept
        return {"score": next(scores), "mse": float(((out["pred"] - out["label"]) ** 2)
                                                    .mean())}

    model = _toy_model()
    best_dir = str(tmp_path / "best")
    exporter = BestCheckpointExporter(best_dir, "score", higher_is_better=True)
    trainer = Trainer(model, AdamWeightDecay(1e-3), _mse, model_dir=str(tmp_path),
                      num_train_steps=9, steps_per_loop=2, eval_every_steps=3,
                      eval_fn=eval_fn, best_exporter=exporter, print_fn=lambda s: None)
    result = trainer.train(ds)
    assert seen["n"] == 20
    assert result.eval_metrics["score"] == 0.7
    with open(os.path.join(best_dir, "best_metric.json")) as f:
        rec = json.load(f)
    assert rec["metric"] == "score" and rec["value"] == 0.9 and rec["step"] == 6
    assert os.path.basename(exporter.best_checkpoint) == "ckpt-6"
    # eval summaries under model_dir/eval
    assert tf.io.gfile.glob(str(tmp_path / "eval" / "events.*"))
    # the recorded best survives a restart
    again = BestCheckpointExporter(best_dir, "score")
    assert again.best_value == 0.9 and not again.is_better(0.8)
    fresh = _toy_model(3)
    again.restore(fresh)
    # evaluate() computes host-side metrics over the whole set
    m = trainer.evaluate(eval_ds, predict_fn, lambda o: {"n": len(o["pred"])})
    assert m == {"n": 20}


def test_mixed_float16_uses_loss_scaling(tmp_path):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _toy_model()
        x, y = _toy_data()
        ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(8)
        lines = []
        trainer = Trainer(model, AdamWeightDecay(1e-3), _mse, model_dir=str(tmp_path),
                          num_train_steps=4, steps_per_loop=2, print_fn=lines.append)
        assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
        result = trainer.train(ds)
        assert result.global_step == 4 and np.isfinite(result.loss)
        assert "loss_scale" in lines[-2], lines
        keys = {k for k, _ in tf.train.list_variables(str(tmp_path / "ckpt-4"))}
        assert any("dynamic_scale" in k or "optimizer/_variables" in k for k in keys)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_changed_input_pipeline_restarts_data_with_warning(tmp_path):
    x, y = _toy_data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(8, drop_remainder=True)
    t = Trainer(_toy_model(), AdamWeightDecay(1e-3), _mse, model_dir=str(tmp_path),
                num_train_steps=2, steps_per_loop=2, print_fn=lambda s: None)
    t.train(ds)
    lines = []
    other = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(4, drop_remainder=True)
    t2 = Trainer(_toy_model(), AdamWeightDecay(1e-3), _mse, model_dir=str(tmp_path),
                 num_train_steps=4, steps_per_loop=2, print_fn=lines.append)
    r = t2.train(other)
    assert r.global_step == 4 and r.restored_from.endswith("ckpt-2")
    assert any("input pipeline changed" in ln for ln in lines), lines
    # same pipeline again: its position is restored silently
    lines.clear()
    t3 = Trainer(_toy_model(), AdamWeightDecay(1e-3), _mse, model_dir=str(tmp_path),
                 num_train_steps=6, steps_per_loop=2, print_fn=lines.append)
    t3.train(other)
    assert not any("input pipeline changed" in ln for ln in lines), lines


def test_checkpoint_of_another_model_is_a_clear_error(tmp_path):
    x, y = _toy_data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(8)
    Trainer(_toy_model(), AdamWeightDecay(1e-3), _mse, model_dir=str(tmp_path),
            num_train_steps=2, steps_per_loop=2, print_fn=lambda s: None).train(ds)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    h = keras.layers.Dense(8, activation="tanh")(inputs)
    h = keras.layers.Dense(8, activation="tanh")(h)  # an extra layer
    h = keras.layers.LayerNormalization()(h)
    bigger = keras.Model(inputs, keras.layers.Dense(1)(h))
    t = Trainer(bigger, AdamWeightDecay(1e-3), _mse, model_dir=str(tmp_path),
                num_train_steps=4, print_fn=lambda s: None)
    with pytest.raises(RuntimeError, match="cannot restore checkpoint .*ckpt-2"):
        t.train(ds)


def test_restart_after_finish_and_clear_errors(tmp_path):
    x, y = _toy_data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(8)
    model = _toy_model()
    t = Trainer(model, AdamWeightDecay(1e-3), _mse, model_dir=str(tmp_path),
                num_train_steps=2, steps_per_loop=2, print_fn=lambda s: None)
    assert t.train(ds).global_step == 2
    # rerunning a finished run restores and does nothing
    t2 = Trainer(_toy_model(5), AdamWeightDecay(1e-3), _mse, model_dir=str(tmp_path),
                 num_train_steps=2, print_fn=lambda s: None)
    r = t2.train(ds)
    assert r.global_step == 2 and r.restored_from.endswith("ckpt-2")
    np.testing.assert_allclose(t2.model.get_weights()[0], model.get_weights()[0])
    # a finite dataset that runs out is named as the problem
    short = tf.data.Dataset.from_tensor_slices((x[:16], y[:16])).batch(8)
    t3 = Trainer(_toy_model(), AdamWeightDecay(1e-3), _mse,
                 model_dir=str(tmp_path / "short"), num_train_steps=5, steps_per_loop=5,
                 print_fn=lambda s: None)
    with pytest.raises(RuntimeError, match="ran out"):
        t3.train(short)
    with pytest.raises(ValueError, match="must be built"):
        Trainer(keras.Sequential([keras.layers.Dense(1)]), AdamWeightDecay(), _mse,
                model_dir=str(tmp_path))
