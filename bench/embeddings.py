r"""Sentence embeddings: ours vs sentence-transformers, side by side in one run, on the real MiniLM.

    .venv/bin/python bench/embeddings.py [--sentences=512] [--batch_sizes=1,32,128] [--finetune]

Speed: the same real sentences (news + Wikipedia, `fixtures.datasets.real_sentences`), raw strings in, embeddings
out, the same batch sizes and threads: ours `BertSentenceEmbedder.embed` (in-graph tokenizer, each batch padded
to its longest text) against `SentenceTransformer(<MiniLM dir>).encode` (PyTorch, CPU). Both sort by length
before batching. Each side runs once to warm up, then the best of `--repeats` timed passes; prints sentences/s,
the ratio and the largest difference of the embeddings, then each side's share of this CPU's measured matmul peak
(encoder FLOPs on the real tokens only, `bert_tf.training.flops`).

`--bfloat16`: also ours with the encoder computing in bfloat16 (`model.with_compute_dtype("bfloat16")`, the
copy that `--serving_dtype=bfloat16` exports: matmuls in bfloat16; weights, LayerNorm, softmax, outputs float32),
against the float32 sentence-transformers run (its default) and against sentence-transformers in bfloat16
(`model_kwargs={"torch_dtype": torch.bfloat16}`), each with the smallest cosine to the float32 embeddings:
outside the 1e-5 parity by construction, it says what a user who accepts bfloat16's rounding gets on a CPU with
AVX512-BF16/AMX.

`--finetune`: Spearman correlation of cosines with the human ratings on the 105 held-out Lee document pairs
(documents 35-49), before and after fine-tuning ours with the cosine loss on the 595 pairs among documents 0-34
(`trainers/finetune.py --task=embedding`, run as a program; 1 epoch, batch 16, learning rate 2e-5).
"""

import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import torch  # noqa: E402
from absl import app, flags  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

from bert_tf.tasks.embedding import BertSentenceEmbedder  # noqa: E402
from bert_tf.training import flops  # noqa: E402
from fixtures import datasets, embedding_pairs  # noqa: E402

flags.DEFINE_integer("sentences", 512, "Real sentences embedded per pass.")
flags.DEFINE_list("batch_sizes", ["1", "32", "128"], "Batch sizes (the same on both sides).")
flags.DEFINE_integer("repeats", 2, "Timed passes per side and batch size (the best is reported).")
flags.DEFINE_integer("threads", 2, "Intra-op threads on both sides.")
flags.DEFINE_bool("bfloat16", False, "Also time ours computing in bfloat16 (cosine to sentence-transformers).")
flags.DEFINE_bool("finetune", False, "Also Spearman on the held-out Lee pairs before/after fine-tuning ours.")
FLAGS = flags.FLAGS


def _best_rate(fn, texts, repeats):
    fn(texts[:64])  # warm-up: traces / allocates
    best = min(_timed(fn, texts) for _ in range(repeats))
    return len(texts) / best


def _timed(fn, texts):
    start = time.perf_counter()
    fn(texts)
    return time.perf_counter() - start


def speed(minilm):
    texts = datasets.real_sentences(FLAGS.sentences)
    ours = BertSentenceEmbedder.from_pretrained(minilm)
    ours_bf16 = ours.with_compute_dtype("bfloat16") if FLAGS.bfloat16 else None
    theirs_bf16 = (SentenceTransformer(minilm, device="cpu", model_kwargs={"torch_dtype": torch.bfloat16})
                   if FLAGS.bfloat16 else None)
    theirs = SentenceTransformer(minilm, device="cpu")
    # Only the encoder's FLOPs on the real tokens count (no padding): a share of the measured matmul peak that
    # bounds any speed-up at the same arithmetic.
    lengths = np.asarray(theirs.preprocess(texts)["attention_mask"]).sum(1)
    per_sentence = np.mean([flops.bert_encoder_forward_flops(ours.encoder.config, int(n)) for n in lengths])
    peak = flops.measure_peak_flops()
    print(f"{len(texts)} real sentences ({lengths.mean():.1f} tokens on average, {per_sentence / 1e9:.3f} encoder "
          f"GFLOP each), {FLAGS.threads} threads each side, best of {FLAGS.repeats}; this CPU's measured matmul "
          f"peak {peak / 1e9:.1f} GFLOP/s")
    print(f"{'batch':>5} | {'ours sent/s':>11} | {'sentence-transformers sent/s':>28} | {'ratio':>5} | max |diff| | "
          f"share of peak: ours, sentence-transformers, 2x sentence-transformers")
    for batch in [int(b) for b in FLAGS.batch_sizes]:
        mine = _best_rate(lambda t: ours.embed(t, batch_size=batch), texts, FLAGS.repeats)
        reference = lambda t: theirs.encode(t, batch_size=batch, show_progress_bar=False)  # noqa: E731
        ref = _best_rate(reference, texts, FLAGS.repeats)
        diff = np.abs(ours.embed(texts, batch_size=batch) - reference(texts)).max()
        share = [rate * per_sentence / peak for rate in (mine, ref, 2 * ref)]
        print(f"{batch:>5} | {mine:>11.1f} | {ref:>28.1f} | {mine / ref:>4.2f}x | {diff:.1e}    | "
              + ", ".join(f"{x:.0%}" for x in share), flush=True)
        if ours_bf16 is not None:
            fast = _best_rate(lambda t: ours_bf16.embed(t, batch_size=batch), texts, FLAGS.repeats)
            cosine = _min_cosine(ours_bf16.embed(texts, batch_size=batch), reference(texts))
            print(f"{batch:>5} | {fast:>11.1f} | {'(ours bfloat16 / float32 ref)':>28} | "
                  f"{fast / ref:>4.2f}x | smallest cosine to the float32 reference {cosine:.6f}", flush=True)
            theirs_fast = lambda t: theirs_bf16.encode(t, batch_size=batch, show_progress_bar=False)  # noqa: E731
            ref_fast = _best_rate(theirs_fast, texts, FLAGS.repeats)
            cosine = _min_cosine(theirs_fast(texts).astype(np.float32), reference(texts))
            print(f"{batch:>5} | {fast:>11.1f} | {ref_fast:>28.1f} | {fast / ref_fast:>4.2f}x | both bfloat16; "
                  f"theirs' smallest cosine to the float32 reference {cosine:.6f}", flush=True)


def _min_cosine(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


def _finetune(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "trainers", "finetune.py"), "--task=embedding"]
                          + list(args), capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-3000:])


def spearman_before_after(minilm):
    work = tempfile.mkdtemp(prefix="bench_embeddings_")
    data_dir = embedding_pairs.lee_task_dir(os.path.join(work, "data"))
    common = [f"--data_dir={data_dir}", f"--init_checkpoint={minilm}", "--do_eval"]
    _finetune(*common, f"--model_dir={work}/before")
    start = time.time()
    _finetune(*common, f"--model_dir={work}/after", "--do_train", "--train_batch_size=16", "--learning_rate=2e-5",
              "--num_train_epochs=1")
    minutes = (time.time() - start) / 60
    for name in ("before", "after"):
        results = json.load(open(os.path.join(work, name, "eval_results.json")))
        print(f"held-out Lee pairs (105), {name} fine-tuning: Spearman {results['test_spearman']:.4f}, "
              f"Pearson {results['test_pearson']:.4f}")
    print(f"(fine-tuning on 595 pairs, 1 epoch, took {minutes:.1f} min; outputs in {work})")


def main(argv):
    del argv
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    torch.set_num_threads(FLAGS.threads)
    minilm = datasets.minilm_dir()
    speed(minilm)
    if FLAGS.finetune:
        spearman_before_after(minilm)


if __name__ == "__main__":
    app.run(main)
