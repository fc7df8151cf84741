"""Does the fast path cost accuracy? Fine-tuning on real labelled text, three ways, several seeds.

The real MiniLM-L6-H384 weights fine-tuned on real tweets (negative/neutral/positive,
fixtures.datasets.tweets_task_dir) with trainers/finetune.py, each run a fresh process:

* random     -- float32, random batches, each padded to its longest (finetune.py's default);
* bucketed   -- float32, --bucket_window=32 (length bucketing) + each batch padded to its longest;
* fixed      -- float32, every batch padded to --max_seq_length (google-research/bert's way);
* bf16       -- bucketed, --mixed_precision=mixed_bfloat16 (the log says whether the CPU has native bf16).

Same data, learning rate, epochs and seeds for each; dev and test accuracy are reported as
mean +- sample standard deviation over the seeds, so "within noise" can be read off directly,
together with training examples/s (wall clock, machine possibly shared).

    .venv/bin/python bench/accuracy.py [--train 2048] [--seeds 1,2,3] [--configs random,bucketed,fixed,bf16]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CONFIGS = {
    "random": ["--dynamic_padding"],
    "bucketed": ["--dynamic_padding", "--bucket_window=32"],
    "fixed": ["--nodynamic_padding"],
    "bf16": ["--dynamic_padding", "--bucket_window=32", "--mixed_precision=mixed_bfloat16"],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=2048, help="training tweets")
    parser.add_argument("--dev", type=int, default=1000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--configs", default="random,bucketed,fixed,bf16")
    args = parser.parse_args()

    import numpy as np

    from fixtures import datasets
    from bert_tf.training.distribute import cpu_has_native_bf16

    minilm = datasets.minilm_dir()
    work = tempfile.mkdtemp(prefix="bench_accuracy_")
    data_dir = datasets.tweets_task_dir(os.path.join(work, "tweets"), train_size=args.train,
                                        dev_size=args.dev, test_size=args.test)
    seeds = [int(s) for s in args.seeds.split(",")]
    configs = args.configs.split(",")
    print(f"real tweets: {args.train} train / {args.dev} dev / {args.test} test, MiniLM-L6-H384 real weights, "
          f"{args.epochs:g} epoch(s), lr {args.learning_rate:g}, batch 32, max_seq_length {args.max_seq_length}; "
          f"CPU native bf16: {cpu_has_native_bf16()}", flush=True)
    results = {c: [] for c in configs}
    for seed in seeds:
        for name in configs:
            model_dir = os.path.join(work, f"{name}_{seed}")
            cmd = [sys.executable, os.path.join(ROOT, "trainers", "finetune.py"), "--task=tsv",
                   f"--data_dir={data_dir}", f"--init_checkpoint={minilm}", f"--model_dir={model_dir}",
                   "--do_train", "--do_eval", "--do_predict", f"--max_seq_length={args.max_seq_length}",
                   "--train_batch_size=32", "--eval_batch_size=64", f"--learning_rate={args.learning_rate}",
                   f"--num_train_epochs={args.epochs}", "--steps_per_loop=16", f"--seed={seed}"] + CONFIGS[name]
            t = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            wall = time.perf_counter() - t
            if proc.returncode:
                sys.exit(f"{name} seed {seed} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
            res = json.load(open(os.path.join(model_dir, "eval_results.json")))
            speeds = [float(x) for x in re.findall(r"([\d.]+) examples/s", proc.stdout)]
            res["examples_per_s"] = max(speeds) if speeds else float("nan")
            results[name].append(res)
            print(f"  {name:9s} seed {seed}: dev {res['accuracy']:.3f}  test {res['test_accuracy']:.3f}  "
                  f"train {res['examples_per_s']:.1f} ex/s  ({wall:.0f} s in all)", flush=True)

    print("\nmean +- sd over seeds", seeds)
    for name, rows in results.items():
        dev = np.array([r["accuracy"] for r in rows])
        test = np.array([r["test_accuracy"] for r in rows])
        sd = (lambda a: a.std(ddof=1) if len(a) > 1 else float("nan"))
        print(f"  {name:9s} dev {dev.mean():.3f} +- {sd(dev):.3f}   test {test.mean():.3f} +- {sd(test):.3f}   "
              f"train {np.mean([r['examples_per_s'] for r in rows]):.1f} ex/s")
    if "bucketed" in results:
        base = np.array([r["test_accuracy"] for r in results["bucketed"]])
        for name in results:
            if name != "bucketed":
                other = np.array([r["test_accuracy"] for r in results[name]])
                print(f"  test accuracy {name} - bucketed: {other.mean() - base.mean():+.3f}")


if __name__ == "__main__":
    main()
