"""Benchmark: learning a WordPiece vocabulary, ours (local and Beam) vs Hugging Face `tokenizers`, one corpus.

The corpus is the project's real English prose (fixtures.datasets.pretraining_corpus_file: news + Wikipedia,
~2.9 MB); its last --held_out_fraction of documents is held out, the rest is split over --num_files files.
Each learner runs as its own program, end to end (start-up, reading, counting, learning, writing vocab.txt):

* ours, local: `trainers/build_vocab.py --input_file=<files> --vocab_size=V --do_lower_case` (counting in
  `--num_workers` processes, default: the CPUs);
* ours, Beam: the same plus `--runner=FnApiRunner --direct_num_workers=2 --direct_running_mode=multi_processing`;
* Hugging Face: `tokenizers.BertWordPieceTokenizer(clean_text, handle_chinese_chars, lowercase)` `.train(files,
  vocab_size=V, min_frequency=2, special_tokens=[PAD] [UNK] [CLS] [SEP] [MASK])`, then `save_model`.

Per learner: wall seconds (for ours also the part after start-up and imports: counting + learning + writing,
from the program's own `wrote ... in S s` line), peak RSS summed over its process tree (sampled every 0.1 s),
vocabulary size, and on the held-out text the [UNK] rate (share of words that become [UNK]) and wordpieces per
word. Both vocabularies are applied with OUR tokenizer (`bert_tf.BertTokenizer`, Google's rules), so the
difference is the vocabulary alone; Hugging Face's vocabulary is also applied with its own tokenizer, for
reference. Speed ratio printed as Hugging Face seconds / ours (>= 1: ours is at least as fast).

    .venv/bin/python bench/build_vocab.py [--vocab_size 8000] [--num_files 2] [--held_out_fraction 0.1]
    .venv/bin/python bench/build_vocab.py --run_beam=false --corpus_copies=25   # ~49 MB of input

--corpus_copies=K writes the training documents K times into each file: K times the bytes to read and count,
but the same distinct words (a real corpus of that size has more), so it measures how both sides scale in
reading and counting, not in learning. The fixed costs (start-up, learning from the counts) dominate at K=1.

Wall-clock figures are noisy when other work shares the cores.
"""

import os
import re
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("vocab_size", 8000, "Vocabulary size for every learner.")
flags.DEFINE_integer("num_files", 2, "Training files the corpus is split over.")
flags.DEFINE_float("held_out_fraction", 0.1, "Share of the documents held out for the [UNK] / pieces figures.")
flags.DEFINE_bool("run_beam", True, "Also run ours on Beam (FnApiRunner, 2 worker processes).")
flags.DEFINE_integer("corpus_copies", 1, "Times the training documents are written into the training files "
                     "(repeated text: more bytes to count, the same distinct words).")
flags.DEFINE_string("work_dir", None, "Where the corpus and the vocabularies go (default: a temporary dir).")

HF_TRAIN = """
import sys
from tokenizers import BertWordPieceTokenizer
out, vocab_size, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
tok = BertWordPieceTokenizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
tok.train(files, vocab_size=vocab_size, min_frequency=2, show_progress=False,
          special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
tok.save_model(out)
"""


def split_corpus(directory, num_files, held_out_fraction, copies=1):
    """The real corpus -> (training files, held-out lines), split at document boundaries; each training file
    holds its documents `copies` times."""
    from fixtures import datasets

    with open(datasets.pretraining_corpus_file(), encoding="utf-8") as f:
        documents = [d for d in f.read().split("\n\n") if d.strip()]
    cut = int(len(documents) * (1 - held_out_fraction))
    paths = [os.path.join(directory, f"train-{i}.txt") for i in range(num_files)]
    for i, path in enumerate(paths):
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(d + "\n\n" for d in documents[i:cut:num_files]) * copies)
    held_out = [line for d in documents[cut:] for line in d.split("\n") if line.strip()]
    return paths, held_out


def _tree_rss(pid):
    """RSS bytes summed over `pid` and its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) * 1024
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (OSError, StopIteration):
            continue
    return total


def run_measured(cmd):
    """Runs `cmd` -> (wall seconds, peak tree RSS bytes, output); exits on failure."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    peak, done = [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.communicate()[0]
    wall = time.time() - start
    done.set()
    sampler.join()
    if proc.returncode != 0:
        sys.exit(f"{cmd[:3]} failed ({proc.returncode}):\n{output[-3000:]}")
    return wall, peak[0], output


def held_out_figures(vocab_path, held_out):
    """(vocab size, [UNK] share of words, pieces per word) on `held_out` with our tokenizer."""
    import tensorflow as tf

    from bert_tf.text.tokenizer import BertTokenizer

    tok = BertTokenizer(vocab_path, lower_case=True)
    words = tok.split_words(tf.constant(held_out))[0].flat_values.shape[0]
    ids = tok(tf.constant(held_out)).flat_values.numpy()
    return tok.vocab_size, float((ids == tok.special_tokens["unk_id"]).sum()) / words, ids.size / words


def hf_own_figures(vocab_path, held_out):
    """The same figures with Hugging Face's own tokenizer on its vocabulary."""
    from tokenizers import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer(vocab_path, clean_text=True, handle_chinese_chars=True, lowercase=True)
    encodings = tok.encode_batch(held_out, add_special_tokens=False)
    words = sum(len(set(w for w in e.word_ids if w is not None)) for e in encodings)
    pieces = sum(len(e.ids) for e in encodings)
    unk = sum(e.tokens.count("[UNK]") for e in encodings)
    return unk / words, pieces / words


def main(argv):
    del argv
    work = FLAGS.work_dir or tempfile.mkdtemp(prefix="bench_vocab_")
    os.makedirs(work, exist_ok=True)
    files, held_out = split_corpus(work, FLAGS.num_files, FLAGS.held_out_fraction, FLAGS.corpus_copies)
    size_mb = sum(os.path.getsize(p) for p in files) / 1e6
    copies = f" ({FLAGS.corpus_copies} copies of the training documents)" if FLAGS.corpus_copies > 1 else ""
    print(f"corpus: {size_mb:.2f} MB in {len(files)} files{copies}; held out: {len(held_out)} lines; "
          f"vocab_size {FLAGS.vocab_size}; {os.cpu_count()} CPUs", flush=True)
    program = [sys.executable, os.path.join(ROOT, "trainers", "build_vocab.py"), f"--input_file={','.join(files)}",
               f"--vocab_size={FLAGS.vocab_size}", "--do_lower_case"]
    hf_dir = os.path.join(work, "hf")
    os.makedirs(hf_dir, exist_ok=True)
    runs = {"ours (local)": program + [f"--output_file={work}/ours_local.txt"]}
    if FLAGS.run_beam:
        runs["ours (Beam)"] = program + [f"--output_file={work}/ours_beam.txt", "--runner=FnApiRunner",
                                         "--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    runs["Hugging Face"] = [sys.executable, "-c", HF_TRAIN, hf_dir, str(FLAGS.vocab_size), *files]
    vocabs = {"ours (local)": f"{work}/ours_local.txt", "ours (Beam)": f"{work}/ours_beam.txt",
              "Hugging Face": f"{hf_dir}/vocab.txt"}
    results, work = {}, {}
    for name, cmd in runs.items():
        wall, rss, output = run_measured(cmd)
        results[name] = (wall, rss, *held_out_figures(vocabs[name], held_out))
        print(f"{name:14s} {wall:6.1f} s  peak RSS {rss / 2**20:6.0f} MiB  vocab {results[name][2]:5d}  "
              f"[UNK] {100 * results[name][3]:.3f}% of words  {results[name][4]:.3f} pieces/word "
              "(our tokenizer)", flush=True)
        wrote = re.search(r"^wrote .* in ([0-9.]+)s$", output, re.MULTILINE)
        if name.startswith("ours") and wrote:
            work[name] = float(wrote.group(1))
            print(f"{'':14s} of which counting + learning + writing {work[name]:.2f} s (the rest: interpreter "
                  "start-up, imports)", flush=True)
    hf_unk, hf_pieces = hf_own_figures(vocabs["Hugging Face"], held_out)
    print(f"Hugging Face vocab with its own tokenizer: [UNK] {100 * hf_unk:.3f}% of words, "
          f"{hf_pieces:.3f} pieces/word")
    if FLAGS.run_beam:
        same = open(vocabs["ours (local)"]).read() == open(vocabs["ours (Beam)"]).read()
        print(f"ours local == ours Beam: {same}")
    hf_wall = results["Hugging Face"][0]
    for name in [n for n in results if n.startswith("ours")]:
        print(f"speed ratio Hugging Face / {name}: {hf_wall / results[name][0]:.3f}x end to end; "
              f"{hf_wall / work[name]:.3f}x against our counting + learning + writing alone")


if __name__ == "__main__":
    app.run(main)
