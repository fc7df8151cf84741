"""The training step: forward/backward per replica, gradient accumulation, one
all-reduce, the optimizer update, and the ``tf.function`` loop of many steps.

* :func:`prepare_optimizer` wraps the optimizer for ``mixed_float16`` loss scaling,
  sets gradient clipping (applied by Keras after our all-reduce and after
  unscaling) and turns off the optimizer's own all-reduce.
* :class:`TrainStep` builds ``loop(iterator, num_steps)``: ``num_steps`` optimizer
  steps in one ``tf.function``, stopping early at the first non-finite loss (or,
  without loss scaling, gradient norm), so that state is never saved.
"""

from __future__ import annotations

import time
from typing import Callable

import keras
import tensorflow as tf

from bert_tf.training import inputs


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss or gradients become NaN/Inf."""


def check_model(model):
    """The model must be built (its variables exist) and have trainable variables."""
    if not getattr(model, "built", False) or not model.trainable_variables:
        raise ValueError(
            "Trainer: the model must be built (call it once on a batch, or define it "
            "with keras.Input) under strategy.scope() before creating the Trainer, "
            f"and have trainable variables; got {type(model).__name__} with "
            f"{len(getattr(model, 'trainable_variables', []) or [])} trainable "
            "variables")


def _disable_optimizer_all_reduce(inner, strategy):
    """The trainer sums gradients over replicas itself; the optimizer must not again.

    Our optimizers (:mod:`bert_tf.training.optimization`) have a public switch,
    ``skip_gradient_all_reduce``. Keras 3.15's TensorFlow optimizer has none: its
    ``_backend_update_step`` always sums gradients over replicas in a replica
    context, ``apply()`` clips before that sum (we need clipping after it) and
    ``LossScaleOptimizer`` must be called in a replica context with gradients
    already summed (it checks them for Inf/NaN on each replica). So for other
    optimizers the one private route left is overriding the instance's
    ``_all_reduce_sum_gradients`` with the identity, here and only here, and
    only when there is more than one replica (with one it is already a no-op).
    """
    if hasattr(inner, "skip_gradient_all_reduce"):
        inner.skip_gradient_all_reduce = True
    elif strategy.num_replicas_in_sync > 1:
        # PRIVATE KERAS API (keras/src/backend/tensorflow/optimizer.py, 3.15).
        inner._all_reduce_sum_gradients = lambda grads_and_vars: list(grads_and_vars)


def prepare_optimizer(optimizer, strategy, loss_scale: str | None,
                      clip_norm: float | None):
    """Returns ``optimizer`` ready for the trainer (maybe wrapped for loss scaling)."""
    policy = keras.mixed_precision.dtype_policy().name
    lso_cls = keras.optimizers.LossScaleOptimizer
    if (loss_scale == "auto" and policy == "mixed_float16"
            and not isinstance(optimizer, lso_cls)):
        with strategy.scope():
            optimizer = lso_cls(optimizer)
    inner = optimizer.inner_optimizer if isinstance(optimizer, lso_cls) else optimizer
    if getattr(inner, "gradient_accumulation_steps", None):
        raise ValueError(
            "Trainer: the optimizer has Keras gradient_accumulation_steps="
            f"{inner.gradient_accumulation_steps}; set "
            "Trainer(gradient_accumulation_steps=...) instead")
    if clip_norm and not (inner.clipnorm or inner.global_clipnorm or inner.clipvalue):
        # Keras clips inside apply(): after our all-reduce and after unscaling.
        inner.global_clipnorm = float(clip_norm)
    _disable_optimizer_all_reduce(inner, strategy)
    return optimizer


class TrainStep:
    """Per-replica step and the multi-step loop for one model/optimizer/strategy.

    Args:
      model, optimizer, compute_loss, strategy: as given to the Trainer (the
        optimizer after :func:`prepare_optimizer`).
      global_step: the int64 step variable (incremented once per step).
      gradient_accumulation_steps: batches per optimizer step.
      jit_compile: XLA-compile the per-replica forward/backward pass.
      num_workers: worker processes in the strategy.
    """

    def __init__(self, model, optimizer, compute_loss: Callable, strategy, global_step,
                 gradient_accumulation_steps: int = 1, jit_compile: bool = False,
                 num_workers: int = 1):
        self.model = model
        self.optimizer = optimizer
        self.compute_loss = compute_loss
        self.strategy = strategy
        self.global_step = global_step
        self.accumulation = int(gradient_accumulation_steps)
        self.num_workers = num_workers
        self.uses_loss_scale = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        self.train_vars = list(model.trainable_variables)
        self.grad_fn = tf.function(self.forward_backward, jit_compile=bool(jit_compile),
                                   reduce_retracing=True)
        self.loop_fn = None
        self._loop_split = None

    def forward_backward(self, batch):
        """One batch on one replica: (mean loss, metrics, scaled gradients)."""
        n = self.strategy.num_replicas_in_sync
        with tf.GradientTape() as tape:
            out = self.compute_loss(self.model, batch, True)
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise TypeError("compute_loss must return (loss, metrics_dict)")
            loss, metrics = out
            loss = tf.cast(loss, tf.float32)
            if loss.shape.rank != 0:
                raise ValueError(
                    f"compute_loss must return a scalar loss, got shape {loss.shape}")
            scaled = loss / float(n * self.accumulation)
            if self.uses_loss_scale:
                scaled = self.optimizer.scale_loss(scaled)
        grads = tape.gradient(scaled, self.train_vars)
        metrics = {name: tf.cast(v, tf.float32) for name, v in dict(metrics or {}).items()}
        return loss, metrics, grads

    def _accumulate(self, batches):
        """Sums gradients, losses and metrics over the accumulation batches."""
        acc = loss_sum = metric_sums = None
        for batch in batches:
            deps = [] if acc is None else [g for g in acc if g is not None]
            with tf.control_dependencies(deps):
                loss, metrics, grads = self.grad_fn(batch)
            grads = [None if g is None else tf.convert_to_tensor(g) for g in grads]
            if acc is None:
                acc, loss_sum, metric_sums = grads, loss, dict(metrics)
            else:
                acc = [a if g is None else (g if a is None else a + g)
                       for a, g in zip(acc, grads)]
                loss_sum = loss_sum + loss
                metric_sums = {kk: metric_sums[kk] + metrics[kk] for kk in metric_sums}
        return acc, loss_sum, metric_sums

    @tf.autograph.experimental.do_not_convert
    def replica_step(self, batches):
        """One optimizer step on one replica: accumulate, all-reduce once, apply."""
        acc, loss_sum, metric_sums = self._accumulate(batches)
        k = float(len(batches))
        pairs = [(g, v) for g, v in zip(acc, self.train_vars) if g is not None]
        if not pairs:
            raise ValueError("compute_loss: no gradients for any trainable variable")
        grads = [g for g, _ in pairs]
        tvars = [v for _, v in pairs]
        if self.strategy.num_replicas_in_sync > 1:
            ctx = tf.distribute.get_replica_context()
            grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        grad_norm = tf.linalg.global_norm(grads)
        if self.uses_loss_scale:
            grad_norm = grad_norm / tf.cast(self.optimizer.dynamic_scale, tf.float32)
        self.optimizer.apply(grads, tvars)
        return loss_sum / k, {kk: v / k for kk, v in metric_sums.items()}, grad_norm

    def _make_one_step(self, split: str):
        strategy = self.strategy
        mean = tf.distribute.ReduceOp.MEAN
        next_batch = inputs.make_batch_reader(strategy, split, self.num_workers)

        @tf.autograph.experimental.do_not_convert
        def one_step(iterator):
            batches = tuple(next_batch(iterator) for _ in range(self.accumulation))
            loss, metrics, gnorm = strategy.run(self.replica_step, args=(batches,))
            loss = strategy.reduce(mean, loss, axis=None)
            metrics = {kk: strategy.reduce(mean, v, axis=None) for kk, v in metrics.items()}
            gnorm = strategy.experimental_local_results(gnorm)[0]
            self.global_step.assign_add(1)
            ok = tf.math.is_finite(loss)
            if not self.uses_loss_scale:
                ok = tf.logical_and(ok, tf.math.is_finite(gnorm))
            return loss, metrics, gnorm, ok

        return one_step

    def _build_loop(self, split: str):
        one_step = self._make_one_step(split)

        def loop(iterator, num_steps):
            loss, metrics, gnorm, ok = one_step(iterator)
            loss_sum, metric_sums, steps = loss, metrics, tf.constant(1)
            bad_loss = loss
            for _ in tf.range(num_steps - 1):
                if not ok:
                    break
                loss, metrics, gnorm, ok = one_step(iterator)
                bad_loss = loss
                loss_sum = loss_sum + loss
                metric_sums = {kk: metric_sums[kk] + metrics[kk] for kk in metric_sums}
                steps += 1
            denom = tf.cast(steps, tf.float32)
            return {
                "loss": loss_sum / denom,
                "metrics": {kk: v / denom for kk, v in metric_sums.items()},
                "grad_norm": gnorm,
                "ok": ok,
                "last_loss": bad_loss,
                "steps": steps,
            }

        return tf.function(loop)

    @staticmethod
    def run_loop(loop_fn, iterator, num_steps: int, step: int):
        """Runs ``loop_fn`` for ``num_steps`` steps; (NumPy outputs, seconds taken)."""
        t0 = time.time()
        try:
            out = loop_fn(iterator, tf.constant(num_steps, tf.int32))
        except tf.errors.OutOfRangeError as e:
            raise RuntimeError(
                f"the training dataset ran out at global step {step} (it must "
                "yield num_train_steps * gradient_accumulation_steps batches; "
                "use .repeat())") from e
        out = tf.nest.map_structure(lambda t: t.numpy(), out)
        return out, max(time.time() - t0, 1e-9)

    def loop(self, split: str):
        """The ``tf.function`` running ``num_steps`` steps (rebuilt if ``split`` changes)."""
        if self.loop_fn is None or self._loop_split != split:
            self.loop_fn = self._build_loop(split)  # the batch split is baked in
            self._loop_split = split
        return self.loop_fn


def check_finite(out: dict, step: int, model_dir: str):
    """Raises :class:`NonFiniteLossError` if the loop stopped on a NaN/Inf."""
    if bool(out["ok"]):
        return
    last = tf.train.latest_checkpoint(model_dir)
    raise NonFiniteLossError(
        f"non-finite training loss/gradients at global step {step} "
        f"(loss={float(out['last_loss'])}, grad_norm="
        f"{float(out['grad_norm'])}); this state was NOT saved; last good "
        f"checkpoint: {last or 'none'} in {model_dir}. Lower the "
        "learning rate, check the input data or use loss scaling")
