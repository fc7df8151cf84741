"""Benchmark: pretraining records, the local tool and the Beam pipeline, on one real corpus.

The corpus is the project's real English prose (fixtures.datasets: news + Wikipedia),
repeated with its documents reshuffled per copy until it reaches --megabytes, split
over --num_files files. Both programs run as subprocesses with Google's flags
(dupe factor 10, seq 128, 20 predictions, masked_lm_prob 0.15, seed 12345):

* local: `trainers/create_pretraining_data.py --input_file=<files> --output_file=<one per
  file, comma-separated>` (Google's flags only; workers default to the CPUs available);
* Beam: the same plus `--runner=FnApiRunner --direct_num_workers=2
  --direct_running_mode=multi_processing --num_output_shards=<num_files>`.

Prints for each: instances, wall seconds, instances/s, CPU seconds (user+sys of the
program and every process it waited for) and instances per CPU-second, peak RSS summed
over the process tree (sampled every 0.2 s), and for Beam the peak RSS of each SDK worker
and of the runner; then whether the two wrote the same multiset of records, the ratio
to the anchor figure (Google's create_pretraining_data.py: 1,764 instances/s on 54 MB,
this 2-core machine) and Beam/local. With --megabytes_small, Beam also runs on a smaller
corpus, to show its per-worker memory does not grow with the corpus.

    .venv/bin/python bench/pretraining_data.py [--megabytes 54] [--megabytes_small 14] [--num_files 4]
        [--beam_only_megabytes 108] [--beam_write_to_tfrecord]

Wall-clock figures are noisy when other work shares the cores; CPU seconds less so.
"""

import collections
import glob
import hashlib
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_float("megabytes", 54, "Corpus size (MB of text).")
flags.DEFINE_float("megabytes_small", 14, "Second, smaller corpus for Beam's memory (0 = skip).")
flags.DEFINE_list("beam_only_megabytes", [], "More corpus sizes (MB) to run only Beam on (its memory).")
flags.DEFINE_integer("num_files", 4, "Input files (and output files/shards).")
flags.DEFINE_integer("beam_workers", 2, "--direct_num_workers for Beam.")
flags.DEFINE_bool("run_local", True, "Run the local tool.")
flags.DEFINE_bool("run_beam", True, "Run the Beam pipeline.")
flags.DEFINE_bool("beam_write_to_tfrecord", False,
                  "Beam writes through WriteToTFRecord (a shuffle; FnApiRunner keeps it in memory) instead of "
                  "task-owned shards.")
flags.DEFINE_string("work_dir", None, "Where corpora and records go (default: a temporary directory).")

ANCHOR = 1764.0  # Google's create_pretraining_data.py, instances/s, 54 MB, dupe 10, seq 128 (issue #14)
PROGRAM = os.path.join(ROOT, "trainers", "create_pretraining_data.py")


def make_corpus(directory, megabytes, num_files, seed=0):
    from fixtures import datasets

    text = open(datasets.pretraining_corpus_file(), encoding="utf-8").read()
    docs = [d for d in text.split("\n\n") if d.strip()]
    rng = random.Random(seed)
    target = int(megabytes * 1e6)
    os.makedirs(directory, exist_ok=True)
    files = [open(os.path.join(directory, f"part-{i:03d}.txt"), "w", encoding="utf-8") for i in range(num_files)]
    written = 0
    k = 0
    while written < target:
        rng.shuffle(docs)
        for d in docs:
            data = d + "\n\n"
            files[k % num_files].write(data)
            k += 1
            written += len(data.encode("utf-8"))
            if written >= target:
                break
    for f in files:
        f.close()
    return sorted(glob.glob(os.path.join(directory, "part-*.txt"))), written


def _tree(pid):
    out = [pid]
    for p in out:
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    out.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


_TICK = os.sysconf("SC_CLK_TCK")


def _rss_and_name(pid):
    """(RSS bytes, command line, CPU seconds so far) of a process."""
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) * 1024
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return rss, cmd, (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, StopIteration, IndexError, ValueError):
        return 0, "", 0.0


def run_measured(cmd):
    """Runs cmd; returns (rc, output, wall s, cpu s, peak summed RSS, {pid: (peak RSS, cmd, CPU s seen)})."""
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    peak = [0]
    per = {}
    done = threading.Event()

    def sample():
        while not done.is_set():
            total = 0
            for p in _tree(proc.pid):
                rss, name, cpu_s = _rss_and_name(p)
                total += rss
                old = per.get(p, (0, "", 0.0))
                if name:
                    per[p] = (max(rss, old[0]), name, max(cpu_s, old[2]))
            peak[0] = max(peak[0], total)
            done.wait(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    rc = proc.wait()
    done.set()
    th.join()
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    log.seek(0)
    text = log.read()
    return rc, text, wall, cpu, peak[0], per


def record_digests(paths):
    from bert_tf.pretraining.sampling import _varint  # noqa: F401 (module import check)

    out = collections.Counter()
    for p in paths:
        with open(p, "rb") as f:
            data = f.read()
        i = 0
        while i < len(data):
            n = int.from_bytes(data[i:i + 8], "little")
            out[hashlib.sha1(data[i + 12:i + 12 + n]).digest()] += 1
            i += 16 + n
    return out


def _instances(text):
    for line in text.splitlines()[::-1]:
        if line.startswith("done:"):
            return int(line.split("instances=")[1].split()[0])
    return None


def _summary(name, mb, res, extra=""):
    rc, text, wall, cpu, peak, _ = res
    n = _instances(text)
    if rc != 0 or n is None:
        print(f"{name}: FAILED rc={rc}\n{text[-3000:]}")
        return None
    print(f"{name:>24}: {mb:6.1f} MB  {n:>9,} instances  wall {wall:7.1f} s  {n / wall:8,.0f} inst/s  "
          f"CPU {cpu:7.1f} s  {n / cpu:8,.0f} inst/CPU-s  peak RSS (sum) {peak / 2**20:7,.0f} MiB{extra}")
    return n / wall


def main(argv):
    del argv
    from fixtures import datasets

    vocab = os.path.join(datasets.minilm_dir(), "vocab.txt")
    work = FLAGS.work_dir or tempfile.mkdtemp(prefix="bench_pretraining_data_")
    google = [f"--vocab_file={vocab}", "--do_lower_case=True", "--max_seq_length=128",
              "--max_predictions_per_seq=20", "--masked_lm_prob=0.15", "--random_seed=12345", "--dupe_factor=10"]
    print(f"cores available: {len(os.sched_getaffinity(0))}; load average at start: {os.getloadavg()}")
    sizes = [FLAGS.megabytes] + ([FLAGS.megabytes_small] if FLAGS.megabytes_small else [])
    sizes += [float(x) for x in FLAGS.beam_only_megabytes]
    rates = {}
    for mb in sizes:
        corpus = os.path.join(work, f"corpus-{mb:g}MB")
        files, nbytes = make_corpus(corpus, mb, FLAGS.num_files)
        print(f"corpus: {nbytes / 1e6:.1f} MB in {len(files)} files ({corpus})")
        n = len(files)
        local_dir, beam_dir = os.path.join(work, f"local-{mb:g}"), os.path.join(work, f"beam-{mb:g}")
        local_outs = [os.path.join(local_dir, f"pt-{i:05d}-of-{n:05d}.tfrecord") for i in range(n)]
        digests = {}
        if FLAGS.run_local and mb == FLAGS.megabytes:
            os.makedirs(local_dir, exist_ok=True)
            res = run_measured([sys.executable, PROGRAM, f"--input_file={','.join(files)}",
                                f"--output_file={','.join(local_outs)}", *google])
            procs = sorted(((rss, cmd, c) for rss, cmd, c in res[5].values() if rss), reverse=True)
            extra = f"\n{'':>26}processes' peak RSS, CPU: " + ", ".join(
                f"{'main' if PROGRAM in cmd else 'worker'} {rss / 2**20:,.0f} MiB {c:.1f} s" for rss, cmd, c in procs)
            rates["local"] = _summary("local tool", nbytes / 1e6, res, extra)
            digests["local"] = record_digests(local_outs)
        if FLAGS.run_beam:
            res = run_measured([sys.executable, PROGRAM, "--runner=FnApiRunner",
                                f"--direct_num_workers={FLAGS.beam_workers}",
                                "--direct_running_mode=multi_processing", f"--input_file={corpus}/part-*.txt",
                                f"--output_file={beam_dir}/pt", f"--num_output_shards={n}", *google,
                                f"--beam_write_to_tfrecord={FLAGS.beam_write_to_tfrecord}"])
            per = res[5]
            workers = sorted(((rss, c) for rss, cmd, c in per.values() if "sdk_worker_main" in cmd), reverse=True)
            runner = max(((rss, c) for rss, cmd, c in per.values() if PROGRAM in cmd), default=(0, 0.0))
            extra = (f"\n{'':>26}Beam SDK workers' peak RSS, CPU: "
                     f"{', '.join(f'{w / 2**20:,.0f} MiB {c:.1f} s' for w, c in workers)};"
                     f" runner process {runner[0] / 2**20:,.0f} MiB {runner[1]:.1f} s")
            rates[f"beam-{mb:g}"] = _summary(f"Beam FnApiRunner x{FLAGS.beam_workers}", nbytes / 1e6, res, extra)
            digests["beam"] = record_digests(sorted(glob.glob(os.path.join(beam_dir, "pt-*.tfrecord"))))
        if "local" in digests and "beam" in digests:
            same = digests["local"] == digests["beam"]
            print(f"{'records':>24}: local {sum(digests['local'].values()):,}, Beam {sum(digests['beam'].values()):,}:"
                  f" {'the same multiset' if same else 'DIFFERENT'}")
        shutil.rmtree(local_dir, ignore_errors=True)
        shutil.rmtree(beam_dir, ignore_errors=True)
    if rates.get("local"):
        print(f"local tool: {rates['local'] / ANCHOR:.1f}x the anchor (Google's tool, {ANCHOR:,.0f} instances/s)"
              f" [target >= 10x]")
        key = f"beam-{FLAGS.megabytes:g}"
        if rates.get(key):
            print(f"Beam / local on the same cores: {rates[key] / rates['local']:.2f} [target >= 0.7]")
    if not FLAGS.work_dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
