"""Progress lines and TensorBoard scalars.

:class:`ProgressMeter` turns one loop's outputs into the logged scalars (loss,
metrics, learning rate, gradient norm, steps/s, examples/s, loss scale) and the
printed line::

    step 200/1000 | loss 2.3127 | accuracy 0.4531 | lr 9.00e-05 | grad_norm 1.2 |
    812.3 examples/s | 12.69 steps/s | ETA 0:01:03

:class:`SummaryWriters` writes scalars to ``model_dir/<name>`` (chief only) without
needing the tensorboard package.
"""

from __future__ import annotations

import datetime
import math
import os
import time
from typing import Callable

import numpy as np
import tensorflow as tf


def _scalar_metadata():
    from tensorflow.core.framework import summary_pb2

    meta = summary_pb2.SummaryMetadata()
    meta.plugin_data.plugin_name = "scalars"
    meta.data_class = summary_pb2.DATA_CLASS_SCALAR
    return meta


def scalar_summary(name: str, value: float, step=None):
    """A TensorBoard scalar, written without needing the tensorboard package.

    Same record as ``tf.summary.scalar`` (a float32 tensor with the ``scalars``
    plugin metadata), so TensorBoard shows it as a scalar chart.
    """
    return tf.summary.write(name, tf.constant(value, tf.float32), step=step,
                            metadata=_scalar_metadata())


def _to_float(x) -> float:
    return float(np.asarray(x))


def format_eta(seconds: float) -> str:
    """``H:MM:SS`` (``?`` if unknown).

    Example::

        >>> format_eta(63.4), format_eta(float("inf"))
        ('0:01:03', '?')
    """
    if not math.isfinite(seconds):
        return "?"
    return str(datetime.timedelta(seconds=int(round(seconds))))


class SummaryWriters:
    """One TensorBoard writer per sub-directory of ``model_dir`` (no-ops off the chief)."""

    def __init__(self, model_dir: str, is_chief: bool):
        self.model_dir = model_dir
        self.is_chief = is_chief
        self._writers: dict = {}

    def writer(self, name: str):
        if name not in self._writers:
            if self.is_chief:
                self._writers[name] = tf.summary.create_file_writer(
                    os.path.join(self.model_dir, name))
            else:
                self._writers[name] = tf.summary.create_noop_writer()
        return self._writers[name]

    def write(self, name: str, scalars: dict, step: int):
        """Writes the scalar entries of ``scalars`` at ``step`` (others are skipped)."""
        writer = self.writer(name)
        with writer.as_default(step=step):
            for key, value in scalars.items():
                if value is None or np.ndim(value) != 0:
                    continue
                scalar_summary(key, float(value))
        writer.flush()

    def flush(self):
        for w in self._writers.values():
            w.flush()


class ProgressMeter:
    """Per-loop scalars and the progress line of one ``train()`` run.

    Args:
      num_train_steps: the run's last step (for ``step i/N`` and the ETA).
      examples_per_step: examples in one optimizer step over all replicas
        (``None``: no examples/s figure).
      write_summaries: ``fn(name, scalars, step)``; the scalars go to ``"train"``.
      log: prints the progress line.
      flops_per_example, peak_flops: with both, the line and the summaries show
        model FLOPs utilisation, ``examples/s * flops_per_example / peak_flops``
        (see :mod:`bert_tf.training.flops`).
      seconds_left: ``fn() -> seconds`` to a wall-clock deadline (a time budget): the
        ETA is the sooner of it and the steps left at the measured rate (with a time
        budget, ``num_train_steps`` is only a cap, often far away).
    """

    def __init__(self, num_train_steps: int, examples_per_step: int | None,
                 write_summaries: Callable, log: Callable[[str], None],
                 flops_per_example: float | None = None, peak_flops: float | None = None,
                 seconds_left: Callable[[], float] | None = None):
        self.num_train_steps = num_train_steps
        self.seconds_left = seconds_left
        self.examples_per_step = examples_per_step
        self.flops_per_example, self.peak_flops = flops_per_example, peak_flops
        self._write_summaries = write_summaries
        self._log = log
        self._rate_start = None  # (step, time) at the end of the first loop

    def report(self, out: dict, step: int, steps_done: int, seconds: float,
               learning_rate, loss_scale=None) -> dict:
        """Writes the loop's scalars and prints its line; returns the scalars."""
        logs = self.logs(out, steps_done, seconds, _to_float(learning_rate),
                         None if loss_scale is None else _to_float(loss_scale))
        eta = self.eta(step, steps_done, seconds)
        self._write_summaries("train", logs, step)
        self._log(self.line(step, logs, out["metrics"], eta))
        return logs

    def logs(self, out: dict, steps_done: int, seconds: float, learning_rate: float,
             loss_scale: float | None = None) -> dict:
        """The loop's scalars: loss, metrics, learning_rate, grad_norm, speeds."""
        logs = {"loss": float(out["loss"]),
                **{k: float(v) for k, v in out["metrics"].items()}}
        logs["learning_rate"] = learning_rate
        logs["grad_norm"] = float(out["grad_norm"])
        logs["steps_per_second"] = steps_done / seconds
        if self.examples_per_step:
            logs["examples_per_second"] = steps_done * self.examples_per_step / seconds
            if self.flops_per_example and self.peak_flops:
                logs["mfu"] = logs["examples_per_second"] * self.flops_per_example / self.peak_flops
        if loss_scale is not None:
            logs["loss_scale"] = loss_scale
        return logs

    def eta(self, step: int, steps_done: int, seconds: float) -> float:
        """Seconds left. The first loop includes tracing/compilation: later ETAs are
        measured from the end of it."""
        if self._rate_start is None:
            self._rate_start = (step, time.time())
            rate = steps_done / seconds
        else:
            start_step, start_time = self._rate_start
            rate = (step - start_step) / max(time.time() - start_time, 1e-9)
        by_steps = (self.num_train_steps - step) / rate if rate > 0 else float("inf")
        return by_steps if self.seconds_left is None else min(by_steps, self.seconds_left())

    def line(self, step: int, logs: dict, metrics: dict, eta: float) -> str:
        """``step i/N | loss .. | <metrics> | lr .. | grad_norm .. | .. | ETA ..``."""
        parts = [f"step {step}/{self.num_train_steps}", f"loss {logs['loss']:.4f}"]
        parts += [f"{k} {float(v):.4f}" for k, v in metrics.items()]
        parts.append(f"lr {logs['learning_rate']:.2e}")
        parts.append(f"grad_norm {logs['grad_norm']:.3g}")
        if "examples_per_second" in logs:
            parts.append(f"{logs['examples_per_second']:.1f} examples/s")
        if "mfu" in logs:
            parts.append(f"MFU {100 * logs['mfu']:.1f}%")
        parts.append(f"{logs['steps_per_second']:.2f} steps/s")
        if "loss_scale" in logs:
            parts.append(f"loss_scale {logs['loss_scale']:g}")
        parts.append(f"ETA {format_eta(eta)}")
        return " | ".join(parts)
