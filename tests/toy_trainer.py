"""A tiny trainer program on bert_tf.training.Trainer, driven by tests/test_training.py.

Deterministic synthetic regression (a shuffled, repeated tf.data pipeline) and a
small MLP with a LayerNorm, so tests can kill it, resume it and compare final
weights bit-for-bit (well, to 1e-6) against an uninterrupted run.

    python tests/toy_trainer.py --model_dir=/tmp/t --num_train_steps=40 \
        [--strategy=mirrored --logical_cpus=2] [--sleep_per_loop=0.3] \
        [--nan_at_step=7] [--out_json=/tmp/t/out.json]
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FEATURES = 6


def parse_args(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--model_dir", required=True)
    p.add_argument("--strategy", default="one_device")
    p.add_argument("--logical_cpus", type=int, default=0)
    p.add_argument("--num_train_steps", type=int, default=40)
    p.add_argument("--steps_per_loop", type=int, default=2)
    p.add_argument("--save_checkpoints_steps", type=int, default=10)
    p.add_argument("--keep_checkpoint_max", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=8, help="global batch size")
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    p.add_argument("--optimizer", default="adamw")
    p.add_argument("--learning_rate", type=float, default=0.02)
    p.add_argument("--mixed_precision", default="float32")
    p.add_argument("--sleep_per_loop", type=float, default=0.0)
    p.add_argument("--nan_at_step", type=int, default=0)
    p.add_argument("--no_shuffle", action="store_true")
    p.add_argument("--out_json", default="")
    return p.parse_args(argv)


def make_dataset(global_batch, shuffle=True, input_context=None):
    import tensorflow as tf

    def example(i):
        x = tf.random.stateless_normal([FEATURES], seed=tf.stack([i, tf.constant(7, tf.int64)]))
        y = tf.reduce_sum(x * tf.range(1.0, FEATURES + 1.0)) / 4.0 + tf.sin(x[0])
        return {"x": x, "index": i}, tf.reshape(y, [1])

    ds = tf.data.Dataset.range(64)
    if input_context is not None:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    ds = ds.map(example)
    if shuffle:
        ds = ds.shuffle(32, seed=1)
    batch = global_batch
    if input_context is not None:
        batch = input_context.get_per_replica_batch_size(global_batch)
    return ds.repeat().batch(batch, drop_remainder=True)


def build_model():
    import keras

    inputs = keras.Input((FEATURES,), name="x")
    h = keras.layers.Dense(16, activation="tanh", name="hidden")(inputs)
    h = keras.layers.LayerNormalization(name="LayerNorm")(h)
    out = keras.layers.Dense(1, name="out", dtype="float32")(h)
    return keras.Model(inputs, out, name="toy")


def main(argv=None):
    args = parse_args(argv)
    if args.logical_cpus:
        from bert_tf.training.distribute import set_logical_cpus

        set_logical_cpus(args.logical_cpus)
    import keras
    import numpy as np
    import tensorflow as tf

    from bert_tf.training.distribute import configure_mixed_precision, get_strategy
    from bert_tf.training.optimization import create_optimizer
    from bert_tf.training import Trainer

    strategy = get_strategy(args.strategy)  # first: multi-worker needs a fresh runtime
    configure_mixed_precision(args.mixed_precision)
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(1234)
    with strategy.scope():
        model = build_model()
        if args.optimizer == "sgd":
            optimizer = keras.optimizers.SGD(args.learning_rate)
        else:
            optimizer = create_optimizer(args.optimizer, args.learning_rate,
                                         num_train_steps=args.num_train_steps,
                                         num_warmup_steps=4)
    holder = {}

    def compute_loss(model, batch, training):
        features, y = batch
        pred = model(features["x"], training=training)
        err = tf.cast(pred, tf.float32) - y
        loss = tf.reduce_mean(tf.square(err))
        if args.nan_at_step:
            bad = tf.equal(holder["trainer"].global_step + 1, args.nan_at_step)
            loss = loss * tf.where(bad, float("nan"), 1.0)
        return loss, {"mae": tf.reduce_mean(tf.abs(err))}

    def loop_end(trainer, step, logs):
        if args.sleep_per_loop:
            time.sleep(args.sleep_per_loop)

    trainer = Trainer(model, optimizer, compute_loss, strategy=strategy,
                      model_dir=args.model_dir, num_train_steps=args.num_train_steps,
                      steps_per_loop=args.steps_per_loop,
                      save_checkpoints_steps=args.save_checkpoints_steps,
                      keep_checkpoint_max=args.keep_checkpoint_max,
                      gradient_accumulation_steps=args.gradient_accumulation_steps,
                      global_batch_size=args.batch_size, loop_end_fn=loop_end)
    holder["trainer"] = trainer
    if args.strategy == "multi_worker":
        result = trainer.train(train_dataset_fn=lambda ctx: make_dataset(
            args.batch_size, not args.no_shuffle, ctx))
    else:
        result = trainer.train(make_dataset(args.batch_size, not args.no_shuffle))
    if args.out_json:
        # predictions over 13 examples in batches of 4 (the last one partial)
        ds = make_dataset(13, shuffle=False).take(1).unbatch().batch(4)
        preds = trainer.predict(ds, lambda m, b: {"index": b[0]["index"],
                                                  "pred": m(b[0]["x"], training=False)})
        weights = [np.asarray(v).tolist() for v in model.get_weights()]
        with open(args.out_json, "w") as f:
            json.dump({"global_step": result.global_step, "loss": result.loss,
                       "restored_from": result.restored_from,
                       "checkpoint": result.checkpoint,
                       "replicas": strategy.num_replicas_in_sync,
                       "pred_index": preds["index"].tolist(),
                       "pred": preds["pred"].ravel().tolist(),
                       "weights": weights}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
