"""Pretraining records at corpus scale: an Apache Beam pipeline that writes the
same records as the local tool (`bert_tf.pretraining.data.create_pretraining_data`).

The pipeline is built from the library's own stages:

    tasks (globs matched; files and output shards planned as the local tool plans them)
      -> Reshuffle (spread tasks over workers)
      -> ParDo: read documents (blank-line separated; a task's files are read
         by one worker, so a document is never split) -> tokenize -> group into
         the local tool's blocks -> Google's sampling, dupe factor, masking and
         whole-word masking (`block_records`) -> serialized tf.train.Example
      -> written to `<prefix>-SSSSS-of-NNNNN.tfrecord`, one of two ways:
         * default: each task writes the shards it owns (as the local tool
           does: every shard has one writer), to a temporary name renamed when
           complete, so a retried bundle rewrites the same bytes. No shuffle: a
           worker holds one block and its records, whatever the corpus size, and
           the files are byte-identical to the local tool's.
         * `write_to_tfrecord=True`: Beam's `WriteToTFRecord(num_shards=N)`,
           which shuffles every record to its shard (on Dataflow through the
           shuffle service; Beam's local FnApiRunner keeps the shuffle in memory).

Every block draws from its own random stream, seeded from (random_seed, task,
block), so for the same inputs, flags and seed the pipeline writes the same
multiset of records as the local tool with the same number of outputs
(with `write_to_tfrecord`, which record lands in which shard differs).

Counters (Beam metrics, namespace `bert_tf.pretraining.data`): `documents`,
`instances`, `skipped_non_utf8_lines`, `skipped_empty_lines` (lines with no
wordpieces), `tokens`, `sentences`, `masked`.

Offline and in tests use Beam's in-process runner:
`--runner=FnApiRunner --direct_num_workers=2 --direct_running_mode=multi_processing`.
"""

from __future__ import annotations

import os

from bert_tf.pretraining import data as pdata

NAMESPACE = "bert_tf.pretraining.data"
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


def _create(path):
    from apache_beam.io.filesystems import CompressionTypes, FileSystems

    return FileSystems.create(path, mime_type="application/octet-stream",
                              compression_type=CompressionTypes.UNCOMPRESSED)


def _make_do_fns():
    import apache_beam as beam
    from apache_beam.metrics import Metrics

    class _TaskDoFn(beam.DoFn):
        def __init__(self, settings):
            self.settings = dict(settings)

        def setup(self):
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            self.vocab = pdata.vocab_info(self.settings["vocab_file"])
            self.tokenizer = pdata.get_tokenizer(self.settings["vocab_file"], self.settings["do_lower_case"],
                                                 self.settings["word_segmenter"])
            self.maker = pdata.InstanceMaker(self.settings, self.vocab)
            self.counters = {k: Metrics.counter(NAMESPACE, k) for k in COUNTERS}

        def blocks(self, task_index, inputs, stats):
            """Yields each block's serialized records, updating the counters."""
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
                yield records
            report()

    class TaskToRecords(_TaskDoFn):
        """One task (its input files, in order) -> its serialized Examples."""

        def process(self, task):
            task_index, inputs, _ = task
            for records in self.blocks(task_index, inputs, pdata.new_stats()):
                yield from records

    class TaskToShards(_TaskDoFn):
        """One task -> the shards it owns, written as the local tool writes them.
        Yields `(path, instances)` per shard."""

        def process(self, task):
            import uuid

            from apache_beam.io.filesystems import FileSystems

            task_index, inputs, outputs = task
            attempt = uuid.uuid4().hex[:12]
            temps = [f"{p}.incomplete-{attempt}" for p in outputs]
            out = pdata.TaskOutput(temps, open_fn=_create)
            frame = self.maker.framer
            try:
                for records in self.blocks(task_index, inputs, pdata.new_stats()):
                    for i, r in enumerate(records):  # in place: one copy of the block's records
                        records[i] = frame(r)
                    out.write(records)
                    del records
            finally:
                out.close()
            FileSystems.rename(temps, list(outputs))
            yield from zip(outputs, out.counts)

    return TaskToRecords, TaskToShards


def build_pipeline(pipeline, input_files, output_prefix, num_output_shards, settings,
                   write_to_tfrecord=False):
    """Adds the pretraining-data transforms to `pipeline`; returns the last PCollection.

    `input_files`: matched files (see `match_input_files`); shards are
    `<output_prefix>-SSSSS-of-NNNNN.tfrecord`, as the local tool names them.
    """
    import apache_beam as beam

    n = int(num_output_shards)
    if n < 1:
        raise ValueError("--num_output_shards must be >= 1 for the Beam pipeline")
    outputs = pdata.output_file_names(output_prefix, n)
    tasks = [(t, list(ins), list(outs))
             for t, (ins, outs) in enumerate(pdata.plan_tasks(list(input_files), outputs))]
    to_records, to_shards = _make_do_fns()
    spread = (pipeline
              | "Tasks" >> beam.Create(tasks)
              | "Spread" >> beam.Reshuffle())
    if write_to_tfrecord:
        return (spread
                | "MakeInstances" >> beam.ParDo(to_records(settings))
                | "Write" >> beam.io.WriteToTFRecord(output_prefix, file_name_suffix=".tfrecord", num_shards=n,
                                                     shard_name_template="-SSSSS-of-NNNNN"))
    return spread | "MakeAndWriteShards" >> beam.ParDo(to_shards(settings))


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


def run(input_spec, output_prefix, num_output_shards, settings, pipeline_args, log=print,
        write_to_tfrecord=False):
    """Runs the pipeline with `pipeline_args` (Beam options: --runner, ...) and
    waits for it. Returns the counters (see `counters`)."""
    import time

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    pdata.vocab_info(settings["vocab_file"])  # fail early with a clear message
    inputs = match_input_files(input_spec)
    start = time.time()
    options = PipelineOptions(list(pipeline_args))
    log(f"create_pretraining_data (Beam): {len(inputs)} input file(s) -> {num_output_shards} shard(s) "
        f"{output_prefix}-*-of-{int(num_output_shards):05d}.tfrecord "
        f"({'WriteToTFRecord' if write_to_tfrecord else 'each task writes its shards'}), "
        f"options {list(pipeline_args)}")
    pipeline = beam.Pipeline(options=options)
    for p in pdata.output_file_names(output_prefix, num_output_shards)[:1]:
        d = os.path.dirname(p)
        if d and "://" not in p:
            os.makedirs(d, exist_ok=True)
    build_pipeline(pipeline, inputs, output_prefix, num_output_shards, settings, write_to_tfrecord)
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
    if not out["instances"]:
        raise ValueError(f"no instances made from {len(inputs)} input file(s): the input needs text, one sentence "
                         f"per line, a blank line between documents, and wordpieces in {settings['vocab_file']}")
    return out
