"""A WordPiece `vocab.txt` learned from raw text, with the tokenizer's own normalisation.

Words are counted exactly as `BertTokenizer` will see them: the words of its `normalize_text` (Google's
BasicTokenizer rules: control/format characters dropped, whitespace, CJK ideographs and punctuation as words of
their own, and when uncased lower-casing, NFD, accents dropped), computed in plain Python by
`bert_tf.text.word_split` (equal on all of Unicode; the few lines it cannot split exactly go to the tokenizer
itself), so the vocabulary, the tokenizer, `create_pretraining_data` and `pretrain` agree on every word. The
counts go to tensorflow-text's WordPiece algorithm (`bert_tf.text.wordpiece_learner`: the same vocabulary as
`wordpiece_tokenizer_learner_lib.learn`, computed ~15x faster); this module picks the learner's frequency
threshold, keeps every frequent character, and fixes the layout of the special tokens.

Layout of the written `vocab.txt` (one token a line, id = line number; Google's released uncased vocab has
this layout with `num_unused=99`: `[UNK]`=100, `[CLS]`=101, `[SEP]`=102, `[MASK]`=103):

    [PAD]                              id 0
    [unused0] ... [unused{N-1}]        ids 1..N         (N = num_unused; placeholders for later tokens)
    [UNK] [CLS] [SEP] [MASK]           ids N+1..N+4
    characters, sorted                 every character seen at least `min_char_count` times
    learned pieces, most frequent first (words and `##` continuations; every kept character also as `##c`)
    kept characters the learner left out (seen only in words longer than `max_piece_chars`), as `c` and `##c`

The learner (tf-text's algorithm: pieces seen at least T times, re-counted over 4 rounds) runs at the
frequency threshold T whose vocabulary is at most 5% over `vocab_size`, then its least frequent pieces are
dropped, so the file has exactly `vocab_size` lines. Words longer than `max_word_chars` characters are not
counted (the tokenizer makes them `[UNK]`). Words with a character seen fewer than `min_char_count` times are
left out of learning (they become `[UNK]`). Lines that are not UTF-8 are skipped and reported by file:line. A
corpus whose pieces cannot fill `vocab_size` at the lowest threshold `min_token_count` gives a smaller
vocabulary, reported as such (`LearnedVocab.too_small`).

Counting runs in this process for a small corpus or `num_workers=1`, else in worker processes over byte ranges
of the files (cut at line starts, so one big file is counted in parallel too; each file's stats and skipped
lines are reported as one process counting it would). This module imports no TensorFlow (the inits of its
packages do; `trainers/build_vocab.py` skips them): local files are read with plain Python, TensorFlow is
imported only for remote paths (`tf.io.gfile`) and for the rare lines `word_split` cannot split exactly, and the
workers are forked in milliseconds where TensorFlow is not imported. `bert_tf.text.vocab_beam`
counts on Apache Beam with the same code, so both give the same counts and the same vocabulary.
"""

import collections
import concurrent.futures
import dataclasses
import functools
import glob
import importlib.util
import math
import multiprocessing
import os
import sys
import time

from bert_tf import atomic
from bert_tf.text import vocab_threshold, word_split
from bert_tf.text.word_split import MAX_CHARS_PER_WORD
from bert_tf.text.wordpiece_learner import JOINER, WordPieceLearner
from bert_tf.training.settings import ConfigError, setting


def _import_on_first_use(name):
    """Module `name`, executed at its first attribute access (the standard library's `LazyLoader` recipe)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# It imports TensorFlow (seconds of start-up, and forked counting workers must not carry its runtime); only
# `WordCounter`, for the rare lines Python cannot split as TensorFlow's ICU does, reads it.
tokenizer = _import_on_first_use("bert_tf.text.tokenizer")

SPECIAL_TOKENS = ("[UNK]", "[CLS]", "[SEP]", "[MASK]")
NUM_ITERATIONS = 4  # the learner's rounds (tf-text's default)
LINES_PER_BATCH = 16384
MAX_REPORTED_BAD_LINES = 10  # per file; the rest are counted
# The learner's result may exceed `vocab_size` this much before its least frequent pieces are dropped.
SLACK_RATIO = 0.05
# From this corpus size on, counting runs in worker processes (by default). Forked workers start in milliseconds;
# they are used where this process has not imported TensorFlow (a fork would copy its runtime threads broken).
# Measured on 2 idle cores (English prose, one file): 1 process / 2 forked workers 15 / 17 ms at 128 KiB,
# 34 / 29-32 ms at 256 KiB, 68 / 48 ms at 512 KiB, 140 / 94 ms at 1 MiB. (While other work held both cores,
# 2 workers were ~20% slower than 1 at every size: together they got no more CPU time than one process.)
# Spawned workers import bert_tf, and TensorFlow with it: seconds, paid back only on a large corpus.
FORK_PARALLEL_MIN_BYTES = 512 << 10
SPAWN_PARALLEL_MIN_BYTES = 64 << 20
# Workers count byte ranges of the files (cut at line starts), about this many per worker so that they finish
# together, one big file included; smaller ranges are not cut (each costs its counts' transfer and merge).
RANGES_PER_WORKER = 2
MIN_RANGE_BYTES = 256 << 10
# The smallest vocabulary the tokenizer layer accepts: the special tokens and one piece (tf-text needs one).
_SPLITTER_VOCAB = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "a")


@dataclasses.dataclass
class VocabConfig:
    """What `build_vocab` reads, writes and learns; the flags of `trainers/build_vocab.py`."""

    input_file: str | None = setting(None, "Raw text file(s): comma-separated list, globs allowed.")
    output_file: str | None = setting(None, "The vocab.txt to write (atomically).")
    vocab_size: int = setting(30522, "Size of the vocabulary (special tokens and [unused] included).")
    do_lower_case: bool = setting(True, "Lower-case and strip accents (uncased model), as the tokenizer will.")
    num_unused: int = setting(99, "[unused0..N-1] placeholders after [PAD] (99: Google's ids 100-103 for "
                                  "[UNK] [CLS] [SEP] [MASK]).")
    min_char_count: int = setting(1, "Keep every character seen at least this many times (as c and ##c); "
                                     "words with rarer characters are not learned from.")
    max_word_chars: int = setting(MAX_CHARS_PER_WORD, "Words longer than this (characters) are not counted; "
                                                      f"at most {MAX_CHARS_PER_WORD}, the tokenizer's limit.")
    max_piece_chars: int = setting(50, "Longest piece learned; longer words only contribute their characters.")
    min_token_count: int = setting(2, "Lowest frequency threshold the learner may use: a corpus that cannot "
                                      "fill --vocab_size with pieces seen this often gives a smaller vocab.")
    num_workers: int | None = setting(None, "Processes counting words, over byte ranges of the files (default: "
                                            "the CPUs available, for a corpus of "
                                            f"{FORK_PARALLEL_MIN_BYTES / 2**20:g} MiB or more; 1 = in this "
                                            "process). Unless 1, the learner also runs its thresholds two at a "
                                            "time (the same vocabulary either way).")

    def check(self):
        """Raises `ConfigError` for settings that cannot work."""
        if not self.input_file or not self.output_file:
            raise ConfigError("--input_file and --output_file are required")
        if self.num_unused < 0:
            raise ConfigError(f"--num_unused={self.num_unused} must be >= 0")
        if not 1 <= self.max_word_chars <= MAX_CHARS_PER_WORD:
            raise ConfigError(f"--max_word_chars={self.max_word_chars} must be in 1..{MAX_CHARS_PER_WORD} "
                              "(the tokenizer makes longer words [UNK])")
        for name in ("min_char_count", "max_piece_chars", "min_token_count"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name}={getattr(self, name)} must be >= 1")
        if self.vocab_size <= len(reserved_tokens(self.num_unused)):
            raise ConfigError(f"--vocab_size={self.vocab_size} leaves no room after "
                              f"{len(reserved_tokens(self.num_unused))} reserved tokens")


def reserved_tokens(num_unused):
    """`[PAD]`, `[unused0..num_unused-1]`, `[UNK]`, `[CLS]`, `[SEP]`, `[MASK]`: ids 0..num_unused+4."""
    return ["[PAD]", *[f"[unused{i}]" for i in range(num_unused)], *SPECIAL_TOKENS]


def new_stats():
    return collections.Counter(files=0, empty_files=0, lines=0, words=0, long_words=0, skipped_non_utf8_lines=0)


class WordCounter:
    """Lines -> counts of the words `BertTokenizer` sees (its normalisation and word split, in one tf.function).
    The reference that `PythonWordCounter` equals; it counts the lines that one cannot."""

    def __init__(self, do_lower_case, max_word_chars=MAX_CHARS_PER_WORD):
        # Imported here, for the rare lines that need this counter: importing TensorFlow costs seconds.
        import tensorflow as tf

        self._tokenizer = tokenizer.BertTokenizer(list(_SPLITTER_VOCAB), lower_case=do_lower_case)
        # normalize_text puts this character in place of a word over the tokenizer's 200-character limit.
        long_word = self._tokenizer.long_word_placeholder

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def count(lines):
            words = tf.strings.split(self._tokenizer.normalize_text(lines)).flat_values
            too_long = tf.logical_or(tf.strings.length(words, unit="UTF8_CHAR") > max_word_chars,
                                     tf.equal(words, long_word))
            unique, _, counts = tf.unique_with_counts(tf.boolean_mask(words, tf.logical_not(too_long)))
            return unique, counts, tf.reduce_sum(tf.cast(too_long, tf.int64))

        self._count = lambda lines: count(tf.constant(lines, tf.string))

    def add(self, lines, counts, stats):
        """Counts the words of `lines` (valid UTF-8 strings) into `counts` (word -> n); updates `stats`."""
        unique, n, too_long = self._count(lines)
        words = [w.decode("utf-8") for w in unique.numpy().tolist()]
        n = n.numpy().tolist()
        for w, c in zip(words, n):
            counts[w] += c
        stats["lines"] += len(lines)
        stats["words"] += sum(n) + int(too_long)
        stats["long_words"] += int(too_long)


class PythonWordCounter:
    """`WordCounter`'s counts in plain Python (`word_split`: several times faster, no graph to build). Lines
    holding a character whose Unicode data differ between Python and TensorFlow's ICU go to `WordCounter`."""

    def __init__(self, do_lower_case, max_word_chars=MAX_CHARS_PER_WORD):
        self.do_lower_case, self.max_word_chars = bool(do_lower_case), int(max_word_chars)
        self._splitter = word_split.WordSplitter(do_lower_case)

    def add(self, lines, counts, stats):
        """As `WordCounter.add`."""
        text = "\n".join(lines)
        chars = set(text)
        differing = self._splitter.differing_chars(chars)
        if differing:
            tf_word_counter(self.do_lower_case, self.max_word_chars).add(
                [line for line in lines if not differing.isdisjoint(line)], counts, stats)
            lines = [line for line in lines if differing.isdisjoint(line)]
            text = "\n".join(lines)
            chars = set(text)
        text_counts, too_long = word_split.count_words(self._splitter, text, self.max_word_chars, chars)
        counts.update(text_counts)
        stats["lines"] += len(lines)
        stats["words"] += sum(text_counts.values()) + too_long
        stats["long_words"] += too_long


@functools.lru_cache(maxsize=None)
def tf_word_counter(do_lower_case, max_word_chars):
    """One `WordCounter` per process and setting (building its tf.function costs a second)."""
    return WordCounter(do_lower_case, max_word_chars)


@functools.lru_cache(maxsize=None)
def word_counter(do_lower_case, max_word_chars):
    """The counter `count_file` uses: one `PythonWordCounter` per process and setting."""
    return PythonWordCounter(do_lower_case, max_word_chars)


def _gfile(path):
    """`tf.io.gfile` for a remote path (gs://...), None for a local one (plain Python reads it)."""
    if "://" not in path:
        return None
    import tensorflow as tf  # only for remote paths: importing TensorFlow costs seconds of start-up

    return tf.io.gfile


def _open_binary(path):
    gfile = _gfile(path)
    return gfile.GFile(path, "rb") if gfile else open(path, "rb")


def _size(path):
    gfile = _gfile(path)
    return gfile.stat(path).length if gfile else os.path.getsize(path)


@dataclasses.dataclass
class RangeReport:
    """What counting a byte range of a file found besides the word counts."""

    stats: collections.Counter  # as `new_stats()`, without `files` / `empty_files` (known per file)
    num_lines: int  # lines of the range, skipped ones included
    bad_lines: list  # (line number within the range, reason) of its first MAX_REPORTED_BAD_LINES non-UTF-8 lines


def _lines_in_range(f, start, end):
    """The lines of the binary file `f` that begin at a byte in [start, end) (end None: the file's end), so that
    ranges cut anywhere give every line to exactly one of them."""
    if start > 0:
        f.seek(start - 1)
        f.readline()  # the rest of the line going on at `start` (only its "\n" if a line begins at `start`)
    position = f.tell() if end is not None else None
    for line in f:
        if end is not None:
            if position >= end:
                return
            position += len(line)
        yield line


def count_range(path, do_lower_case, max_word_chars, start=0, end=None, open_fn=_open_binary):
    """Word counts of the lines of `path` that begin in bytes [start, end) (end None: to the end of the file) ->
    (Counter word -> n, `RangeReport`). Non-UTF-8 lines are skipped."""
    counter = word_counter(bool(do_lower_case), int(max_word_chars))
    counts, report, batch = collections.Counter(), RangeReport(new_stats(), 0, []), []
    with open_fn(path) as f:
        for raw in _lines_in_range(f, start, end):
            report.num_lines += 1
            try:
                batch.append(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                report.stats["skipped_non_utf8_lines"] += 1
                if len(report.bad_lines) < MAX_REPORTED_BAD_LINES:
                    report.bad_lines.append((report.num_lines, f"skipped a line that is not UTF-8 ({e.reason} at "
                                                               f"byte {e.start})"))
                continue
            if len(batch) == LINES_PER_BATCH:
                counter.add(batch, counts, report.stats)
                batch = []
    if batch:
        counter.add(batch, counts, report.stats)
    return counts, report


def report_file(path, reports, log=print):
    """The stats of one file from the `RangeReport`s of its ranges in file order; logs its skipped lines as
    `path:line` (the first MAX_REPORTED_BAD_LINES, then how many in all) and an empty file."""
    stats, bad_lines, lines_before = new_stats(), [], 0
    stats["files"] = 1
    for report in reports:
        stats.update(report.stats)
        bad_lines += [(lines_before + n, reason) for n, reason in report.bad_lines]
        lines_before += report.num_lines
    for line_number, reason in bad_lines[:MAX_REPORTED_BAD_LINES]:
        log(f"{path}:{line_number}: {reason}")
    if stats["skipped_non_utf8_lines"] > MAX_REPORTED_BAD_LINES:
        log(f"{path}: {stats['skipped_non_utf8_lines']} lines in all skipped as not UTF-8")
    if stats["words"] == 0:
        stats["empty_files"] = 1
        log(f"{path}: no words (empty file)")
    return stats


def count_file(path, do_lower_case, max_word_chars, log=print, open_fn=_open_binary):
    """Word counts of one file -> (Counter word -> n, stats). Non-UTF-8 lines are skipped and logged as
    `path:line`; an empty file is logged. `open_fn(path)` opens it for binary reading (Beam passes its own)."""
    counts, report = count_range(path, do_lower_case, max_word_chars, open_fn=open_fn)
    return counts, report_file(path, [report], log)


def expand_input_files(spec):
    """Comma list of paths/globs -> sorted existing files (list order kept); a pattern matching nothing is an
    error naming it."""
    files = []
    for pattern in [p.strip() for p in str(spec).split(",") if p.strip()]:
        gfile = _gfile(pattern)
        # hidden files match too, as in tf.io.gfile.glob
        matches = sorted(gfile.glob(pattern) if gfile else glob.glob(pattern, include_hidden=True))
        if not matches:
            raise FileNotFoundError(f"--input_file pattern {pattern!r} matches no file")
        files.extend(matches)
    if not files:
        raise FileNotFoundError(f"--input_file {spec!r} names no file")
    return files


def _ranges(sizes, num_workers):
    """(file index, start, end) byte ranges to count: whole files for one worker, else files cut into about
    RANGES_PER_WORKER ranges a worker, none under MIN_RANGE_BYTES (end None: to the end of the file)."""
    if num_workers == 1:
        return [(i, 0, None) for i in range(len(sizes))]
    range_bytes = max(MIN_RANGE_BYTES, math.ceil(sum(sizes) / (num_workers * RANGES_PER_WORKER)))
    ranges = []
    for i, size in enumerate(sizes):
        n = max(1, round(size / range_bytes))
        bounds = [size * k // n for k in range(n)] + [None]
        ranges += [(i, start, end) for start, end in zip(bounds, bounds[1:])]
    return ranges


def _can_fork():
    """Whether worker processes may be forked: not once TensorFlow is imported (a forked child would inherit its
    runtime threads broken); they are spawned then."""
    return "tensorflow" not in sys.modules


def _counted_ranges(files, ranges, do_lower_case, max_word_chars, num_workers):
    """(range index, counts, `RangeReport`) as the ranges are counted: in this process, or in worker processes
    (forked, or spawned once TensorFlow is imported)."""
    if num_workers == 1:
        for k, (i, start, end) in enumerate(ranges):
            yield k, *count_range(files[i], do_lower_case, max_word_chars, start, end)
        return
    context = multiprocessing.get_context("fork" if _can_fork() else "spawn")
    with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=context) as ex:
        futures = {ex.submit(count_range, files[i], do_lower_case, max_word_chars, start, end): k
                   for k, (i, start, end) in enumerate(ranges)}
        for future in concurrent.futures.as_completed(futures):
            yield futures[future], *future.result()


def count_files(files, do_lower_case, max_word_chars=MAX_CHARS_PER_WORD, num_workers=None, log=print):
    """Word counts of all `files` -> (Counter, stats), in `num_workers` processes over byte ranges of the files
    (default: the CPUs, for a corpus of FORK_PARALLEL_MIN_BYTES or more, SPAWN_PARALLEL_MIN_BYTES where this
    process has imported TensorFlow; else in this process). Each file's stats and skipped lines are reported
    when its last range is counted, as one process counting it would."""
    sizes = [_size(p) for p in files]
    if num_workers is None:
        min_bytes = FORK_PARALLEL_MIN_BYTES if _can_fork() else SPAWN_PARALLEL_MIN_BYTES
        num_workers = len(os.sched_getaffinity(0)) if sum(sizes) >= min_bytes else 1
    num_workers = max(1, int(num_workers))
    ranges = _ranges(sizes, num_workers)
    num_workers = min(num_workers, len(ranges))
    log(f"counting {len(files)} files ({sum(sizes) / 1e6:.2f} MB) " + (
        f"in {num_workers} processes, {len(ranges)} byte ranges" if num_workers > 1 else "in this process"))
    counts, stats = collections.Counter(), new_stats()
    reports = collections.defaultdict(dict)  # file index -> {range index: RangeReport}
    ranges_of = collections.Counter(i for i, _, _ in ranges)
    for k, range_counts, report in _counted_ranges(files, ranges, do_lower_case, max_word_chars, num_workers):
        counts.update(range_counts)
        i = ranges[k][0]
        reports[i][k] = report
        if len(reports[i]) < ranges_of[i]:
            continue
        file_stats = report_file(files[i], [r for _, r in sorted(reports.pop(i).items())], log)
        stats.update(file_stats)
        log(f"counted {files[i]}: {file_stats['lines']} lines, {file_stats['words']} words ({stats['files']}/"
            f"{len(files)} files; {len(counts)} distinct words so far)")
    return counts, stats


@dataclasses.dataclass
class LearnedVocab:
    """The tokens (id = position) and how they were learned."""

    tokens: list
    threshold: int  # the learner's frequency threshold
    kept_chars: int  # characters seen at least min_char_count times
    dropped_words: int  # distinct words left out of learning for a rarer character
    too_small: bool  # the corpus could not fill vocab_size at min_token_count


def _kept_chars(word_counts, min_char_count):
    """(the characters seen at least `min_char_count` times, sorted; the characters seen inside a word: those
    need a ##c piece too). CJK ideographs and punctuation are words of their own, so they never get one."""
    inner = set().union(*(word[1:] for word in word_counts))
    if min_char_count <= 1:  # every character seen is kept: no need to count them
        return sorted(set().union(*word_counts)), inner
    chars = collections.Counter()
    for word, n in word_counts.items():
        for c in word:
            chars[c] += n
    return sorted(c for c, n in chars.items() if n >= min_char_count), inner


def learn_vocab(word_counts, config, log=print):
    """Word counts (word -> n) -> `LearnedVocab` by `config` (a `VocabConfig`); see the module docstring."""
    if not word_counts:
        raise ValueError("no words to learn from: the input files are empty (or hold only skipped lines)")
    reserved = reserved_tokens(config.num_unused)
    kept, inner = _kept_chars(word_counts, config.min_char_count)
    if not kept:
        raise ValueError(f"no character is seen --min_char_count={config.min_char_count} times: the corpus is "
                         "too small for a vocabulary")
    char_tokens = _character_tokens(kept, inner)
    room = config.vocab_size - len(reserved) - len(char_tokens)
    if room < 0:
        raise ValueError(f"--vocab_size={config.vocab_size} cannot hold the {len(reserved)} reserved tokens and "
                         f"the {len(kept)} characters seen >= --min_char_count={config.min_char_count} times "
                         f"(as c, and as ##c where seen inside a word: {len(char_tokens)}); raise --vocab_size or "
                         "--min_char_count")
    kept_set = set(kept)
    # Sorted by word: the learner's result does not depend on how the counts were gathered.
    words = sorted((w, n) for w, n in word_counts.items() if kept_set.issuperset(w))
    dropped = len(word_counts) - len(words)
    if not words:
        raise ValueError(f"every word has a character seen < --min_char_count={config.min_char_count} times: "
                         "the corpus is too small for a vocabulary")
    log(f"learning from {len(words)} distinct words ({dropped} left out for a character seen < "
        f"{config.min_char_count} times), {len(kept)} characters kept")
    tokens, threshold, too_small = _search_threshold(words, config, reserved, len(kept), inner, log)
    tokens = _with_all_characters(tokens, char_tokens, reserved, config.vocab_size)
    return LearnedVocab(tokens, threshold, len(kept), dropped, too_small)


def _search_threshold(words, config, reserved, num_chars, inner_chars, log):
    """The learner's vocabulary at a threshold whose size lands in [vocab_size, vocab_size * (1 + slack)], else
    the smallest above it -> (tokens, threshold, too_small); see `bert_tf.text.vocab_threshold`."""
    # tf-text's learner as called with upper_thresh=lower_thresh=threshold (its own search pinned there)
    learner = WordPieceLearner(words, reserved, num_iterations=NUM_ITERATIONS,
                               max_token_length=config.max_piece_chars, max_unique_chars=num_chars, joiner=JOINER)
    lo = config.min_token_count
    hi = max(lo, max(n for _, n in words))
    # Side by side where counting would fork (this process has no TensorFlow) and more than one process is asked.
    parallel = config.num_workers != 1 and _can_fork() and len(os.sched_getaffinity(0)) > 1
    return vocab_threshold.search_threshold(learner, config.vocab_size,
                                            math.floor(config.vocab_size * (1 + SLACK_RATIO)), lo, hi,
                                            inner_chars, parallel, log)


def _character_tokens(kept_chars, inner_chars):
    """Every kept character as c, and as ##c where it is seen inside a word."""
    return [t for c in kept_chars for t in ([c, JOINER + c] if c in inner_chars else [c])]


def _with_all_characters(tokens, char_tokens, reserved, vocab_size):
    """Adds the character tokens the learner left out, dropping the least frequent learned pieces to fit
    `vocab_size` (never a reserved token or a character)."""
    present = set(tokens)
    missing = [t for t in char_tokens if t not in present]
    excess = len(tokens) + len(missing) - vocab_size
    if excess > 0:
        protected = set(reserved) | set(char_tokens)
        droppable = [i for i, t in enumerate(tokens) if t not in protected]
        dropped = set(droppable[-excess:])
        tokens = [t for i, t in enumerate(tokens) if i not in dropped]
    return tokens + missing


def write_vocab(path, tokens):
    """Writes `tokens` as a vocab.txt (one a line) atomically; returns `path`."""
    bad = [t for t in tokens if not t or t != t.strip() or "\n" in t]
    if bad:
        raise ValueError(f"vocabulary tokens that a vocab.txt cannot hold: {bad[:5]!r}")
    return atomic.write_file(path, "".join(t + "\n" for t in tokens))


def report_learned(learned, config, stats, log=print):
    """The summary lines of a run (the smaller-vocabulary warning among them)."""
    log(f"corpus: {stats['files']} files ({stats['empty_files']} without words), {stats['lines']} lines, "
        f"{stats['words']} words ({stats['long_words']} over --max_word_chars={config.max_word_chars}, not "
        f"counted), {stats['skipped_non_utf8_lines']} non-UTF-8 lines skipped")
    log(f"vocabulary: {len(learned.tokens)} tokens (--vocab_size={config.vocab_size}) at frequency threshold "
        f"{learned.threshold}; {learned.kept_chars} characters; {learned.dropped_words} distinct words with a "
        f"character seen < {config.min_char_count} times left out")
    if learned.too_small:
        log(f"WARNING: the corpus is too small for --vocab_size={config.vocab_size}: every piece seen >= "
            f"--min_token_count={config.min_token_count} times gives only {len(learned.tokens)} tokens; the "
            f"vocabulary written has {len(learned.tokens)} tokens (use that as the model's vocab_size, or give "
            "more text)")


def learn_and_write(counts, stats, config, log=print):
    """Word counts -> learned, written to `config.output_file`, reported; returns the `LearnedVocab`."""
    learned = learn_vocab(counts, config, log)
    write_vocab(config.output_file, learned.tokens)
    report_learned(learned, config, stats, log)
    return learned


def build_vocab(config, log=print):
    """Counts the words of `config.input_file` locally, learns, writes `config.output_file`; returns the
    `LearnedVocab` and the corpus stats."""
    config.check()
    files = expand_input_files(config.input_file)
    start = time.time()
    counts, stats = count_files(files, config.do_lower_case, config.max_word_chars, config.num_workers, log)
    log(f"counted {stats['words']} words ({len(counts)} distinct) in {len(files)} files in "
        f"{time.time() - start:.1f}s")
    learned = learn_and_write(counts, stats, config, log)
    log(f"wrote {config.output_file} in {time.time() - start:.1f}s")
    return learned, stats
