"""The pieces of bert_tf.training, each on its own (the Trainer's tests are in
tests/test_training.py): docstring examples, progress lines, loop boundaries, the
input split, the SIGTERM watcher and the optimizer preparation."""

import doctest
import os
import signal
import types

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import bert_tf.training as training  # noqa: E402
from bert_tf.training.optimization import AdamWeightDecay  # noqa: E402
from bert_tf.training import (checkpointing, controller, evaluation, flops, inputs, losses, preemption,  # noqa: E402
                              progress, train_step)


@pytest.mark.parametrize("module", [training, checkpointing, controller, evaluation, flops,
                                    inputs, losses, preemption, progress, train_step],
                         ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_public_api_is_unchanged():
    assert sorted(training.__all__) == sorted([
        "Trainer", "TrainResult", "BestCheckpointExporter", "NonFiniteLossError",
        "predict", "latest_checkpoint_step", "dataset_fingerprint"])
    for name in training.__all__:
        assert getattr(training, name) is not None
    assert issubclass(training.NonFiniteLossError, FloatingPointError)


def test_progress_line_and_scalars():
    written, lines = [], []
    meter = progress.ProgressMeter(100, 64, lambda *a: written.append(a), lines.append)
    out = {"loss": np.float32(2.31274), "metrics": {"accuracy": np.float32(0.453125)},
           "grad_norm": np.float32(1.2)}
    logs = meter.report(out, step=20, steps_done=20, seconds=2.0, learning_rate=9e-5)
    assert lines == ["step 20/100 | loss 2.3127 | accuracy 0.4531 | lr 9.00e-05 | "
                     "grad_norm 1.2 | 640.0 examples/s | 10.00 steps/s | ETA 0:00:08"]
    assert list(logs) == ["loss", "accuracy", "learning_rate", "grad_norm",
                          "steps_per_second", "examples_per_second"]
    assert written == [("train", logs, 20)]
    # with loss scaling and no batch size: loss_scale shown, no examples/s
    meter = progress.ProgressMeter(10, None, lambda *a: None, lines.append)
    logs = meter.report(out, 5, 5, 1.0, tf.constant(1e-3), loss_scale=tf.constant(32768.0))
    assert "examples/s" not in lines[-1] and "| loss_scale 32768 |" in lines[-1]
    assert logs["loss_scale"] == 32768.0
    # under a time budget num_train_steps is a far cap: the ETA is the budget's time left when that is sooner
    meter = progress.ProgressMeter(10 ** 8, 64, lambda *a: None, lines.append, seconds_left=lambda: 95.0)
    meter.report(out, step=20, steps_done=20, seconds=2.0, learning_rate=9e-5)
    assert lines[-1].endswith("| ETA 0:01:35"), lines[-1]
    meter = progress.ProgressMeter(100, 64, lambda *a: None, lines.append, seconds_left=lambda: 95.0)
    meter.report(out, step=20, steps_done=20, seconds=2.0, learning_rate=9e-5)
    assert lines[-1].endswith("| ETA 0:00:08"), lines[-1]


def test_summary_writers_write_scalars_on_the_chief_only(tmp_path):
    progress.SummaryWriters(str(tmp_path / "a"), is_chief=True).write(
        "train", {"loss": 1.5, "vector": np.ones(3), "none": None}, step=3)
    events = tf.io.gfile.glob(str(tmp_path / "a" / "train" / "events.*"))
    tags = {v.tag for e in tf.compat.v1.train.summary_iterator(events[0])
            for v in e.summary.value}
    assert tags == {"loss"}
    progress.SummaryWriters(str(tmp_path / "b"), is_chief=False).write(
        "train", {"loss": 1.5}, step=3)
    assert not os.path.exists(tmp_path / "b")


def _toy_trainer(tmp_path, **kwargs):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    return training.Trainer(model, AdamWeightDecay(1e-3), lambda m, b, t: (0.0, {}),
                            model_dir=str(tmp_path), print_fn=lambda s: None, **kwargs)


def test_loops_end_on_checkpoint_and_eval_steps(tmp_path):
    t = _toy_trainer(tmp_path, num_train_steps=11, steps_per_loop=3,
                     save_checkpoints_steps=10, eval_every_steps=4)
    steps, step = [], 0
    while step < t.num_train_steps:
        step = t._next_boundary(step)
        steps.append(step)
    assert steps == [3, 4, 7, 8, 10, 11]


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="model_dir is required"):
        _toy_trainer("")
    with pytest.raises(ValueError, match="steps_per_loop must be >= 1, got 0"):
        _toy_trainer(tmp_path, steps_per_loop=0)
    with pytest.raises(ValueError, match="gradient_accumulation_steps must be >= 1"):
        _toy_trainer(tmp_path, gradient_accumulation_steps=0)
    t = _toy_trainer(tmp_path)
    ds = tf.data.Dataset.range(4)
    with pytest.raises(ValueError, match="exactly one of"):
        t.train()
    with pytest.raises(ValueError, match="exactly one of"):
        t.train(ds, train_dataset_fn=lambda ctx: ds)
    with pytest.raises(TypeError, match="must be a tf.data.Dataset"):
        t.train(train_dataset_fn=lambda ctx: [1, 2])


def test_open_train_input_infers_and_checks_the_batch_size():
    strategy = tf.distribute.get_strategy()
    ds = tf.data.Dataset.range(10).batch(4, drop_remainder=True)
    data = inputs.open_train_input(strategy, 1, train_dataset=ds)
    assert (data.split, data.global_batch_size) == ("slice", 4)
    seen = []
    data = inputs.open_train_input(
        strategy, 1, train_dataset_fn=lambda ctx: seen.append(ctx) or ds,
        global_batch_size=8)
    assert (data.split, data.global_batch_size) == ("per_replica", 8)
    assert seen[0].num_input_pipelines == 1 and seen[0].input_pipeline_id == 0
    assert inputs.infer_batch_size(tf.data.Dataset.range(10).batch(3)) is None


def _fake_strategy(task_type, task_id, cluster):
    spec = tf.train.ClusterSpec(cluster)
    resolver = types.SimpleNamespace(task_type=task_type, task_id=task_id,
                                     cluster_spec=lambda: spec)
    return types.SimpleNamespace(cluster_resolver=resolver)


def test_worker_index_counts_the_chief_first():
    workers = {"worker": ["a:1", "b:1"]}
    with_chief = {"chief": ["c:1"], "worker": ["a:1", "b:1"]}
    assert inputs.worker_index(_fake_strategy("worker", 1, workers), 2) == 1
    assert inputs.worker_index(_fake_strategy("chief", 0, with_chief), 3) == 0
    assert inputs.worker_index(_fake_strategy("worker", 0, with_chief), 3) == 1
    assert inputs.worker_index(_fake_strategy("worker", 1, with_chief), 3) == 2
    assert inputs.worker_index(_fake_strategy("worker", 1, workers), 1) == 0


def test_preemption_watcher_sets_a_flag_and_restores_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    watcher = preemption.PreemptionWatcher(tf.distribute.get_strategy(), num_workers=1)
    with watcher:
        assert signal.getsignal(signal.SIGTERM) != before
        assert not watcher.requested_anywhere()
        os.kill(os.getpid(), signal.SIGTERM)
        assert watcher.requested and watcher.requested_anywhere()
    assert signal.getsignal(signal.SIGTERM) == before
    with watcher:  # a new run starts without the old request
        assert not watcher.requested
    watcher.handle_sigterm = False
    with watcher:
        assert signal.getsignal(signal.SIGTERM) == before


def test_prepare_optimizer_clipping_and_all_reduce():
    one = tf.distribute.get_strategy()
    sgd = train_step.prepare_optimizer(keras.optimizers.SGD(0.1), one, "auto", 1.0)
    assert sgd.global_clipnorm == 1.0
    # one replica: Keras' own all-reduce is a no-op and is left alone
    assert "_all_reduce_sum_gradients" not in vars(sgd)
    ours = train_step.prepare_optimizer(AdamWeightDecay(1e-3), one, "auto", None)
    assert ours.skip_gradient_all_reduce and ours.global_clipnorm is None
    kept = train_step.prepare_optimizer(keras.optimizers.SGD(0.1, clipnorm=2.0), one,
                                        "auto", 1.0)
    assert kept.global_clipnorm is None and kept.clipnorm == 2.0
    two = types.SimpleNamespace(num_replicas_in_sync=2)
    sgd2 = keras.optimizers.SGD(0.1)
    train_step._disable_optimizer_all_reduce(sgd2, two)
    pairs = [(1, "a"), (None, "b")]
    assert sgd2._all_reduce_sum_gradients(iter(pairs)) == pairs
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        train_step.prepare_optimizer(
            keras.optimizers.SGD(0.1, gradient_accumulation_steps=2), one, "auto", 1.0)


def test_check_finite_names_the_last_good_checkpoint(tmp_path):
    ok = {"ok": np.bool_(True)}
    train_step.check_finite(ok, 3, str(tmp_path))
    bad = {"ok": np.bool_(False), "last_loss": np.float32("nan"),
           "grad_norm": np.float32(1.0)}
    with pytest.raises(training.NonFiniteLossError, match="global step 7 .*last good "
                       "checkpoint: none"):
        train_step.check_finite(bad, 7, str(tmp_path))


def test_restore_falls_back_without_a_saved_iterator(tmp_path, caplog):
    t = _toy_trainer(tmp_path)
    path = t._checkpoints.checkpoint().save(str(tmp_path / "ckpt"))
    with caplog.at_level("WARNING"):
        assert t.restore(path, iterator=iter(tf.data.Dataset.range(3))) == path
    assert "holds no dataset position" in caplog.text
    assert _toy_trainer(tmp_path / "empty").restore() is None


def test_eval_runner_writes_once_and_exports_the_best(tmp_path):
    written, lines = [], []
    runner = evaluation.EvalRunner(lambda *a: written.append(a), lines.append)
    exporter = evaluation.BestCheckpointExporter(str(tmp_path / "best"), "acc")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    trainer = types.SimpleNamespace(model=model, best_exporter=exporter,
                                    eval_fn=lambda t: {"acc": 0.75, "n": 4})
    assert runner.run(trainer, 10) == {"acc": 0.75, "n": 4}
    assert written == [("eval", {"acc": 0.75, "n": 4}, 10)]
    assert lines[0].startswith("eval step 10 | acc 0.7500 | n 4.0000 | ")
    assert lines[1] == f"new best acc=0.7500 at step 10 -> {tmp_path / 'best'}"
    trainer.eval_fn = None
    assert runner.run(trainer, 20) is None and not runner.active
