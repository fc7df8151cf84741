"""End-to-end inference on real text: raw strings -> class probabilities.

In one run, on real English sentences (fixtures.datasets.real_sentences):
  * ours: a MiniLM-size BertClassifier (the real MiniLM weights) exported with
    bert_tf.tasks.classification.export.export_classifier and called through its `serving_default`
    signature (tokenizer inside, each batch padded only to its longest row);
  * keras-hub: BertTextClassifier with its own BertTextClassifierPreprocessor
    (same vocab, sequence_length 128, same backbone size), `predict_on_batch`.
Both float32, batch 32, timed interleaved (round-robin over repetitions, best
kept) so that other load on the machine hits both alike. Then ours exported from
a `mixed_bfloat16` model, where the CPU has native bf16 (AVX512-BF16 or AMX;
otherwise the script says so and skips it).

Then one fine-tuning epoch on real labelled text (tweets, 3 classes): ours
(trainers/finetune.py's input pipeline with length bucketing and the shared
Trainer, real MiniLM weights) against keras-hub `BertTextClassifier.fit` on raw
strings with its own preprocessor (same backbone size, batch and sequence
length), each after a few untimed warm-up steps; our dev accuracy after the
epoch is printed as a check that the epoch trained. bench/finetune.py has the
step-level comparison, bench/accuracy.py the accuracy across seeds.

Usage: python bench/end_to_end.py [--sentences 5000] [--reps 2] [--seq_length 128]
                                  [--finetune_examples 2048] [--skip_inference] [--skip_finetune]
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_text  # noqa: E402,F401  (registers the ops the export uses)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sentences", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--seq_length", type=int, default=128)
    parser.add_argument("--finetune_examples", type=int, default=2048)
    parser.add_argument("--warmup_steps", type=int, default=4)
    parser.add_argument("--skip_inference", action="store_true")
    parser.add_argument("--skip_finetune", action="store_true")
    args = parser.parse_args()
    if not args.skip_inference:
        inference(args)
    if not args.skip_finetune:
        finetune_epoch(args)


def _keras_hub_classifier(cfg, vocab, seq_length, dropout=0.1):
    import keras_hub

    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocab, lowercase=True)
    kh_pre = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=seq_length)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=cfg.vocab_size, num_layers=cfg.num_hidden_layers, num_heads=cfg.num_attention_heads,
        hidden_dim=cfg.hidden_size, intermediate_dim=cfg.intermediate_size,
        max_sequence_length=cfg.max_position_embeddings, dropout=dropout)
    return keras_hub.models.BertTextClassifier(backbone, num_classes=3, preprocessor=kh_pre,
                                               activation="softmax")


def inference(args):
    import bert_tf
    from bert_tf.training import distribute
    from fixtures import datasets
    from bert_tf.tasks.classification.model import BertClassifier
    from bert_tf.tasks.classification.export import export_classifier

    texts = datasets.real_sentences(args.sentences)
    batches = [tf.constant(texts[i:i + args.batch]) for i in range(0, len(texts), args.batch)]
    model_dir = datasets.minilm_dir()
    vocab = os.path.join(model_dir, "vocab.txt")

    pre = bert_tf.BertPreprocessor(vocab, lower_case=True, seq_length=args.seq_length)
    lengths = pre.tokenize(tf.constant(texts)).row_lengths().numpy() + 2
    print(f"{len(texts)} real sentences; wordpieces with [CLS]/[SEP]: mean {lengths.mean():.1f}, "
          f"max {lengths.max()} (truncated to {args.seq_length}); "
          f"{np.mean(lengths > args.seq_length):.1%} over {args.seq_length}")

    # ours: the exported SavedModel, as TF Serving would run it
    pretrained = bert_tf.from_pretrained(model_dir)
    clf = BertClassifier(pretrained.encoder, pre, num_classes=3, labels=["negative", "neutral", "positive"])
    clf(pre(tf.constant(texts[:2])))
    export_dir = export_classifier(clf, os.path.join(tempfile.mkdtemp(), "bert"), task="bench")
    serving_fn = tf.saved_model.load(export_dir).signatures["serving_default"]

    # keras-hub, at the same backbone size, with its own preprocessor
    kh = _keras_hub_classifier(pretrained.config, vocab, args.seq_length)

    def serve(fn):
        def run(some=None):
            for b in some or batches:
                fn(text=b)["probabilities"].numpy()
        return run

    def run_keras_hub(some=None):
        for b in some or batches:
            kh.predict_on_batch(b)

    runs = {"bert_tf export": serve(serving_fn), "keras-hub": run_keras_hub}
    if distribute.cpu_has_native_bf16():
        # the same classifier (same head weights) built under mixed_bfloat16, exported the same way
        distribute.configure_mixed_precision("mixed_bfloat16")
        try:
            clf16 = BertClassifier(bert_tf.from_pretrained(model_dir).encoder, pre, num_classes=3,
                                   labels=["negative", "neutral", "positive"])
            clf16(pre(tf.constant(texts[:2])))
            clf16.head.set_weights(clf.head.get_weights())
            dir16 = export_classifier(clf16, os.path.join(tempfile.mkdtemp(), "bert16"), task="bench")
        finally:
            distribute.configure_mixed_precision("float32")
        serving_fn16 = tf.saved_model.load(dir16).signatures["serving_default"]
        runs["bert_tf export bf16"] = serve(serving_fn16)
    for fn in runs.values():  # warm-up: trace / build
        fn(batches[:2])
    best = {name: float("inf") for name in runs}
    for rep in range(args.reps):
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
            print(f"  rep {rep}: {name:20s} {len(texts) / (time.perf_counter() - t):8.1f} sentences/s", flush=True)
    print("\nraw strings -> probabilities, float32, batch", args.batch)
    for name, sec in best.items():
        print(f"  {name:20s} {len(texts) / sec:8.1f} sentences/s")
    print(f"  ratio ours/keras-hub = {best['keras-hub'] / best['bert_tf export']:.2f}x  (target >= 2x)")
    if "bert_tf export bf16" in best:
        print(f"  bf16/float32 (ours) = {best['bert_tf export'] / best['bert_tf export bf16']:.2f}x; "
              f"bf16 ours/keras-hub float32 = {best['keras-hub'] / best['bert_tf export bf16']:.2f}x")
        p32 = np.concatenate([serving_fn(text=b)["probabilities"].numpy() for b in batches[:20]])
        p16 = np.concatenate([serving_fn16(text=b)["probabilities"].numpy() for b in batches[:20]])
        print(f"  bf16 vs float32 on {len(p32)} sentences: max |dp| {np.abs(p16 - p32).max():.4f}, "
              f"same argmax {np.mean(p16.argmax(1) == p32.argmax(1)):.1%}")
    else:
        print("  bf16: skipped, this CPU has neither AVX512-BF16 nor AMX (bf16 would be emulated and slower)")


def finetune_epoch(args):
    """One epoch of fine-tuning on real tweets: ours vs keras-hub, examples/s."""
    import keras

    import bert_tf
    from bert_tf.tasks.classification import data as glue
    from fixtures import datasets
    from bert_tf.training.optimization import create_optimizer
    from bert_tf.tasks import SentencePredictionTask
    from bert_tf.training import Trainer

    bs, n, w = args.batch, args.finetune_examples, args.warmup_steps
    data_dir = datasets.tweets_task_dir(tempfile.mkdtemp(prefix="bench_e2e_"), train_size=n, dev_size=500,
                                        test_size=10)
    task = SentencePredictionTask(glue.get_task("tsv", data_dir))
    examples, dev = task.examples("train"), task.examples("dev")
    texts = [e.text_a for e in examples]
    labels = np.array([task.labels.index(e.label) for e in examples], np.int32)
    steps = n // bs
    model_dir = datasets.minilm_dir()
    pre = bert_tf.BertPreprocessor(os.path.join(model_dir, "vocab.txt"), seq_length=args.seq_length,
                                   dynamic_padding=True)
    lengths = pre.tokenize(tf.constant(texts)).row_lengths().numpy() + 2
    print(f"\nfine-tuning: one epoch of {steps * bs} real tweets (3 classes), batch {bs}, seq_length "
          f"{args.seq_length}, MiniLM-L6-H384 size, float32; wordpieces with [CLS]/[SEP]: mean {lengths.mean():.1f}, "
          f"max {lengths.max()}; {w} untimed warm-up steps each", flush=True)

    # ours: finetune.py's pipeline (bucketing + dynamic padding) and the shared Trainer
    keras.utils.set_random_seed(0)
    pretrained = bert_tf.from_pretrained(model_dir)
    model = task.build_model(pretrained.encoder, pre)
    marks = []
    trainer = Trainer(model, create_optimizer("adamw", 1e-4, w + steps, steps // 10), task.compute_loss,
                      model_dir=tempfile.mkdtemp(prefix="bench_e2e_run_"), num_train_steps=w,
                      steps_per_loop=w, save_checkpoints_steps=None, global_batch_size=bs,
                      checkpoint_dataset_iterator=False, print_fn=lambda s: None,
                      loop_end_fn=lambda *a: marks.append(time.perf_counter()))
    dataset = task.build_train_dataset(model, examples, bs, seed=0, bucket_window=32)
    trainer.train(dataset)  # warm-up (tracing)
    trainer.steps_per_loop = steps
    trainer.num_train_steps = w + steps
    t = time.perf_counter()
    trainer.train(dataset)
    ours = steps * bs / (marks[-1] - t)
    correct = 0
    for i in range(0, len(dev), 100):
        chunk = dev[i:i + 100]
        pred = model(tf.constant([e.text_a for e in chunk])).numpy().argmax(-1)
        correct += sum(task.labels[p] == e.label for p, e in zip(pred, chunk))
    print(f"  bert_tf (bucketed, dynamic padding)  {ours:8.1f} examples/s   dev accuracy after the epoch "
          f"{correct / len(dev):.3f} (majority {datasets.majority_baseline([e.label for e in dev]):.3f})", flush=True)

    # keras-hub: BertTextClassifier.fit on raw strings, its default compile (XLA "auto"), AdamW
    keras.utils.set_random_seed(0)
    kh = _keras_hub_classifier(pretrained.config, os.path.join(model_dir, "vocab.txt"), args.seq_length)
    kh.compile(optimizer=keras.optimizers.AdamW(1e-4, weight_decay=0.01, epsilon=1e-6, global_clipnorm=1.0))
    ds = tf.data.Dataset.from_tensor_slices((texts, labels)).shuffle(n, seed=0).repeat()
    ds = ds.batch(bs, drop_remainder=True)
    kh.fit(ds, steps_per_epoch=w, epochs=1, verbose=0)  # warm-up (tracing, XLA)
    t = time.perf_counter()
    kh.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    theirs = steps * bs / (time.perf_counter() - t)
    print(f"  keras-hub BertTextClassifier.fit     {theirs:8.1f} examples/s")
    print(f"  ratio ours/keras-hub = {ours / theirs:.2f}x  (target >= 2x)")


if __name__ == "__main__":
    main()
