"""Word counts for a vocabulary at corpus scale, on Apache Beam; the learning runs on the counts.

    files (globs matched by the local tool's `expand_input_files`)
      -> Reshuffle (spread files over workers)
      -> ParDo: count one file's words (`vocab_learning.count_file`: the tokenizer's normalisation and word
         split, non-UTF-8 lines skipped and logged as file:line) -> (word, n) pairs
      -> CombinePerKey(sum)
      -> `<output_file>.word_counts/counts-SSSSS-of-NNNNN.tsv` (`word<TAB>n` lines; words hold no whitespace)

The driver then reads the counts, learns with `vocab_learning.learn_vocab` and writes the vocab.txt, so the
same inputs and settings give the same vocabulary as the local tool. The counts directory is removed after the
vocabulary is written.

Counters (Beam metrics, namespace `bert_tf.text.vocab`): `files`, `empty_files`, `lines`, `words`,
`long_words`, `skipped_non_utf8_lines`.

Offline and in tests use Beam's in-process runner:
`--runner=FnApiRunner --direct_num_workers=2 --direct_running_mode=multi_processing`.
"""

import collections
import logging
import os
import time

import apache_beam as beam
import tensorflow as tf
from apache_beam.io.filesystems import CompressionTypes, FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from bert_tf.text import vocab_learning

NAMESPACE = "bert_tf.text.vocab"
COUNTERS = tuple(vocab_learning.new_stats())


def _open(path):
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


class CountFileWords(beam.DoFn):
    """One file -> its (word, n) pairs; the corpus stats go to Beam counters."""

    def __init__(self, do_lower_case, max_word_chars):
        self.do_lower_case = bool(do_lower_case)
        self.max_word_chars = int(max_word_chars)

    def setup(self):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.counters = {k: Metrics.counter(NAMESPACE, k) for k in COUNTERS}

    def process(self, path):
        counts, stats = vocab_learning.count_file(path, self.do_lower_case, self.max_word_chars,
                                                  log=logging.warning, open_fn=_open)
        for k in COUNTERS:
            self.counters[k].inc(stats[k])
        yield from counts.items()


def _format_count(item):
    word, n = item
    return f"{word}\t{n}"


def counts_dir(output_file):
    """Where the pipeline writes the word counts for `output_file`."""
    return f"{output_file}.word_counts"


def build_pipeline(pipeline, input_files, output_dir, do_lower_case, max_word_chars):
    """Adds the counting transforms to `pipeline`: the counts go to `<output_dir>/counts-*.tsv`."""
    return (pipeline
            | "Files" >> beam.Create(list(input_files))
            | "Spread" >> beam.Reshuffle()
            | "CountFileWords" >> beam.ParDo(CountFileWords(do_lower_case, max_word_chars))
            | "Sum" >> beam.CombinePerKey(sum)
            | "Format" >> beam.Map(_format_count)
            | "Write" >> beam.io.WriteToText(f"{output_dir}/counts", file_name_suffix=".tsv"))


def read_counts(output_dir):
    """The `word<TAB>n` files of `output_dir` -> Counter; a malformed line is an error naming file:line."""
    counts = collections.Counter()
    for path in sorted(tf.io.gfile.glob(f"{output_dir}/counts-*.tsv")):
        with tf.io.gfile.GFile(path, "rb") as f:
            for line_number, line in enumerate(f.read().decode("utf-8").split("\n"), start=1):
                if not line:
                    continue
                word, tab, n = line.rpartition("\t")
                if not tab or not word or not n.isdigit():
                    raise ValueError(f"{path}:{line_number}: not a 'word<TAB>count' line: {line[:80]!r}")
                counts[word] += int(n)
    return counts


def counters(result):
    """The pipeline's counters as a Counter (committed values; attempted where a runner does not commit)."""
    out = vocab_learning.new_stats()
    for c in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        try:
            value = c.committed
        except Exception:  # noqa: BLE001 - some runners only have attempted values
            value = None
        out[c.key.metric.name] = value if value is not None else c.attempted
    return out


def count_words(input_spec, output_dir, do_lower_case, max_word_chars, pipeline_args, log=print):
    """Runs the counting pipeline with `pipeline_args` (--runner, ...) and waits -> (Counter, stats)."""
    inputs = vocab_learning.expand_input_files(input_spec)
    log(f"counting words (Beam) in {len(inputs)} file(s) -> {output_dir}, options {list(pipeline_args)}")
    pipeline = beam.Pipeline(options=PipelineOptions(list(pipeline_args)))
    build_pipeline(pipeline, inputs, output_dir, do_lower_case, max_word_chars)
    result = pipeline.run()
    result.wait_until_finish()
    return read_counts(output_dir), counters(result)


def build_vocab(config, pipeline_args, log=print):
    """`vocab_learning.build_vocab` with the words counted on Beam; returns the `LearnedVocab` and stats."""
    config.check()
    start = time.time()
    output_dir = counts_dir(config.output_file)
    if tf.io.gfile.exists(output_dir):
        tf.io.gfile.rmtree(output_dir)  # counts of an earlier run would be added to this one's
    counts, stats = count_words(config.input_file, output_dir, config.do_lower_case, config.max_word_chars,
                                pipeline_args, log)
    log(f"counted {stats['words']} words ({len(counts)} distinct) in {stats['files']} files in "
        f"{time.time() - start:.1f}s")
    learned = vocab_learning.learn_and_write(counts, stats, config, log)
    tf.io.gfile.rmtree(output_dir)
    log(f"wrote {config.output_file} in {time.time() - start:.1f}s")
    return learned, stats
