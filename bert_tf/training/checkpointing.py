"""Checkpoints of a training run: model, optimizer, global step and input position.

:class:`TrainCheckpoints` owns ``model_dir``'s ``ckpt-<global step>`` files: it
restores the newest one (refusing a checkpoint of another model as an error), saves
new ones (under multi-worker training only the chief writes to ``model_dir``; the
other workers write to a temporary directory deleted after each save) and keeps the
``tf.data`` iterator's state with a digest of the pipeline
(:func:`dataset_fingerprint`) so that a rerun continues at the same data position,
or restarts the data with a warning when the pipeline changed. Under multi-worker
training each worker keeps its own input position in
``model_dir/data_state/<task>_<id>/ckpt-<step>`` (:class:`WorkerDataState`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Callable

import tensorflow as tf

from bert_tf.training import distribute as distribute_lib

logger = logging.getLogger(__name__)

_FINGERPRINT_KEY = "input_fingerprint/.ATTRIBUTES/VARIABLE_VALUE"


def latest_checkpoint_step(model_dir: str) -> int | None:
    """Global step of the newest ``ckpt-<step>`` in ``model_dir`` (``None`` if none).

    Example::

        >>> latest_checkpoint_step("/nonexistent") is None
        True
    """
    path = tf.train.latest_checkpoint(model_dir) if tf.io.gfile.isdir(model_dir) else None
    if not path:
        return None
    return int(path.rsplit("-", 1)[-1])


def worker_write_dir(model_dir: str, strategy) -> str:
    """Where this worker writes checkpoints: ``model_dir`` on the chief, else a temp dir."""
    if distribute_lib.is_chief(strategy):
        return model_dir
    resolver = strategy.cluster_resolver
    return os.path.join(model_dir, f".tmp_{resolver.task_type}_{resolver.task_id}")


def _pipeline_op_types(dataset) -> list[str]:
    """Op types in a tf.data pipeline's graph and its functions (sorted).

    tf.data has no public way to read a dataset's graph, so this uses
    ``Dataset._as_serialized_graph`` (TensorFlow's, not Keras'); if that ever
    fails the fingerprint falls back to the element spec alone.
    """
    from tensorflow.core.framework import graph_pb2

    policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    serialized = dataset._as_serialized_graph(  # pylint: disable=protected-access
        external_state_policy=policy)
    graph = graph_pb2.GraphDef.FromString(serialized.numpy())
    ops = [n.op for n in graph.node]
    for fn in graph.library.function:
        ops.extend(n.op for n in fn.node_def)
    return sorted(ops)


def dataset_fingerprint(dataset) -> str:
    """A digest of a tf.data pipeline's structure, to tell whether a saved iterator
    position belongs to it.

    Covers the element spec (dtypes, shapes, so a changed static batch size) and the
    multiset of op types in the pipeline graph and its functions (added or removed
    ``shuffle``/``map``/``filter``, another source). Node names and seeds are left
    out, so the same program gives the same digest in every process.

    Example::

        >>> a = tf.data.Dataset.range(10).batch(2, drop_remainder=True)
        >>> b = tf.data.Dataset.range(10).batch(2, drop_remainder=True)
        >>> dataset_fingerprint(a) == dataset_fingerprint(b)
        True
        >>> dataset_fingerprint(a) == dataset_fingerprint(a.shuffle(4))
        False
    """
    parts = [repr(dataset.element_spec)]
    try:
        parts.extend(_pipeline_op_types(dataset))
    except Exception as e:  # pragma: no cover - best effort
        logger.debug("dataset_fingerprint: graph unavailable (%s)", e)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def saved_fingerprint(path: str) -> str | None:
    """The pipeline digest saved in checkpoint ``path`` (``None`` if none)."""
    try:
        value = tf.train.load_variable(path, _FINGERPRINT_KEY)
    except (tf.errors.NotFoundError, ValueError):
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def checkpoint_has(path: str, prefix: str) -> bool:
    """Whether checkpoint ``path`` holds a variable whose name starts with ``prefix``."""
    try:
        return any(name.startswith(prefix) for name, _ in tf.train.list_variables(path))
    except (tf.errors.OpError, ValueError):
        return False


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0][:300]


class WorkerDataState:
    """One worker's input position under multi-worker training.

    Lives in ``model_dir/data_state/<task type>_<task id>/ckpt-<step>``, saved at the
    same steps as the shared checkpoint.
    """

    def __init__(self, model_dir: str, strategy, iterator, fingerprint, keep_max: int):
        resolver = strategy.cluster_resolver
        self.directory = os.path.join(model_dir, "data_state",
                                      f"{resolver.task_type}_{resolver.task_id}")
        self._iterator = iterator
        self._manager = tf.train.CheckpointManager(
            tf.train.Checkpoint(iterator=iterator, input_fingerprint=fingerprint),
            self.directory, max_to_keep=keep_max, checkpoint_name="ckpt")

    def save(self, number: int):
        self._manager.save(checkpoint_number=number)

    def restore(self, step: int, fits: Callable[[str, str], bool]):
        """Restores the position saved at ``step`` if it exists and ``fits``."""
        path = os.path.join(self.directory, f"ckpt-{step}")
        if not (tf.io.gfile.exists(path + ".index") and fits(path, "input position")):
            logger.warning("no input position saved for step %d in %s; this "
                           "worker's data restarts", step, self.directory)
            return
        try:
            tf.train.Checkpoint(iterator=self._iterator).restore(path).expect_partial()
        except (tf.errors.OpError, ValueError, AssertionError) as e:
            logger.warning("could not restore the input position from %s: %s",
                           path, _first_line(e))


class TrainCheckpoints:
    """Save/restore of ``items`` (model, optimizer, global_step, extras) in ``model_dir``.

    Args:
      model_dir: where ``ckpt-<step>`` files live (all workers restore from it).
      strategy: the ``tf.distribute`` strategy (who writes where).
      items: trackables by checkpoint name; must hold ``global_step``.
      log: prints a line for the user (chief only).
    """

    def __init__(self, model_dir: str, strategy, items: dict, log: Callable[[str], None]):
        self.model_dir = model_dir
        self.strategy = strategy
        self.items = items
        self._log = log
        self.num_workers = distribute_lib.num_workers(strategy)
        self.is_chief = distribute_lib.is_chief(strategy)
        self.fingerprint = None  # tf.Variable: the current pipeline's digest
        self._manager = None
        self._data_state = None
        self.run_iterator = None  # the iterator saved in the shared checkpoint

    def checkpoint(self, iterator=None, fingerprint: bool = True) -> tf.train.Checkpoint:
        items = dict(self.items)
        if iterator is not None:
            items["iterator"] = iterator
            if fingerprint and self.fingerprint is not None:
                items["input_fingerprint"] = self.fingerprint
        return tf.train.Checkpoint(**items)

    def start_run(self, dataset, iterator, save_iterator: bool, keep_max: int):
        """Prepares saving for one ``train()`` run reading ``iterator`` of ``dataset``."""
        self.fingerprint = None
        if save_iterator:
            with tf.device("/cpu:0"):
                self.fingerprint = tf.Variable(dataset_fingerprint(dataset),
                                               trainable=False, dtype=tf.string)
        single = save_iterator and self.num_workers == 1
        self.run_iterator = iterator if single else None
        self._manager = tf.train.CheckpointManager(
            self.checkpoint(self.run_iterator),
            worker_write_dir(self.model_dir, self.strategy),
            max_to_keep=keep_max, checkpoint_name="ckpt")
        self._data_state = None
        if save_iterator and self.num_workers > 1:
            self._data_state = WorkerDataState(self.model_dir, self.strategy, iterator,
                                               self.fingerprint, keep_max)

    def restore_data_state(self, step: int):
        """Multi-worker: restores this worker's own input position at ``step``."""
        if self._data_state is not None:
            self._data_state.restore(step, self.iterator_fits)

    def save(self) -> str:
        """Writes ``ckpt-<global step>``; returns its path in ``model_dir``."""
        number = int(self.items["global_step"].numpy())
        path = self._manager.save(checkpoint_number=number)
        if self._data_state is not None:
            self._data_state.save(number)
        if not self.is_chief:
            tf.io.gfile.rmtree(worker_write_dir(self.model_dir, self.strategy))
            return os.path.join(self.model_dir, os.path.basename(path))
        return path

    def iterator_fits(self, path: str, what: str) -> bool:
        """False (with a warning) if ``path`` saved a position of another pipeline."""
        saved = saved_fingerprint(path)
        current = None if self.fingerprint is None else self.fingerprint.numpy().decode()
        if saved is not None and current is not None and saved != current:
            logger.warning(
                "the input pipeline differs from the one saved in %s (%s); its saved "
                "position is not used: the data restarts from the beginning", path, what)
            self._log(f"warning: input pipeline changed since {path}; data restarts "
                      "from the beginning")
            return False
        return True

    def _restore_with_iterator(self, path: str, iterator):
        """A restore status including the iterator, or ``None`` to restore without it."""
        if not checkpoint_has(path, "iterator/"):
            logger.warning("%s holds no dataset position; the data restarts from its "
                           "beginning", path)
            return None
        if not self.iterator_fits(path, "iterator"):
            return None
        try:
            return self.checkpoint(iterator, fingerprint=False).restore(path)
        except (tf.errors.OpError, ValueError) as e:
            logger.warning("could not restore the dataset iterator from %s (%s); "
                           "restoring the rest, data restarts from its beginning",
                           path, _first_line(e))
            return None

    def restore(self, path: str | None = None, iterator=None) -> str | None:
        """Restores ``path`` (default: newest in ``model_dir``); returns the path used.

        Every item must match; the iterator state is restored if given and
        compatible (a warning is logged otherwise).
        """
        path = path or (tf.train.latest_checkpoint(self.model_dir)
                        if tf.io.gfile.isdir(self.model_dir) else None)
        if not path:
            return None
        status = None if iterator is None else self._restore_with_iterator(path, iterator)
        try:
            if status is None:
                status = self.checkpoint().restore(path)
            # Every model/optimizer/step variable must get a value: a checkpoint of
            # another model configuration (or optimizer) is an error, not a partial load.
            status.assert_existing_objects_matched()
        except (tf.errors.OpError, ValueError, AssertionError) as e:
            raise RuntimeError(
                f"cannot restore checkpoint {path} into this model/optimizer (was it "
                "written by a different model configuration, optimizer or precision "
                f"policy?): {str(e)[:2000]}") from e
        status.expect_partial()
        return path
