"""The shared custom training loop for pretraining and fine-tuning.

:class:`Trainer` runs a Keras 3 model under any ``tf.distribute`` strategy with
checkpoints and automatic resume, SIGTERM (preemption) handling, a NaN/Inf guard,
progress lines, TensorBoard summaries, gradient accumulation, loss scaling for
``mixed_float16``, evaluation hooks and a best-checkpoint exporter.

API
===

The caller supplies four things and settings::

    strategy = bert_tf.training.distribute.get_strategy("mirrored")
    with strategy.scope():
        model = build_model()              # must be BUILT (call it once / keras.Input)
        optimizer = bert_tf.training.optimization.create_optimizer(
            "adamw", 1e-4, num_train_steps=10000, num_warmup_steps=1000)

    def compute_loss(model, batch, training):
        # Runs once per replica on that replica's slice of the batch.
        # Return the MEAN loss over this replica's examples (a float32 scalar)
        # and a dict of scalar metrics (means over this replica's examples).
        features, labels = batch
        logits = model(features, training=training)
        loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(
            labels, logits, from_logits=True))
        acc = keras.ops.mean(keras.ops.cast(
            keras.ops.argmax(logits, -1) == keras.ops.cast(labels, "int32"), "float32"))
        return loss, {"accuracy": acc}

    def train_dataset_fn(input_context):      # or pass a tf.data.Dataset with the
        ds = make_dataset().repeat()          # GLOBAL batch as `train_dataset`
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        return ds.batch(input_context.get_per_replica_batch_size(GLOBAL_BATCH))

    trainer = Trainer(model, optimizer, compute_loss, strategy=strategy,
                      model_dir="/tmp/run", num_train_steps=10000,
                      steps_per_loop=100, save_checkpoints_steps=1000,
                      global_batch_size=GLOBAL_BATCH)
    result = trainer.train(train_dataset_fn=train_dataset_fn)
    # result.global_step, result.loss, result.metrics, result.preempted, ...

Runnable example (one device, toy regression)::

    >>> import keras, numpy as np, os, tempfile, tensorflow as tf
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> x = np.random.RandomState(0).randn(64, 4).astype("float32")
    >>> ds = tf.data.Dataset.from_tensor_slices((x, x.sum(1, keepdims=True)))
    >>> ds = ds.repeat().batch(16)
    >>> def compute_loss(model, batch, training):
    ...     x, y = batch
    ...     loss = keras.ops.mean(keras.ops.square(model(x, training=training) - y))
    ...     return loss, {}
    >>> trainer = Trainer(model, keras.optimizers.SGD(0.2), compute_loss,
    ...                   model_dir=tempfile.mkdtemp(), num_train_steps=20, clip_norm=None,
    ...                   steps_per_loop=10, save_checkpoints_steps=10,
    ...                   print_fn=lambda s: None)
    >>> result = trainer.train(ds)
    >>> result.global_step, result.loss < 0.01, os.path.basename(result.checkpoint)
    (20, True, 'ckpt-20')

Semantics
---------
* A *step* is one optimizer update. With ``gradient_accumulation_steps=k`` a step
  consumes ``k`` batches from the dataset, averages their gradients and applies
  them once (so ``k`` batches of ``b`` == one batch of ``k*b`` for a mean loss).
  ``global_batch_size`` is the size of one dataset batch over all replicas; the
  examples/s figure counts ``k * global_batch_size`` examples per step.
* Gradients are summed over replicas in the trainer (one all-reduce), then given to
  the optimizer, which clips them by global norm (``clip_norm``, default 1.0 as in
  Google's BERT; set on the optimizer as ``global_clipnorm``) after the reduction
  and, for ``mixed_float16``, after ``keras.optimizers.LossScaleOptimizer`` has
  unscaled them (the trainer wraps the optimizer when the global policy is
  ``mixed_float16`` and ``loss_scale="auto"``).
* ``steps_per_loop`` steps run inside one ``tf.function`` (a ``tf.range`` loop);
  progress, summaries, the SIGTERM flag and the NaN guard are handled between
  loops. Loops end at multiples of ``save_checkpoints_steps`` and
  ``eval_every_steps`` so checkpoints and evaluations land on exact steps.
* Input: the trainer reads a plain ``tf.data`` iterator on each worker (unlike
  ``tf.distribute``'s distributed iterators it can be checkpointed). With
  ``train_dataset`` each global batch is sliced evenly over the local replicas
  (the batch size must be a multiple of the replica count: use
  ``drop_remainder=True``); with ``train_dataset_fn`` the function is called once
  per worker with a ``tf.distribute.InputContext`` and each local replica takes
  its own per-replica batch from that dataset (TF's
  ``distribute_datasets_from_function`` convention). Prefetch in your pipeline.
* ``grad_norm`` in the logs is the global norm of the averaged gradient before
  clipping.
* The ``train_dataset`` must not run out (use ``.repeat()``); the trainer stops
  with a clear error if it does.

Checkpoints and resume
----------------------
``tf.train.CheckpointManager`` in ``model_dir`` writes ``ckpt-<global step>``
(``ckpt-<step>.index``/``.data-*`` and the ``checkpoint`` file) holding
``model``, ``optimizer`` (slots, iterations, loss scale), ``global_step`` and the
``iterator`` (tf.data iterator state, so a rerun continues at the same data
position; under multi-worker training each worker keeps its own input position in
``model_dir/data_state/<task>_<id>/ckpt-<step>``). ``train()`` restores the newest
checkpoint in ``model_dir`` automatically (load pretrained weights into the model
*before* calling ``train()``; a checkpoint, if present, overrides them). If the
saved iterator state does not fit the new input pipeline, the trainer warns and
restores everything else. With ``MultiWorkerMirroredStrategy`` only the chief
writes to ``model_dir``; other workers write to a temporary directory that is
deleted after each save, as TensorFlow recommends; all restore from ``model_dir``.
A digest of the input pipeline (:func:`dataset_fingerprint`) is saved with the
iterator; if the pipeline changed (another file list, shuffle added, another batch
size), the saved position is not applied and the data restarts from the beginning,
with a warning.
Restore weights elsewhere with ``tf.train.Checkpoint(model=model).restore(path)
.expect_partial()``.

Preemption and failures
-----------------------
* SIGTERM: the handler sets a flag; after the current loop the trainer writes a
  checkpoint at the current step, flushes summaries and (``exit_on_preemption=True``,
  the default) raises ``SystemExit(0)``; otherwise ``train()`` returns with
  ``result.preempted == True``. Under multi-worker training the flag is agreed on
  by all workers (one tiny all-reduce per loop).
* NaN/Inf: if a step's loss (or, without loss scaling, its gradient norm) is not
  finite, the loop stops at once and :class:`NonFiniteLossError` is raised naming
  the step and the last good checkpoint; that state is never saved.

Evaluation and the best checkpoint
----------------------------------
``eval_fn(trainer) -> dict`` is called every ``eval_every_steps`` steps and at the
end of training; metrics are printed, written to TensorBoard under
``model_dir/eval`` and, with ``best_exporter=BestCheckpointExporter(...)``, the
model is saved to ``model_dir/best/ckpt-<step>`` whenever the chosen metric
improves (``model_dir/best/best_metric.json`` records it). :meth:`Trainer.predict`
gathers per-example outputs over replicas into NumPy arrays and
:meth:`Trainer.evaluate` turns them into metrics with a host-side function (so
official metrics such as F1 or Matthews correlation are computed on the whole
evaluation set)::

    def predict_fn(model, batch):                    # per replica
        features, labels = batch
        return {"logits": model(features, training=False), "labels": labels}

    def metrics_fn(outputs):                         # NumPy, whole eval set
        pred = outputs["logits"].argmax(-1)
        return {"accuracy": float((pred == outputs["labels"]).mean())}

    exporter = BestCheckpointExporter(os.path.join(model_dir, "best"), "accuracy")
    trainer = Trainer(..., eval_every_steps=steps_per_epoch, best_exporter=exporter,
                      eval_fn=lambda t: t.evaluate(eval_ds, predict_fn, metrics_fn))

Progress and TensorBoard
------------------------
Each loop prints (chief only) a line like::

    step 200/1000 | loss 2.3127 | accuracy 0.4531 | lr 9.00e-05 | grad_norm 1.2 |
    812.3 examples/s | 12.69 steps/s | ETA 0:01:03

and writes the same scalars (``loss``, each metric, ``learning_rate``,
``grad_norm``, ``examples_per_second``, ``steps_per_second``, ``loss_scale``) to
``model_dir/train``.

Layout
------
The loop follows Orbit's split: a small controller and separate pieces, each
readable alone.

=====================  ==========================================================
``controller.py``      :class:`Trainer`, :class:`TrainResult`: the loop tying the
                       pieces together
``train_step.py``      replica step, gradient accumulation, the ``tf.function``
                       loop, optimizer preparation, :class:`NonFiniteLossError`
``inputs.py``          which dataset a worker reads, how batches reach replicas
``checkpointing.py``   checkpoints, resume, iterator state,
                       :func:`dataset_fingerprint`, per-worker data state
``preemption.py``      the SIGTERM flag, agreed on by all workers
``progress.py``        progress lines (steps/s, examples/s, ETA), TensorBoard
``evaluation.py``      :func:`predict`, the eval hook, :class:`BestCheckpointExporter`
=====================  ==========================================================
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from bert_tf.training.checkpointing import dataset_fingerprint, latest_checkpoint_step  # noqa: E402
from bert_tf.training.controller import Trainer, TrainResult  # noqa: E402
from bert_tf.training.evaluation import BestCheckpointExporter, predict  # noqa: E402
from bert_tf.training.train_step import NonFiniteLossError  # noqa: E402

__all__ = ["Trainer", "TrainResult", "BestCheckpointExporter", "NonFiniteLossError",
           "predict", "latest_checkpoint_step", "dataset_fingerprint"]
