"""Benchmark: bert_tf.BertPreprocessor vs Hugging Face `tokenizers` on real sentences.

Both tokenize and pack >= 20k real English sentences (fixtures.datasets) to 128
tokens with the real MiniLM uncased vocab, in batches of 1000, in one process:

* ours: `BertPreprocessor(vocab.txt, seq_length=128)` called in a
  `tf.function` with a `[None]` string signature (Python list -> tf.constant
  included in the timing);
* HF: `tokenizers.Tokenizer.from_file(tokenizer.json)` with truncation and
  padding to 128, `encode_batch` (Rust, uses all cores).

Prints sentences/s for each (best of --repeats passes), the ratio, and how
often the two (and Google's reference rules) give identical
input_ids/attention_mask/token_type_ids.

    .venv/bin/python bench/preprocess.py [--batch_size 1000] [--repeats 3]
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
flags.DEFINE_integer("batch_size", 1000, "Sentences per batch.")
flags.DEFINE_integer("seq_length", 128, "Packed length.")
flags.DEFINE_integer("repeats", 3, "Timed passes over the data for each tokenizer (best is reported).")
flags.DEFINE_integer("num_sentences", 0, "Use only this many sentences (0 = all, >= 20k).")
flags.DEFINE_bool("check_google", True, "Also compare with the plain-Python Google reference rules.")


def _best_rate(fn, n, repeats):
    """(best wall-clock sentences/s, best sentences per CPU-second of this process)."""
    fn()  # warm-up (tracing, thread pools)
    best, best_cpu = 0.0, 0.0
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        best = max(best, n / (time.perf_counter() - t0))
        best_cpu = max(best_cpu, n / max(time.process_time() - c0, 1e-9))
    return best, best_cpu


def main(argv):
    del argv
    import numpy as np
    import tensorflow as tf
    from tokenizers import Tokenizer

    from fixtures import datasets
    from bert_tf.text.preprocessor import BertPreprocessor

    sentences = datasets.real_sentences()
    if FLAGS.num_sentences:
        sentences = sentences[: FLAGS.num_sentences]
    n, bs, L = len(sentences), FLAGS.batch_size, FLAGS.seq_length
    batches = [sentences[i : i + bs] for i in range(0, n, bs)]
    model_dir = datasets.minilm_dir()
    print(f"{n} real sentences (mean {sum(map(len, sentences)) / n:.0f} chars), batch {bs}, seq_length {L}, "
          f"{os.cpu_count()} CPU cores")

    pre = BertPreprocessor(os.path.join(model_dir, "vocab.txt"), lower_case=True, seq_length=L)
    pack = tf.function(lambda s: pre(s), input_signature=[tf.TensorSpec([None], tf.string)])
    ours_out = []

    def run_ours():
        ours_out.clear()
        for b in batches:
            ours_out.append(pack(tf.constant(b)))

    hf = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    hf.enable_truncation(max_length=L)
    hf.enable_padding(length=L, pad_id=0, pad_token="[PAD]")
    hf_out = []

    def run_hf():
        hf_out.clear()
        for b in batches:
            hf_out.extend(hf.encode_batch(b))

    ours_rate, ours_cpu = _best_rate(run_ours, n, FLAGS.repeats)
    hf_rate, hf_cpu = _best_rate(run_hf, n, FLAGS.repeats)
    print(f"bert_tf BertPreprocessor (tf.function): {ours_rate:10,.0f} sentences/s "
          f"({ours_cpu:,.0f} per CPU-second)")
    print(f"HF tokenizers encode_batch            : {hf_rate:10,.0f} sentences/s "
          f"({hf_cpu:,.0f} per CPU-second)")
    print(f"ratio ours / HF                       : {ours_rate / hf_rate:10.2f}x "
          f"(per CPU-second: {ours_cpu / hf_cpu:.2f}x)")

    ours = {k: np.concatenate([o[k].numpy() for o in ours_out]) for k in ours_out[0]}
    hf_ids = np.array([e.ids for e in hf_out])
    hf_mask = np.array([e.attention_mask for e in hf_out])
    hf_types = np.array([e.type_ids for e in hf_out])
    same = (
        (ours["input_word_ids"] == hf_ids).all(1)
        & (ours["input_mask"] == hf_mask).all(1)
        & (ours["input_type_ids"] == hf_types).all(1)
    )
    print(f"identical to HF: {same.mean():.6f} ({same.sum()}/{n}; differing: {n - same.sum()})")
    for i in np.flatnonzero(~same)[:5]:
        col = int(np.flatnonzero(ours["input_word_ids"][i] != hf_ids[i])[0])
        print(f"  #{i} from token {col}: ours {ours['input_word_ids'][i][col:col + 4].tolist()} "
              f"HF {hf_ids[i][col:col + 4].tolist()}  {sentences[i][:80]!r}")

    if FLAGS.check_google:
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        from google_reference_tokenizer import GoogleReferenceTokenizer

        ref = GoogleReferenceTokenizer.from_file(os.path.join(model_dir, "vocab.txt"), lower_case=True)
        want = np.array([ref.pack(s, seq_length=L)[0] for s in sentences])
        agree = (ours["input_word_ids"] == want).all(1)
        print(f"identical to Google's rules (Python reference): {agree.mean():.6f} ({agree.sum()}/{n})")


if __name__ == "__main__":
    app.run(main)
