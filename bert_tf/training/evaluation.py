"""Evaluation: prediction over a strategy, the evaluation hook and the best checkpoint.

* :func:`predict` runs a per-replica ``predict_fn`` over a dataset and gathers the
  outputs into NumPy arrays in dataset order.
* :class:`EvalRunner` calls the trainer's ``eval_fn`` every ``eval_every_steps``
  steps, prints and writes the metrics and feeds the :class:`BestCheckpointExporter`.
* :class:`BestCheckpointExporter` keeps ``model_dir/best/ckpt-<step>`` for the best
  value of one metric (``best_metric.json`` records it and survives restarts).
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Callable

import numpy as np
import tensorflow as tf

from bert_tf.training import distribute as distribute_lib
from bert_tf.training.checkpointing import worker_write_dir
from bert_tf import atomic


def _concat(parts):
    parts = [np.asarray(p) for p in parts]
    if parts[0].ndim == 0:
        return np.stack(parts)
    return np.concatenate(parts, axis=0)


def predict(strategy, model, dataset, predict_fn, num_workers=None):
    """Runs ``predict_fn(model, batch) -> dict`` over ``dataset``; returns NumPy arrays.

    Outputs are concatenated along axis 0 in dataset order. On a single worker the
    batches are split over the strategy's replicas; under multi-worker training each
    worker runs the whole dataset on its local copy of the model (no collectives, so
    uneven batches cannot hang), which is what evaluation needs.

    Example::

        >>> import keras, numpy as np
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> ds = tf.data.Dataset.from_tensor_slices(np.ones((5, 2), "float32")).batch(2)
        >>> out = predict(tf.distribute.get_strategy(), m, ds, lambda m, x: {"y": m(x)})
        >>> out["y"].shape
        (5, 1)
    """
    strategy = strategy or tf.distribute.get_strategy()
    if num_workers is None:
        num_workers = distribute_lib.num_workers(strategy)
    outputs: dict[str, list] = {}

    def collect(local_results):
        for replica_out in local_results:
            if not isinstance(replica_out, dict):
                raise TypeError("predict_fn must return a dict of tensors, got "
                                f"{type(replica_out).__name__}")
            for k, v in replica_out.items():
                outputs.setdefault(k, []).append(np.asarray(v))

    if num_workers > 1 or strategy.num_replicas_in_sync == 1:
        step = tf.function(lambda b: predict_fn(model, b), reduce_retracing=True)
        for batch in dataset:
            collect([step(batch)])
    else:
        dist = strategy.experimental_distribute_dataset(dataset)

        @tf.function(reduce_retracing=True)
        def dist_step(b):
            return strategy.run(lambda x: predict_fn(model, x), args=(b,))

        for batch in dist:
            out = dist_step(batch)
            collect(strategy.experimental_local_results(out))
    return {k: _concat(v) for k, v in outputs.items()}


class BestCheckpointExporter:
    """Keeps the model checkpoint with the best value of one evaluation metric.

    Writes ``<export_dir>/ckpt-<step>`` (model variables only; one kept) and
    ``<export_dir>/best_metric.json`` (``metric``, ``value``, ``step``,
    ``checkpoint``, ``metrics``). Survives restarts: the recorded best is read back.

    Example::

        >>> import keras, tempfile
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> ex = BestCheckpointExporter(tempfile.mkdtemp(), "accuracy")
        >>> ex.maybe_export({"accuracy": 0.5}, step=10, model=m)
        True
        >>> ex.maybe_export({"accuracy": 0.4}, step=20, model=m)
        False
        >>> ex.best_value, ex.best_step
        (0.5, 10)
    """

    def __init__(self, export_dir: str, metric_name: str, higher_is_better: bool = True,
                 strategy=None):
        self.export_dir = export_dir
        self.metric_name = metric_name
        self.higher_is_better = bool(higher_is_better)
        self.strategy = strategy
        self.best_value: float | None = None
        self.best_step: int | None = None
        self._manager = None
        self._model = None
        path = self.json_path
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                rec = json.load(f)
            self.best_value, self.best_step = rec.get("value"), rec.get("step")

    @property
    def json_path(self) -> str:
        return os.path.join(self.export_dir, "best_metric.json")

    @property
    def best_checkpoint(self) -> str | None:
        """Path prefix of the best checkpoint, or ``None``."""
        return tf.train.latest_checkpoint(self.export_dir) if tf.io.gfile.isdir(
            self.export_dir) else None

    def is_better(self, value: float) -> bool:
        if value is None or not math.isfinite(value):
            return False
        if self.best_value is None:
            return True
        return value > self.best_value if self.higher_is_better else value < self.best_value

    def maybe_export(self, metrics: dict, step: int, model) -> bool:
        """Saves ``model`` if ``metrics[metric_name]`` beats the best so far."""
        if self.metric_name not in metrics:
            raise KeyError(f"BestCheckpointExporter: metric {self.metric_name!r} not in "
                           f"evaluation results {sorted(metrics)}")
        value = float(metrics[self.metric_name])
        if not self.is_better(value):
            return False
        # Only the chief writes to export_dir; other workers save to a temp dir.
        write_dir = worker_write_dir(self.export_dir, self.strategy)
        if self._manager is None or self._model is not model:
            self._model = model
            self._manager = tf.train.CheckpointManager(
                tf.train.Checkpoint(model=model), write_dir, max_to_keep=1,
                checkpoint_name="ckpt")
        path = self._manager.save(checkpoint_number=int(step))
        self.best_value, self.best_step = value, int(step)
        if distribute_lib.is_chief(self.strategy):
            self._write_record(value, int(step), path, metrics)
        else:
            tf.io.gfile.rmtree(write_dir)
        return True

    def _write_record(self, value: float, step: int, path: str, metrics: dict):
        """Atomically writes ``best_metric.json``."""
        rec = {"metric": self.metric_name, "value": value, "step": step,
               "higher_is_better": self.higher_is_better, "checkpoint": path,
               "metrics": {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}}
        atomic.write_json(self.json_path, rec, sort_keys=False)

    def restore(self, model) -> str:
        """Loads the best checkpoint's weights into ``model``; returns its path."""
        path = self.best_checkpoint
        if not path:
            raise FileNotFoundError(f"no best checkpoint in {self.export_dir}")
        tf.train.Checkpoint(model=model).restore(path).expect_partial()
        return path




class EvalRunner:
    """Runs a trainer's ``eval_fn(trainer) -> dict`` hook at a step.

    Prints ``eval step N | metric value | ... | seconds``, writes the metrics under
    ``model_dir/eval`` and offers them to the trainer's ``best_exporter``. While the
    hook runs, :attr:`active` is true (``Trainer.evaluate`` then leaves the
    ``eval`` summaries to this runner, so they are written once).
    """

    def __init__(self, write_summaries: Callable, log: Callable[[str], None]):
        self._write_summaries = write_summaries
        self._log = log
        self.active = False

    def run(self, trainer, step: int) -> dict | None:
        """Evaluates ``trainer`` (its ``eval_fn``/``best_exporter``); the metrics or None."""
        if trainer.eval_fn is None:
            return None
        t0 = time.time()
        self.active = True
        try:
            metrics = trainer.eval_fn(trainer)
        finally:
            self.active = False
        if metrics is None:
            return None
        metrics = dict(metrics)
        self._write_summaries("eval", metrics, step)
        shown = " | ".join(f"{k} {float(v):.4f}" for k, v in metrics.items()
                           if np.ndim(v) == 0)
        self._log(f"eval step {step} | {shown} | {time.time() - t0:.1f}s")
        exporter = trainer.best_exporter
        if exporter is not None and exporter.maybe_export(metrics, step, trainer.model):
            self._log(f"new best {exporter.metric_name}={exporter.best_value:.4f} at step "
                      f"{step} -> {exporter.export_dir}")
        return metrics
