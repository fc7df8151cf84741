"""tf.data batches of tokenized text for fine-tuning: length-bucketed for training, sorted for evaluation.

Both take the examples as NumPy columns (a dict of equal-length arrays: texts,
labels, ...) and a `featurize(batch) -> (features, labels)` function that runs
the task model's preprocessor inside the pipeline, so every task (sentence
classification, tagging, question answering) batches its own features the
same way.

* `bucketed_batches`: endless, shuffled training batches of exactly
  `batch_size`. With `dynamic_padding`, `bucket_window` batches of shuffled
  examples are featurized together, sorted by packed length (`input_mask`)
  and cut into batches, each padded to its own longest sequence (multiple of
  8); the batches are then shuffled. Shuffling draws example *indices* (a small
  iterator state to checkpoint); the columns stay in constant tensors.
* `ordered_batches`: one pass over the examples sorted by a length key, each
  batch carrying the examples' positions (`index`) so predictions can be put
  back in file order.
"""

import numpy as np
import tensorflow as tf


def trim_to_longest(features, multiple=8):
    """Cut a batch of packed features to its longest sequence, rounded up to `multiple`."""
    longest = tf.maximum(tf.reduce_max(tf.reduce_sum(features["input_mask"], axis=1)), 1)
    width = tf.minimum((longest + multiple - 1) // multiple * multiple, tf.shape(features["input_mask"])[1])
    return {k: v[:, :width] for k, v in features.items()}


def _trim_batch(features, labels):
    """`trim_to_longest` for features and for per-token labels `[B, T]` (tagging) alike."""
    features = trim_to_longest(features)
    width = tf.shape(features["input_mask"])[1]
    return features, tf.nest.map_structure(lambda y: y[:, :width] if y.shape.rank == 2 else y, labels)


def _sort_by_length(features, labels):
    order = tf.argsort(tf.reduce_sum(features["input_mask"], axis=1), stable=True)
    return {k: tf.gather(v, order) for k, v in features.items()}, tf.nest.map_structure(
        lambda t: tf.gather(t, order), labels)


def bucketed_batches(columns, featurize, batch_size, seed=0, bucket_window=1, dynamic_padding=True,
                     input_context=None, shuffle_batches=True, per_token_labels=True):
    """Endless training batches `(features, labels)` over `columns` (see the module docstring).

    `per_token_labels`: labels of rank 2 are per token (`[B, T]`, tagging) and are cut with the features; False
    when they are per example (a multi-label `[B, C]` matrix), which must keep every column."""
    n = len(next(iter(columns.values())))
    if n == 0:
        raise ValueError("no training examples")
    constants = {k: tf.constant(v.tolist() if v.dtype == object else v) for k, v in columns.items()}
    ds = tf.data.Dataset.range(n)
    if input_context is not None and input_context.num_input_pipelines > 1:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True).repeat()
    window = max(1, int(bucket_window)) if dynamic_padding else 1
    ds = ds.batch(batch_size * window, drop_remainder=True)

    def featurize_window(idx):
        features, labels = featurize({k: tf.gather(v, idx) for k, v in constants.items()})
        return _sort_by_length(features, labels) if window > 1 else (features, labels)

    ds = ds.map(featurize_window, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if window > 1:
        ds = ds.unbatch().batch(batch_size, drop_remainder=True)
        trim = _trim_batch if per_token_labels else lambda features, labels: (trim_to_longest(features), labels)
        ds = ds.map(trim, num_parallel_calls=tf.data.AUTOTUNE)
        if shuffle_batches:
            ds = ds.shuffle(window, seed=seed + 1, reshuffle_each_iteration=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def ordered_batches(columns, featurize, batch_size, lengths=None):
    """One pass of batches `(features, labels, index)`, sorted by `lengths` (if given) to pad little."""
    n = len(next(iter(columns.values())))
    order = np.argsort(np.asarray(lengths), kind="stable") if lengths is not None else np.arange(n)
    sliced = {k: (v[order].tolist() if v.dtype == object else v[order]) for k, v in columns.items()}
    sliced["index"] = order.astype(np.int64)
    ds = tf.data.Dataset.from_tensor_slices(sliced).batch(batch_size)

    def featurize_batch(batch):
        index = batch.pop("index")
        features, labels = featurize(batch)
        return features, labels, index

    return ds.map(featurize_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(
        tf.data.AUTOTUNE)
