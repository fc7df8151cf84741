"""Masked-LM / next-sentence pretraining records from raw text, at corpus scale.

Input: plain text, one sentence per line, a blank line between documents
(Google BERT's `create_pretraining_data.py` format). Output: TFRecord files of
`tf.train.Example`s with Google's features, so records made by Google's tool
train here and ours train with Google's `run_pretraining.py`:

| feature                | type    | shape                     |
|------------------------|---------|---------------------------|
| `input_ids`            | int64   | `[max_seq_length]`        |
| `input_mask`           | int64   | `[max_seq_length]`        |
| `segment_ids`          | int64   | `[max_seq_length]`        |
| `masked_lm_positions`  | int64   | `[max_predictions_per_seq]` (sorted, 0-padded) |
| `masked_lm_ids`        | int64   | `[max_predictions_per_seq]` (0-padded) |
| `masked_lm_weights`    | float   | `[max_predictions_per_seq]` (1.0 real, 0.0 pad) |
| `next_sentence_labels` | int64   | `[1]` (0 = B follows A, 1 = B is random) |

Sampling rules are Google's, on wordpiece ids from `bert_tf.BertPreprocessor`
(so ids equal the preprocessor's):

* per document, a target length of `max_seq_length - 3` tokens, or with
  probability `short_seq_prob` a uniform length in `[2, max_seq_length - 3]`;
* sentences are gathered into a chunk until the target is reached; segment A is
  the first `a_end` sentences (`a_end` uniform in `[1, len(chunk) - 1]`);
* with probability 0.5 (always, for a one-sentence chunk) B is taken from a
  random other document starting at a random sentence, and the unused sentences
  of the chunk are put back; otherwise B is the rest of the chunk;
* the pair is truncated by removing one token at a time from the longer side,
  from the front or the back with equal probability;
* `num_to_predict = min(max_predictions_per_seq, max(1, round(len * masked_lm_prob)))`
  positions are chosen in random order, never `[CLS]`/`[SEP]`; each becomes
  `[MASK]` 80%, stays 10%, becomes a uniformly random vocab id 10%; with whole
  word masking, a `##` piece joins the previous piece's group and groups that
  would overflow `num_to_predict` are skipped.

Beyond Google's rules (flags; Google's stays the default): `nsp=False` makes
one-segment instances for MLM-only training (`pack_documents`: the documents'
sentences run on, a [SEP] between documents, cut into full-length chunks);
`word_segmenter` (`bert_tf.text.word_segmentation`, e.g. jieba) makes
whole-word masking group the characters of one segmenter word, as Chinese
BERT-wwm does. The rules themselves live in `bert_tf.pretraining.sampling`
(pure Python), which the worker processes import alone.

Where this deviates from Google's tool, and why: Google loads the whole corpus,
makes `dupe_factor` passes over all documents, draws random-next documents from
the whole corpus and shuffles all instances in memory -- memory grows with
corpus size x `dupe_factor`. Here documents are streamed in *blocks* of about
`block_tokens` wordpieces (a final block smaller than half a block is merged
into the previous one). Within a block everything is Google's: documents are
shuffled, `dupe_factor` passes are made, random-next documents are drawn
uniformly from the block's documents, and the block's instances are shuffled
before they are written. So memory is bounded by one block (plus its serialized
instances), random-next documents come from a window of the corpus rather than
all of it, and the shuffle is per block (training input pipelines shuffle
again). With the default `block_tokens` (2 M wordpieces, several thousand
documents) the chance that a random-next document is the current one is
negligible, as in Google's tool.

Parallelism and determinism: input files are planned into tasks
(`plan_tasks`); a task's files are read in order and cut into blocks. Every
block has its own random stream, seeded from `(random_seed, task, block)`, and
its work is cut into fixed units (`block_units`: each dupe pass over a fixed
eighth of the block's documents, with a stream of its own). This process reads
and tokenizes (TensorFlow); worker processes (`num_workers`, default: the CPUs
available) make the units' instances in pure Python and send back framed
records; the block's instances are shuffled and written in order. So the
output depends only on the inputs, flags, seed and the number of output files
-- not on `num_workers` -- and the Beam pipeline (`bert_tf.pretraining.beam`),
which runs the same units, writes the same records.

Where the time went (cProfile, one process, 2.9 MB of real text, dupe factor
10, seq 128), before -> after this design: masking 54% -> 25% (`rng.sample`
-like partial shuffle instead of a generator and set checks), building and
serializing `tf.train.Example` protos 28% -> hand-written wire bytes
(`ExampleEncoder`), pair sampling 15% (truncation cut once), TFRecord framing
~1% (CRC32C via crcmod, in the workers), tokenization ~3% of the old total (now
~20% of the CPU, in the main process, overlapped with the workers). About 40 us
of CPU per instance in a worker, against ~100 us before (measured with the
same corpus and flags, no profiler); and parallel at any
corpus size, where before one input file meant one process.

Example (a tiny corpus; `python trainers/create_pretraining_data.py` wraps this):

>>> import os, tempfile
>>> from bert_tf.pretraining.data import create_pretraining_data
>>> d = tempfile.mkdtemp()
>>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", ".",
...          "dog", "ran", "a", "mat", "on"]
>>> _ = open(os.path.join(d, "vocab.txt"), "w").write("\\n".join(vocab) + "\\n")
>>> _ = open(os.path.join(d, "in.txt"), "w").write(
...     "the cat sat .\\nthe dog ran .\\n\\na cat sat on a mat .\\nthe dog sat .\\n")
>>> stats = create_pretraining_data(
...     [os.path.join(d, "in.txt")], [os.path.join(d, "out.tfrecord")],
...     os.path.join(d, "vocab.txt"), max_seq_length=16, dupe_factor=2, verbose=False)
>>> stats["documents"], stats["instances"] > 0
(2, True)
"""

from __future__ import annotations

import array
import collections
import concurrent.futures
import os
import pickle
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import tensorflow as tf

from bert_tf.pretraining.sampling import (  # noqa: F401  (the sampler's public names, re-exported)
    FEATURE_NAMES, ExampleEncoder, InstanceMaker, TFRecordFramer, VocabInfo, block_records, block_seed, block_units,
    create_masked_lm_predictions, create_pairs_from_document, new_stats, pack_documents, serialize_instance,
    split_joins, truncate_seq_pair)
from bert_tf.text.preprocessor import BertPreprocessor
from bert_tf.text.tokenizer import load_vocab
from bert_tf.text.word_segmentation import load_word_segmenter, segmenter_word_joins

DEFAULT_BLOCK_TOKENS = 2_000_000


def google_feature_spec(max_seq_length, max_predictions_per_seq):
    """The `tf.io.parse_single_example` spec of Google's `run_pretraining.py`.

    >>> sorted(google_feature_spec(128, 20))[:2]
    ['input_ids', 'input_mask']
    """
    return {
        "input_ids": tf.io.FixedLenFeature([max_seq_length], tf.int64),
        "input_mask": tf.io.FixedLenFeature([max_seq_length], tf.int64),
        "segment_ids": tf.io.FixedLenFeature([max_seq_length], tf.int64),
        "masked_lm_positions": tf.io.FixedLenFeature([max_predictions_per_seq], tf.int64),
        "masked_lm_ids": tf.io.FixedLenFeature([max_predictions_per_seq], tf.int64),
        "masked_lm_weights": tf.io.FixedLenFeature([max_predictions_per_seq], tf.float32),
        "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64),
    }


# ------------------------------------------------------------------ streaming
def read_documents(path, stats, open_fn=None):
    """Yields documents of `path` as lists of stripped sentence strings.

    Lines that are not valid UTF-8 are skipped and counted in
    `stats["skipped_non_utf8_lines"]`; blank lines separate documents.
    `open_fn(path)` opens the file for binary reading (default `tf.io.gfile.GFile`;
    the Beam pipeline passes Beam's `FileSystems.open`).
    """
    if open_fn is None:
        def open_fn(p):
            return tf.io.gfile.GFile(p, "rb")

    doc = []
    with open_fn(path) as f:
        for raw in f:
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                stats["skipped_non_utf8_lines"] += 1
                continue
            line = line.strip()
            if not line:
                if doc:
                    yield doc
                    doc = []
            else:
                doc.append(line)
    if doc:
        yield doc


class _BatchTokenizer:
    """`BertPreprocessor.tokenize` on batches of lines inside one tf.function.

    With `word_segmenter`, a piece that joins the previous piece's segmenter word
    (`segmenter_word_joins`) is returned as `~id` (see `sampling.split_joins`)."""

    def __init__(self, vocab_file, do_lower_case, word_segmenter=None):
        self.pre = BertPreprocessor(vocab_file, lower_case=do_lower_case)
        self.segment = load_word_segmenter(word_segmenter) if word_segmenter else None

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def tok(lines):
            r = self.pre.tokenize(lines)
            return r.flat_values, r.row_splits

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def tok_with_word_starts(lines):
            ids, starts, _ = self.pre.tokenizer.tokenize_with_word_offsets(lines)
            return ids.flat_values, ids.row_splits, starts.flat_values

        self._tok = tok
        self._tok_with_word_starts = tok_with_word_starts

    def __call__(self, lines):
        if self.segment is None:
            values, splits = self._tok(tf.constant(lines, dtype=tf.string))
            values = values.numpy().astype("int32")
            splits = splits.numpy()
            return [array.array("i", values[splits[i]:splits[i + 1]].tobytes()) for i in range(len(lines))]
        values, splits, starts = (t.numpy() for t in self._tok_with_word_starts(tf.constant(lines, tf.string)))
        out = []
        for i, line in enumerate(lines):
            lo, hi = splits[i], splits[i + 1]
            joins = segmenter_word_joins(line, starts[lo:hi], self.segment)
            out.append(array.array("i", [~int(t) if j else int(t) for t, j in zip(values[lo:hi], joins)]))
        return out


_TOKENIZERS = {}


def get_tokenizer(vocab_file, do_lower_case, word_segmenter=None):
    """A cached `_BatchTokenizer` (building one traces a tf.function: seconds)."""
    key = (os.path.abspath(str(vocab_file)), bool(do_lower_case), word_segmenter)
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = _BatchTokenizer(vocab_file, do_lower_case, word_segmenter)
    return _TOKENIZERS[key]


def vocab_info(vocab_file):
    """The sampler's `VocabInfo` of a BERT `vocab.txt` (checked: needs [MASK])."""
    return VocabInfo(load_vocab(vocab_file), vocab_file)


def tokenize_documents(docs, tokenizer, stats, batch_lines=8192):
    """Documents of strings -> documents of `array('i')` wordpiece ids, tokenizing
    lines in batches. Lines with no wordpieces are dropped; empty documents too."""
    pending = []
    n_lines = 0

    def flush():
        lines = [s for d in pending for s in d]
        ids = tokenizer(lines) if lines else []
        k = 0
        out = []
        for d in pending:
            sents = [x for x in ids[k:k + len(d)] if len(x)]
            stats["skipped_empty_lines"] += len(d) - len(sents)
            k += len(d)
            if sents:
                stats["documents"] += 1
                stats["sentences"] += len(sents)
                stats["tokens"] += sum(len(x) for x in sents)
                out.append(sents)
        return out

    for d in docs:
        pending.append(d)
        n_lines += len(d)
        if n_lines >= batch_lines:
            yield from flush()
            pending, n_lines = [], 0
    if pending:
        yield from flush()


def iter_blocks(documents, block_tokens):
    """Groups documents into blocks of >= `block_tokens` wordpieces; a final block
    under half that size is merged into the previous one."""
    ready = None
    current, size = [], 0
    for d in documents:
        current.append(d)
        size += sum(len(s) for s in d)
        if size >= block_tokens:
            if ready is not None:
                yield ready
            ready, current, size = current, [], 0
    if current:
        if ready is not None and size < block_tokens / 2:
            ready.extend(current)
        else:
            if ready is not None:
                yield ready
            ready = current
    if ready:
        yield ready


def iter_pairs(input_files, vocab_file, do_lower_case=True, max_seq_length=128,
               short_seq_prob=0.1, random_seed=12345, block_tokens=DEFAULT_BLOCK_TOKENS,
               dupe_factor=1, tokenizer=None, nsp=True, word_segmenter=None):
    """Unmasked instances, one pass of the sampling streamed in blocks: Google's
    pairs, or with `nsp=False` one-segment chunks packed to full length
    (`pack_documents`).

    Yields `(input_ids, segment_ids, is_random_next, joins)` (Python lists, no
    padding; `joins` marks the pieces that join the previous piece's
    `word_segmenter` word, all False without one) for
    `bert_tf.pretraining.masking` dynamic masking.
    """
    tokenizer = tokenizer or get_tokenizer(vocab_file, do_lower_case, word_segmenter)
    vocab = vocab_info(vocab_file)
    rng = random.Random(str(random_seed))
    stats = new_stats()

    def docs():
        for path in input_files:
            yield from read_documents(path, stats)

    cls_id, sep_id = vocab.cls_id, vocab.sep_id
    for block in iter_blocks(tokenize_documents(docs(), tokenizer, stats), block_tokens):
        rng.shuffle(block)
        out = []
        for _ in range(dupe_factor):
            if not nsp:
                for chunk in pack_documents(block, max_seq_length, sep_id, rng):
                    out.append(([cls_id, *chunk, sep_id], [0] * (len(chunk) + 2), False))
                continue
            for idx in range(len(block)):
                for a, b, is_random in create_pairs_from_document(
                        block, idx, max_seq_length, short_seq_prob, rng):
                    out.append(([cls_id, *a, sep_id, *b, sep_id], [0] * (len(a) + 2) + [1] * (len(b) + 1),
                                is_random))
        rng.shuffle(out)
        for ids, segments, is_random in out:
            ids, joins = split_joins(ids)
            yield ids, segments, is_random, joins


# ---------------------------------------------------------------- the tasks
def plan_tasks(input_files, output_files):
    """Assigns inputs to outputs so that every output file has one writer.

    With at least as many outputs as inputs, task `t` reads input `t` and writes
    round-robin to outputs `t, t + n_in, ...`; otherwise task `t` reads inputs
    `t, t + n_out, ...` in order and writes output `t`. Returns a list of
    `(inputs, outputs)`.
    """
    n_in, n_out = len(input_files), len(output_files)
    if n_in == 0:
        raise ValueError("no input files")
    if n_out == 0:
        raise ValueError("no output files")
    if n_out >= n_in:
        return [([input_files[t]], output_files[t::n_in]) for t in range(n_in)]
    return [(input_files[t::n_out], [output_files[t]]) for t in range(n_out)]


def task_blocks(inputs, settings, stats, tokenizer=None, open_fn=None):
    """The blocks of one task: its input files read in order, tokenized, grouped."""
    tokenizer = tokenizer or get_tokenizer(settings["vocab_file"], settings["do_lower_case"],
                                           settings["word_segmenter"])

    def docs():
        for path in inputs:
            yield from read_documents(path, stats, open_fn=open_fn)

    return iter_blocks(tokenize_documents(docs(), tokenizer, stats), settings["block_tokens"])

# ------------------------------------------------------ parallel local writer
# A worker process runs this (python -c): it loads the sampler module without the
# bert_tf package's __init__ (which imports Keras and TensorFlow), so a worker
# costs tens of MiB, and serves work units read from stdin as pickles.
_WORKER_MAIN = r"""
import os, pickle, sys, traceback, types
for name in ("bert_tf", "bert_tf.pretraining"):
    pkg = types.ModuleType(name)
    pkg.__path__ = [os.path.join(sys.argv[1], *name.split("."))]
    sys.modules[name] = pkg
from bert_tf.pretraining import sampling as pd
inp, out = sys.stdin.buffer, sys.stdout.buffer
sys.stdout = sys.stderr
pd._init_worker(*pickle.load(inp))
while True:
    try:
        args = pickle.load(inp)
    except EOFError:
        break
    try:
        res = (True, pd._worker_unit(*args))
    except BaseException as e:
        res = (False, f"{e!r}\n{traceback.format_exc()}")
    pickle.dump(res, out, protocol=pickle.HIGHEST_PROTOCOL)
    out.flush()
"""


class _WorkerPool:
    """Worker processes fed by one thread each from a shared queue (submit ->
    concurrent.futures.Future). Plain subprocesses, so a worker neither imports
    the caller's `__main__` nor the bert_tf package (see `_WORKER_MAIN`)."""

    def __init__(self, num_workers, settings, vocab):
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self._queue = queue.Queue()
        self._procs, self._threads = [], []
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        for _ in range(num_workers):
            p = subprocess.Popen([sys.executable, "-c", _WORKER_MAIN, root], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, env=env)
            pickle.dump((settings, vocab), p.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            p.stdin.flush()
            th = threading.Thread(target=self._serve, args=(p,), daemon=True)
            th.start()
            self._procs.append(p)
            self._threads.append(th)

    def _serve(self, proc):
        while True:
            item = self._queue.get()
            if item is None:
                return
            args, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                pickle.dump(args, proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                proc.stdin.flush()
                ok, value = pickle.load(proc.stdout)
            except (OSError, EOFError) as e:
                future.set_exception(RuntimeError(f"pretraining data worker {proc.pid} died: {e!r}"))
                return
            if ok:
                future.set_result(value)
            else:
                future.set_exception(RuntimeError(f"in pretraining data worker {proc.pid}: {value}"))

    def submit(self, *args):
        future = concurrent.futures.Future()
        self._queue.put((args, future))
        return future

    def shutdown(self):
        for _ in self._threads:
            self._queue.put(None)
        for p in self._procs:
            try:
                p.stdin.close()
            except OSError:
                pass
        for th in self._threads:
            th.join(timeout=60)
        for p in self._procs:
            try:
                p.wait(timeout=60)
            except Exception:  # noqa: BLE001
                p.kill()
        while not self._queue.empty():  # futures never served (an error stopped the run)
            item = self._queue.get_nowait()
            if item is not None:
                item[1].cancel()


class _Done:
    def __init__(self, value):
        self._value = value

    def result(self):
        return self._value


class TaskOutput:
    """The output files of one task, TFRecord-framed records dealt round-robin
    across them (continuing from block to block). `open_fn(path)` opens a file
    for binary writing (default `tf.io.gfile.GFile`)."""

    def __init__(self, paths, open_fn=None):
        if open_fn is None:
            def open_fn(p):
                return tf.io.gfile.GFile(p, "wb")

        self.paths = list(paths)
        self.files = [open_fn(p) for p in self.paths]
        self.counts = [0] * len(self.files)
        self.next = 0

    def write(self, framed, chunk=8192):
        n = len(self.files)
        for j in range(min(n, len(framed))):
            w = (self.next + j) % n
            part = framed[j::n] if n > 1 else framed
            for i in range(0, len(part), chunk):  # bounded copies, not one block-sized join
                self.files[w].write(b"".join(part[i:i + chunk]))
            self.counts[w] += len(part)
        self.next = (self.next + len(framed)) % n

    def close(self):
        for f in self.files:
            f.close()


def _write_tasks(tasks, settings, vocab, workers, stats, on_block=None, max_blocks_in_flight=1):
    """Runs `tasks` (`(task_index, inputs, outputs)`): this process reads and tokenizes (TensorFlow), worker
    processes make the instances of each block's units (pure Python); blocks are
    finished in order, so the records are those of `block_records`."""
    tokenizer = get_tokenizer(settings["vocab_file"], settings["do_lower_case"], settings["word_segmenter"])
    pool = tmpdir = None
    maker = InstanceMaker(settings, vocab)
    if workers > 1:
        pool = _WorkerPool(workers, settings, vocab)
        tmpdir = tempfile.mkdtemp(prefix="bert_tf_blocks_")
    in_flight = collections.deque()
    per_output = {}

    def finish(entry):
        kind = entry[0]
        if kind == "close":
            out = entry[1]
            out.close()
            per_output.update(zip(out.paths, out.counts))
            return
        _, out, rng, futures, path = entry
        framed = []
        for f in futures:
            recs, delta = f.result()
            framed.extend(recs)
            stats.update(delta)
        futures.clear()
        rng.shuffle(framed)
        out.write(framed)
        if path:
            os.remove(path)
        if on_block is not None:
            on_block()

    try:
        for t, inputs, outputs in tasks:
            out = TaskOutput(outputs)
            for b, block in enumerate(task_blocks(inputs, settings, stats, tokenizer)):
                rng = random.Random(block_seed(settings["random_seed"], t, b))
                rng.shuffle(block)
                units = block_units(len(block), settings["dupe_factor"])
                if pool is None:
                    futures = []
                    for unit in units:
                        delta = new_stats()
                        recs = maker.unit(block, t, b, *unit, delta)
                        futures.append(_Done(([maker.framer(r) for r in recs], dict(delta))))
                    path = None
                else:
                    path = os.path.join(tmpdir, f"block-{t}-{b}.pickle")
                    with open(path, "wb") as f:
                        pickle.dump(block, f, protocol=pickle.HIGHEST_PROTOCOL)
                    futures = [pool.submit(path, t, b, *unit) for unit in units]
                del block
                in_flight.append(("block", out, rng, futures, path))
                while sum(e[0] == "block" for e in in_flight) > max_blocks_in_flight:
                    finish(in_flight.popleft())
            in_flight.append(("close", out))
        while in_flight:
            finish(in_flight.popleft())
    finally:
        if pool is not None:
            pool.shutdown()
            shutil.rmtree(tmpdir, ignore_errors=True)
    return per_output


def run_task(task_index, inputs, outputs, settings, report=None):
    """Runs one task in this process (no workers): streams `inputs`, writes
    `outputs` (round-robin). Returns stats with `per_output`: the same records as
    that task within `create_pretraining_data`."""
    vocab = vocab_info(settings["vocab_file"])
    stats = new_stats()
    per_output = _write_tasks([(task_index, inputs, outputs)], settings, vocab, 1, stats)
    out = {k: stats[k] for k in new_stats()}
    out["per_output"] = per_output
    if report is not None:
        report(("progress", task_index, dict(out)))
    return out


def expand_input_files(spec):
    """Comma list of paths/globs -> sorted existing files (order of the list kept)."""
    files = []
    for pattern in [p.strip() for p in (spec if isinstance(spec, (list, tuple)) else str(spec).split(","))]:
        if not pattern:
            continue
        matches = sorted(tf.io.gfile.glob(pattern))
        if not matches:
            raise FileNotFoundError(f"--input_file pattern {pattern!r} matches no file")
        files.extend(matches)
    return files


def output_file_names(spec, num_output_shards=None):
    """`--output_file` (comma list, or a prefix with `num_output_shards`) -> list of paths.

    >>> output_file_names("/tmp/x", 2)
    ['/tmp/x-00000-of-00002.tfrecord', '/tmp/x-00001-of-00002.tfrecord']
    """
    if num_output_shards:
        n = int(num_output_shards)
        return [f"{spec}-{i:05d}-of-{n:05d}.tfrecord" for i in range(n)]
    if isinstance(spec, (list, tuple)):
        return list(spec)
    return [p.strip() for p in str(spec).split(",") if p.strip()]


def available_cpus():
    """CPUs this process may run on (its affinity mask; cgroup-unaware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def make_settings(vocab_file, do_lower_case=True, max_seq_length=128, max_predictions_per_seq=20,
                  masked_lm_prob=0.15, dupe_factor=10, short_seq_prob=0.1, random_seed=12345,
                  do_whole_word_mask=False, block_tokens=DEFAULT_BLOCK_TOKENS, nsp=True,
                  word_segmenter=None):
    """Checks Google's flags and returns the settings dict every stage uses
    (the local tool and the Beam pipeline alike).

    Beyond Google's: `nsp=False` writes one-segment instances for MLM without
    next-sentence prediction (`pack_documents`: documents run on, cut into full
    chunks; `next_sentence_labels` 0, `segment_ids` 0, so the records keep
    Google's features); `word_segmenter` (`bert_tf.text.word_segmentation`)
    makes whole-word masking group the characters of one segmenter word."""
    if max_seq_length < 5:
        raise ValueError(f"max_seq_length must be >= 5, got {max_seq_length}")
    if not 0 <= masked_lm_prob < 1:
        raise ValueError(f"masked_lm_prob must be in [0, 1), got {masked_lm_prob}")
    if max_predictions_per_seq < 1:
        raise ValueError(f"max_predictions_per_seq must be >= 1, got {max_predictions_per_seq}")
    if dupe_factor < 1:
        raise ValueError(f"dupe_factor must be >= 1, got {dupe_factor}")
    if word_segmenter:
        if not do_whole_word_mask:
            raise ValueError(f"word_segmenter={word_segmenter!r} only changes whole-word masking: "
                             "add do_whole_word_mask")
        if masked_lm_prob == 0:
            raise ValueError("word_segmenter with masked_lm_prob=0: unmasked records cannot keep the segmenter's "
                             "word boundaries; mask here, or mask dynamically from raw text (pretrain.py "
                             "--input_format=text --word_segmenter=...)")
        load_word_segmenter(word_segmenter)  # fails now, with the reason, if it cannot be loaded
    return dict(nsp=bool(nsp), word_segmenter=word_segmenter or None, vocab_file=str(vocab_file), do_lower_case=bool(do_lower_case),
                max_seq_length=int(max_seq_length),
                max_predictions_per_seq=int(max_predictions_per_seq),
                masked_lm_prob=float(masked_lm_prob), dupe_factor=int(dupe_factor),
                short_seq_prob=float(short_seq_prob), random_seed=int(random_seed),
                do_whole_word_mask=bool(do_whole_word_mask), block_tokens=int(block_tokens))


def summary_line(stats):
    """The final counts line both tools print."""
    return (f"documents={stats['documents']} sentences={stats['sentences']} tokens={stats['tokens']} "
            f"instances={stats['instances']} random_next={stats['random_next']} "
            f"masked={stats['masked']} skipped_non_utf8_lines={stats['skipped_non_utf8_lines']} "
            f"skipped_empty_lines={stats['skipped_empty_lines']}")


def create_pretraining_data(input_files, output_files, vocab_file, do_lower_case=True,
                            max_seq_length=128, max_predictions_per_seq=20, masked_lm_prob=0.15,
                            dupe_factor=10, short_seq_prob=0.1, random_seed=12345,
                            do_whole_word_mask=False, block_tokens=DEFAULT_BLOCK_TOKENS, nsp=True,
                            word_segmenter=None, num_workers=None, verbose=True, log=None, progress_seconds=10.0):
    """Writes pretraining TFRecords; returns total counts.

    Args mirror Google's flags, plus `nsp` and `word_segmenter` (see
    `make_settings`); `input_files`/`output_files` are lists (see
    `expand_input_files` / `output_file_names`). `masked_lm_prob=0` writes
    unmasked pair records (for `bert_tf.pretraining.masking` dynamic masking).
    `num_workers`: processes that make instances (default: the CPUs available
    to this process; 1 = all in this process). This process reads and
    tokenizes; workers take fixed work units of each block (`block_units`), so
    the records do not depend on `num_workers`.

    Returns a dict: `documents`, `sentences`, `tokens`, `instances`,
    `random_next`, `forced_random_next` (of those, pairs from one-sentence
    chunks, which Google always makes random), `masked`, `tokens_in_instances`,
    `skipped_non_utf8_lines`, `skipped_empty_lines` (lines without wordpieces),
    `per_output` (path -> instances), `seconds`, `instances_per_second`.
    """
    settings = make_settings(vocab_file, do_lower_case, max_seq_length, max_predictions_per_seq,
                             masked_lm_prob, dupe_factor, short_seq_prob, random_seed,
                             do_whole_word_mask, block_tokens, nsp, word_segmenter)
    vocab = vocab_info(vocab_file)  # fail early with a clear message
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    input_files = list(input_files)
    output_files = list(output_files)
    tasks = plan_tasks(input_files, output_files)
    for p in output_files:
        d = os.path.dirname(p)
        if d:
            os.makedirs(d, exist_ok=True)
    workers = max(1, int(num_workers or available_cpus()))
    start = time.time()
    stats = new_stats()
    last_print = [start]

    def show(final=False):
        dt = max(time.time() - start, 1e-9)
        if verbose:
            log(f"{'done' if final else 'progress'}: documents={stats['documents']} "
                f"instances={stats['instances']} instances/s={stats['instances'] / dt:.0f} "
                f"elapsed={dt:.1f}s")

    def on_block():
        if time.time() - last_print[0] >= progress_seconds:
            last_print[0] = time.time()
            show()

    if verbose:
        log(f"create_pretraining_data: {len(input_files)} input file(s) -> {len(output_files)} "
            f"output file(s), {len(tasks)} task(s), {workers} worker process(es)"
            f"{'' if workers > 1 else ' (in this process)'}")
    per_output = _write_tasks([(t, ins, outs) for t, (ins, outs) in enumerate(tasks)], settings, vocab,
                              workers, stats, on_block=on_block)
    seconds = time.time() - start
    if not stats["instances"]:
        raise ValueError(f"no instances made from {len(input_files)} input file(s) ({summary_line(stats)}): the "
                         "input needs text, one sentence per line, a blank line between documents, and wordpieces "
                         f"in {vocab_file}")
    out = {k: stats[k] for k in new_stats()}
    out["per_output"] = per_output
    out["seconds"] = seconds
    out["instances_per_second"] = stats["instances"] / max(seconds, 1e-9)
    if verbose:
        show(final=True)
        log(summary_line(stats))
        for p, n in per_output.items():
            log(f"  wrote {n} instances to {p}")
    return out
