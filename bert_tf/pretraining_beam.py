"""Pretraining records at corpus scale: an Apache Beam pipeline that writes the
same records as the local tool (`bert_tf.pretraining_data.create_pretraining_data`).

The pipeline is built from the library's own stages:

    tasks (globs matched, files planned as the local tool plans them)
      -> Reshuffle (spread tasks over workers)
      -> ParDo: read documents (blank-line separated; a task's files are read
         by one worker, so a document is never split) -> tokenize -> group into
         the local tool's blocks -> Google's sampling, dupe factor, masking and
         whole-word masking (`block_records`) -> serialized tf.train.Example
      -> WriteToTFRecord(num_shards=--num_output_shards)

Every block draws from its own random stream, seeded from (random_seed, task,
block), so for the same inputs, flags and seed the pipeline writes the same
multiset of records as the local tool with the same number of outputs
(which record lands in which shard may differ). Memory per worker is one block
(`block_tokens`) and its records, whatever the corpus size.

Counters (Beam metrics, namespace `bert_tf.pretraining_data`): `documents`,
`instances`, `skipped_non_utf8_lines`, `skipped_empty_lines` (lines with no
wordpieces), `tokens`, `sentences`, `masked`.

Offline and in tests use Beam's in-process runner:
`--runner=FnApiRunner --direct_num_workers=2 --direct_running_mode=multi_processing`.
"""

from __future__ import annotations

import os

from bert_tf import pretraining_data as pdata

NAMESPACE = "bert_tf.pretraining_data"
COUNTERS = ("documents", "instances", "skipped_non_utf8_lines", "skipped_empty_lines", "tokens",
            "sentences", "masked")


def match_input_files(spec):
    """`--input_file` (comma list of paths/globs, local or gs://, s3://, hdfs://)
    -> sorted matches per pattern, list order kept: the local tool's order."""
    from apache_beam.io.filesystems import FileSystems

    files = []
    patterns = spec if isinstance(spec, (list, tuple)) else str(spec).split(",")
    for pattern in [p.strip() for p in patterns]:
        if not pattern:
            continue
        result = FileSystems.match([pattern])[0]
        matches = sorted(m.path for m in result.metadata_list)
        if not matches:
            raise FileNotFoundError(f"--input_file pattern {pattern!r} matches no file")
        files.extend(matches)
    return files


def _open(path):
    from apache_beam.io.filesystems import CompressionTypes, FileSystems

    # uncompressed, as the local tool reads it
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def _make_do_fn():
    import apache_beam as beam
    from apache_beam.metrics import Metrics

    class TaskToRecords(beam.DoFn):
        """One task (its input files, in order) -> its serialized Examples."""

        def __init__(self, settings):
            self.settings = dict(settings)

        def setup(self):
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            self.vocab = pdata.VocabInfo(self.settings["vocab_file"])
            self.tokenizer = pdata.get_tokenizer(self.settings["vocab_file"], self.settings["do_lower_case"])
            self.maker = pdata.InstanceMaker(self.settings, self.vocab)
            self.counters = {k: Metrics.counter(NAMESPACE, k) for k in COUNTERS}

        def process(self, task):
            task_index, inputs = task
            stats = pdata._new_stats()
            reported = dict.fromkeys(COUNTERS, 0)

            def report():
                for k in COUNTERS:
                    if stats[k] != reported[k]:
                        self.counters[k].inc(stats[k] - reported[k])
                        reported[k] = stats[k]

            blocks = pdata.task_blocks(inputs, self.settings, stats, self.tokenizer, open_fn=_open)
            for b, block in enumerate(blocks):
                records = pdata.block_records(block, task_index, b, self.settings, self.vocab, stats,
                                              self.maker)
                del block
                report()
                yield from records
            report()

    return TaskToRecords


def build_pipeline(pipeline, input_files, output_prefix, num_output_shards, settings):
    """Adds the pretraining-data transforms to `pipeline`; returns the write's result.

    `input_files`: matched files (see `match_input_files`); `output_prefix`:
    shards are `<prefix>-SSSSS-of-NNNNN.tfrecord`, as the local tool names them.
    """
    import apache_beam as beam

    n = int(num_output_shards)
    if n < 1:
        raise ValueError("--num_output_shards must be >= 1 for the Beam pipeline")
    placeholders = pdata.output_file_names(output_prefix, n)
    tasks = [(t, list(ins)) for t, (ins, _) in enumerate(pdata.plan_tasks(list(input_files), placeholders))]
    return (pipeline
            | "Tasks" >> beam.Create(tasks)
            | "Spread" >> beam.Reshuffle()
            | "MakeInstances" >> beam.ParDo(_make_do_fn()(settings))
            | "Write" >> beam.io.WriteToTFRecord(output_prefix, file_name_suffix=".tfrecord", num_shards=n,
                                                 shard_name_template="-SSSSS-of-NNNNN"))


def counters(result):
    """The pipeline's counters as a dict (committed values; attempted where a
    runner does not commit)."""
    from apache_beam.metrics.metric import MetricsFilter

    out = dict.fromkeys(COUNTERS, 0)
    for c in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        try:
            value = c.committed
        except Exception:  # noqa: BLE001 - some runners only have attempted values
            value = None
        out[c.key.metric.name] = value if value is not None else c.attempted
    return out


def run(input_spec, output_prefix, num_output_shards, settings, pipeline_args, log=print):
    """Runs the pipeline with `pipeline_args` (Beam options: --runner, ...) and
    waits for it. Returns the counters (see `counters`)."""
    import time

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    pdata.VocabInfo(settings["vocab_file"])  # fail early with a clear message
    inputs = match_input_files(input_spec)
    start = time.time()
    options = PipelineOptions(list(pipeline_args))
    log(f"create_pretraining_data (Beam): {len(inputs)} input file(s) -> {num_output_shards} shard(s) "
        f"{output_prefix}-*-of-{int(num_output_shards):05d}.tfrecord, options {list(pipeline_args)}")
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, inputs, output_prefix, num_output_shards, settings)
    result = pipeline.run()
    result.wait_until_finish()
    out = counters(result)
    seconds = time.time() - start
    out["seconds"] = seconds
    out["instances_per_second"] = out["instances"] / max(seconds, 1e-9)
    log(f"done: documents={out['documents']} instances={out['instances']} "
        f"instances/s={out['instances_per_second']:.0f} elapsed={seconds:.1f}s")
    log(f"documents={out['documents']} sentences={out['sentences']} tokens={out['tokens']} "
        f"instances={out['instances']} masked={out['masked']} "
        f"skipped_non_utf8_lines={out['skipped_non_utf8_lines']} "
        f"skipped_empty_lines={out['skipped_empty_lines']}")
    return out
