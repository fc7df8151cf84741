"""Training input: which dataset each worker reads and how batches reach replicas.

The trainer reads a plain ``tf.data`` iterator on each worker (unlike
``tf.distribute``'s distributed iterators it can be checkpointed):

* ``"slice"`` (``train_dataset``, one worker): each GLOBAL batch is sliced evenly
  over the local replicas;
* ``"per_replica"`` (``train_dataset_fn(input_context)``): each local replica takes
  its own per-replica batch from the worker's dataset (TF's
  ``distribute_datasets_from_function`` convention).
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf


@dataclasses.dataclass
class TrainInput:
    dataset: tf.data.Dataset
    split: str  # "slice" or "per_replica"
    global_batch_size: int | None


def worker_index(strategy, num_workers: int) -> int:
    """This worker's input pipeline id: 0 for the chief, workers after it.

    Same numbering as ``tf.distribute``'s multi-worker strategies (a ``chief`` task,
    if any, is 0 and ``worker`` tasks follow), from the public cluster resolver.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if num_workers <= 1 or resolver is None:
        return 0
    if resolver.task_type == "chief":
        return 0
    try:
        has_chief = "chief" in resolver.cluster_spec().as_dict()
    except Exception:  # pragma: no cover - resolvers without a cluster spec
        has_chief = False
    return int(resolver.task_id) + (1 if has_chief else 0)


def infer_batch_size(dataset) -> int | None:
    """The static leading dimension of the dataset's first component, if any."""
    try:
        first = tf.nest.flatten(dataset.element_spec)[0]
        if first.shape.rank and first.shape[0] is not None:
            return int(first.shape[0])
    except (AttributeError, TypeError, ValueError):
        pass
    return None


def open_train_input(strategy, num_workers: int, train_dataset=None,
                     train_dataset_fn=None, global_batch_size: int | None = None
                     ) -> TrainInput:
    """Validates the arguments of ``Trainer.train`` and builds this worker's dataset."""
    if (train_dataset is None) == (train_dataset_fn is None):
        raise ValueError("Trainer.train: give exactly one of train_dataset, "
                         "train_dataset_fn")
    n_replicas = strategy.num_replicas_in_sync
    if train_dataset is not None:
        if num_workers > 1:
            raise ValueError(
                "Trainer.train: multi-worker training needs train_dataset_fn("
                "input_context) (each worker reads its own shard), not train_dataset")
        global_batch_size = global_batch_size or infer_batch_size(train_dataset)
        if global_batch_size and global_batch_size % n_replicas:
            raise ValueError(
                f"global batch size {global_batch_size} is not divisible by "
                f"the {n_replicas} replicas")
        dataset, split = train_dataset, "slice"
    else:
        ctx = tf.distribute.InputContext(
            num_input_pipelines=num_workers,
            input_pipeline_id=worker_index(strategy, num_workers),
            num_replicas_in_sync=n_replicas)
        dataset, split = train_dataset_fn(ctx), "per_replica"
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(f"training data must be a tf.data.Dataset, got "
                        f"{type(dataset).__name__}")
    return TrainInput(dataset, split, global_batch_size)


def _slice_for_replica(batch, replica_id, n: int):
    """Replica ``replica_id``'s 1/n of every tensor in a global batch."""

    def part(t):
        size = tf.shape(t)[0]
        check = tf.debugging.assert_equal(
            size % n, 0, message=(
                f"a training batch is not divisible by the {n} replicas; "
                "batch the dataset with drop_remainder=True and a global "
                "batch size that is a multiple of the replica count"))
        with tf.control_dependencies([check]):
            per = size // n
        return t[replica_id * per:(replica_id + 1) * per]

    return tf.nest.map_structure(part, batch)


def make_batch_reader(strategy, split: str, num_workers: int):
    """``next_batch(iterator)`` -> one step's per-replica batch (traced in the loop)."""
    n = strategy.num_replicas_in_sync
    local = max(n // num_workers, 1)

    @tf.autograph.experimental.do_not_convert
    def next_batch(iterator):
        if n == 1:
            return next(iterator)
        if split == "slice":
            batch = next(iterator)

            def take(ctx):
                return _slice_for_replica(batch, ctx.replica_id_in_sync_group, n)
        else:
            parts = [next(iterator) for _ in range(local)]

            def take(ctx):
                return parts[ctx.replica_id_in_sync_group % local]

        return strategy.experimental_distribute_values_from_function(take)

    return next_batch
