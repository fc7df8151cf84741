"""The controller: :class:`Trainer` ties the training pieces together.

Each loop: run ``steps_per_loop`` steps in one ``tf.function`` (:mod:`.train_step`),
stop on NaN/Inf, report progress (:mod:`.progress`), evaluate (:mod:`.evaluation`),
checkpoint (:mod:`.checkpointing`) and check for preemption (:mod:`.preemption`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import keras
import tensorflow as tf

from bert_tf.training import distribute as distribute_lib
from bert_tf.training import checkpointing, evaluation, inputs, preemption, progress
from bert_tf.training import train_step


@dataclasses.dataclass
class TrainResult:
    """What :meth:`Trainer.train` returns."""

    global_step: int
    loss: float | None = None
    metrics: dict = dataclasses.field(default_factory=dict)
    preempted: bool = False
    checkpoint: str | None = None
    eval_metrics: dict | None = None
    restored_from: str | None = None


def _check_arguments(model_dir: str, **counts):
    if not model_dir:
        raise ValueError("Trainer: model_dir is required")
    for name, value in counts.items():
        if value < 1:
            raise ValueError(f"Trainer: {name} must be >= 1, got {value}")


class Trainer:
    """Custom distributed training loop shared by pretraining and fine-tuning.

    See the :mod:`bert_tf.training` docstring for the full contract.

    Args:
      model: a built Keras model created under ``strategy.scope()``.
      optimizer: a Keras optimizer created under ``strategy.scope()`` (see
        :func:`bert_tf.training.optimization.create_optimizer`). It must not use Keras'
        ``gradient_accumulation_steps`` (use the trainer's).
      compute_loss: ``fn(model, batch, training) -> (loss, metrics_dict)``; per
        replica, mean loss over the replica's examples.
      strategy: a ``tf.distribute.Strategy`` (default: the current one).
      model_dir: checkpoints, TensorBoard logs (``train/``, ``eval/``).
      num_train_steps: total optimizer steps (the run ends at this global step).
      steps_per_loop: steps per ``tf.function`` call (progress granularity).
      save_checkpoints_steps: checkpoint cadence in steps (also at the end).
      keep_checkpoint_max: checkpoints kept by the manager.
      gradient_accumulation_steps: batches per optimizer step.
      clip_norm: clip the (summed) gradient by global norm (``None``: no clipping).
        Ignored if the optimizer already has clipping configured.
      jit_compile: XLA-compile the per-replica forward/backward pass.
      loss_scale: ``"auto"`` wraps the optimizer in ``LossScaleOptimizer`` when the
        Keras policy is ``mixed_float16``; ``None`` never wraps.
      global_batch_size: examples in one dataset batch over all replicas (for
        examples/s); inferred from a static batch dimension if possible.
      eval_fn: ``fn(trainer) -> dict`` evaluation hook.
      eval_every_steps: run ``eval_fn`` at multiples of this (and at the end).
      best_exporter: :class:`BestCheckpointExporter` fed with ``eval_fn``'s results.
      checkpoint_dataset_iterator: save the tf.data iterator state (default yes;
        turn it off for pipelines with huge shuffle buffers, whose state is big).
      checkpoint_items: extra trackables to save/restore (dict name -> object).
      exit_on_preemption: raise ``SystemExit(0)`` after the SIGTERM checkpoint.
      handle_sigterm: install the SIGTERM handler during ``train()``.
      loop_end_fn: ``fn(trainer, step, logs)`` called after every loop (hooks).
      flops_per_example, peak_flops: model FLOPs of one training example and the
        device's peak FLOP/s (:mod:`bert_tf.training.flops`): progress lines and
        summaries then show model FLOPs utilisation (MFU).
      time_budget: a :class:`bert_tf.training.time_budget.TimeBudget`: the run also
        ends (with a checkpoint) when its seconds are used; the time used is
        checkpointed, so a resumed run continues the same budget.
      print_fn: where progress lines go (default ``print``; chief only).

    A runnable example is in the :mod:`bert_tf.training` docstring.
    """

    def __init__(self, model, optimizer, compute_loss: Callable,
                 strategy: tf.distribute.Strategy | None = None, model_dir: str = "",
                 num_train_steps: int = 1, steps_per_loop: int = 100,
                 save_checkpoints_steps: int | None = 1000, keep_checkpoint_max: int = 5,
                 gradient_accumulation_steps: int = 1, clip_norm: float | None = 1.0,
                 jit_compile: bool = False, loss_scale: str | None = "auto",
                 global_batch_size: int | None = None, eval_fn: Callable | None = None,
                 eval_every_steps: int | None = None,
                 best_exporter: evaluation.BestCheckpointExporter | None = None,
                 checkpoint_dataset_iterator: bool | str = "auto",
                 checkpoint_items: dict | None = None, exit_on_preemption: bool = True,
                 handle_sigterm: bool = True, loop_end_fn: Callable | None = None,
                 print_fn: Callable[[str], Any] | None = None, time_budget=None,
                 flops_per_example: float | None = None, peak_flops: float | None = None):
        _check_arguments(model_dir, num_train_steps=num_train_steps,
                         steps_per_loop=steps_per_loop,
                         gradient_accumulation_steps=gradient_accumulation_steps)
        train_step.check_model(model)
        self.strategy = strategy = strategy or tf.distribute.get_strategy()
        self.model, self.compute_loss, self.model_dir = model, compute_loss, model_dir
        self.num_train_steps = int(num_train_steps)
        self.steps_per_loop = int(steps_per_loop)
        self.save_checkpoints_steps = int(save_checkpoints_steps or 0)
        self.keep_checkpoint_max = keep_checkpoint_max
        self.gradient_accumulation_steps = int(gradient_accumulation_steps)
        self.jit_compile = bool(jit_compile)
        self.global_batch_size = global_batch_size
        self.eval_fn, self.eval_every_steps = eval_fn, int(eval_every_steps or 0)
        self.best_exporter = best_exporter
        if best_exporter is not None and best_exporter.strategy is None:
            best_exporter.strategy = strategy
        self.num_workers = distribute_lib.num_workers(strategy)
        self.is_chief = distribute_lib.is_chief(strategy)
        self.checkpoint_dataset_iterator = (checkpoint_dataset_iterator == "auto"
                                            or bool(checkpoint_dataset_iterator))
        self.checkpoint_items = dict(checkpoint_items or {})
        self.time_budget = time_budget
        self.flops_per_example, self.peak_flops = flops_per_example, peak_flops
        if time_budget is not None:
            self.checkpoint_items["time_budget_used_seconds"] = time_budget.used
        self.exit_on_preemption, self.handle_sigterm = exit_on_preemption, handle_sigterm
        self.loop_end_fn = loop_end_fn
        self._print = print_fn or (lambda s: print(s, flush=True))
        self.last_eval_metrics: dict | None = None
        self._build_pieces(optimizer, loss_scale, clip_norm)

    def _build_pieces(self, optimizer, loss_scale, clip_norm):
        """The optimizer, the step variable and the pieces the loop ties together."""
        model, strategy = self.model, self.strategy
        self.optimizer = train_step.prepare_optimizer(optimizer, strategy, loss_scale,
                                                      clip_norm)
        self.uses_loss_scale = isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)
        self._inner_optimizer = (self.optimizer.inner_optimizer if self.uses_loss_scale
                                 else self.optimizer)
        self.clip_norm = self._inner_optimizer.global_clipnorm
        with strategy.scope():
            self.global_step = tf.Variable(
                0, dtype=tf.int64, trainable=False, name="global_step",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self.optimizer.build(self.model.trainable_variables)
        self._step = train_step.TrainStep(
            model, self.optimizer, self.compute_loss, strategy, self.global_step,
            self.gradient_accumulation_steps, self.jit_compile, self.num_workers)
        items = dict(self.checkpoint_items)
        items.update(model=model, optimizer=self.optimizer, global_step=self.global_step)
        self._checkpoints = checkpointing.TrainCheckpoints(self.model_dir, strategy,
                                                           items, self._log)
        self._summaries = progress.SummaryWriters(self.model_dir, self.is_chief)
        self._evaluation = evaluation.EvalRunner(self.write_summaries, self._log)
        self._preemption = preemption.PreemptionWatcher(strategy, self.num_workers)

    # The traced functions (tests check how often they are traced).
    _grad_fn = property(lambda self: self._step.grad_fn)
    _loop_fn = property(lambda self: self._step.loop_fn)

    def _log(self, msg: str):
        if self.is_chief:
            self._print(msg)

    def restore(self, path: str | None = None, iterator=None) -> str | None:
        """Restores ``path`` (default: newest in ``model_dir``); returns the path used.

        Model, optimizer and global step must match; the iterator state is restored
        if given and compatible (a warning is logged otherwise).
        """
        return self._checkpoints.restore(path, iterator)

    def write_summaries(self, name: str, scalars: dict, step: int):
        """Writes scalar summaries to ``model_dir/<name>`` at ``step`` (chief only)."""
        self._summaries.write(name, scalars, step)

    def predict(self, dataset, predict_fn) -> dict:
        """``predict(strategy, model, ...)`` with this trainer's strategy and model."""
        return evaluation.predict(self.strategy, self.model, dataset, predict_fn,
                                  num_workers=self.num_workers)

    def evaluate(self, dataset, predict_fn, metrics_fn, step: int | None = None,
                 name: str = "eval") -> dict:
        """Predicts over ``dataset``, computes ``metrics_fn(outputs)`` on the host.

        Writes the metrics to TensorBoard under ``model_dir/<name>`` at ``step``
        (default: the current global step) and returns them.
        """
        metrics = dict(metrics_fn(self.predict(dataset, predict_fn)))
        step = int(self.global_step.numpy()) if step is None else int(step)
        if not (self._evaluation.active and name == "eval"):  # the hook writes them once
            self.write_summaries(name, metrics, step)
        return metrics

    def train(self, train_dataset=None, train_dataset_fn=None) -> TrainResult:
        """Trains until ``num_train_steps`` (resuming from ``model_dir``).

        Give either ``train_dataset`` (a ``tf.data.Dataset`` batched with the GLOBAL
        batch size, sliced over the local replicas) or
        ``train_dataset_fn(input_context)`` returning the per-replica-batched dataset
        (``distribute_datasets_from_function``'s convention; the usual choice for
        multi-worker).
        """
        if (train_dataset is None) == (train_dataset_fn is None):
            raise ValueError("Trainer.train: give exactly one of train_dataset, "
                             "train_dataset_fn")
        tf.io.gfile.makedirs(self.model_dir)
        data = inputs.open_train_input(self.strategy, self.num_workers, train_dataset,
                                       train_dataset_fn, self.global_batch_size)
        self.global_batch_size = data.global_batch_size
        with tf.device("/cpu:0"):
            iterator = iter(data.dataset)
        result = self._resume(data.dataset, iterator)
        if self._finished(result.global_step):
            why = (f">= num_train_steps {self.num_train_steps}" if result.global_step >= self.num_train_steps
                   else f": the time budget of {self.time_budget.seconds:.0f} s is used")
            self._log(f"global step {result.global_step} {why}: nothing to train")
            return result
        loop_fn = self._step.loop(data.split)
        examples = (self.global_batch_size * self.gradient_accumulation_steps
                    if self.global_batch_size else None)
        meter = progress.ProgressMeter(self.num_train_steps, examples, self.write_summaries, self._log,
                                       self.flops_per_example, self.peak_flops,
                                       self.time_budget.remaining_seconds if self.time_budget else None)
        self._preemption.handle_sigterm = self.handle_sigterm
        try:
            with self._preemption:
                self._run_loops(loop_fn, iterator, meter, result)
        finally:
            self._summaries.flush()
        if result.preempted and self.exit_on_preemption:
            raise SystemExit(0)
        return result

    def _resume(self, dataset, iterator) -> TrainResult:
        """Prepares checkpoints for this run and restores the newest one, if any."""
        self._checkpoints.start_run(dataset, iterator, self.checkpoint_dataset_iterator,
                                    self.keep_checkpoint_max)
        restored = self.restore(iterator=self._checkpoints.run_iterator)
        step = int(self.global_step.numpy())
        if self.time_budget is not None:
            self.time_budget.start()
        if restored:
            self._checkpoints.restore_data_state(step)
            self._log(f"restored {restored} (global step {step})")
        return TrainResult(global_step=step, restored_from=restored, checkpoint=restored)

    def _next_boundary(self, step: int) -> int:
        """The loop's last step: ``steps_per_loop`` on, cut at checkpoints and evals."""
        target = min(step + self.steps_per_loop, self.num_train_steps)
        for every in (self.save_checkpoints_steps, self.eval_every_steps):
            if every:
                target = min(target, (step // every + 1) * every)
        return target

    def _finished(self, step: int) -> bool:
        """At ``num_train_steps``, or past the time budget."""
        return step >= self.num_train_steps or (self.time_budget is not None and self.time_budget.exhausted())

    def _save(self) -> str:
        if self.time_budget is not None:
            self.time_budget.checkpoint()
        return self._checkpoints.save()

    def _run_loops(self, loop_fn, iterator, meter, result: TrainResult):
        """Loops until `_end_of_loop` says the last one ran (`train` has checked that one is left)."""
        step = result.global_step
        while True:
            num_steps = self._next_boundary(step) - step
            out, seconds = self._step.run_loop(loop_fn, iterator, num_steps, step)
            step = int(self.global_step.numpy())
            train_step.check_finite(out, step, self.model_dir)
            logs = self._report(meter, out, step, int(out["steps"]), seconds, result)
            if self._end_of_loop(step, logs, result):  # the last loop, checkpointed
                break
            if self._stop_for_preemption(step, result):
                break

    def _report(self, meter, out, step, steps_done, seconds, result: TrainResult) -> dict:
        """Progress line and TensorBoard scalars for one loop."""
        scale = self.optimizer.dynamic_scale if self.uses_loss_scale else None
        logs = meter.report(out, step, steps_done, seconds, self.optimizer.learning_rate,
                            scale)
        result.global_step, result.loss = step, logs["loss"]
        result.metrics = {k: float(v) for k, v in out["metrics"].items()}
        return logs

    def _end_of_loop(self, step: int, logs: dict, result: TrainResult) -> bool:
        """Evaluation, the scheduled checkpoint and the user's hook; True after the last loop (decided once
        here, so a time budget that runs out just after cannot end the run without its final checkpoint)."""
        last = self._finished(step)
        if last and step < self.num_train_steps:
            self._log(f"time budget of {self.time_budget.seconds:.0f} s used: stopping at global step {step}")
        if (self.eval_every_steps and step % self.eval_every_steps == 0) or (
                last and self.eval_fn is not None):
            result.eval_metrics = self._evaluation.run(self, step)
            if result.eval_metrics is not None:
                self.last_eval_metrics = result.eval_metrics
        if (self.save_checkpoints_steps and step % self.save_checkpoints_steps == 0) or last:
            result.checkpoint = self._save()
            self._log(f"saved checkpoint {result.checkpoint}")
        if self.loop_end_fn is not None:
            self.loop_end_fn(self, step, logs)
        return last

    def _stop_for_preemption(self, step: int, result: TrainResult) -> bool:
        """After SIGTERM on any worker: checkpoint this step and stop."""
        if not self._preemption.requested_anywhere() or self._finished(step):
            return False
        if result.checkpoint is None or not result.checkpoint.endswith(f"ckpt-{step}"):
            result.checkpoint = self._save()
        self._log(f"preempted (SIGTERM): saved checkpoint {result.checkpoint} "
                  f"at global step {step}")
        result.preempted = True
        return True
