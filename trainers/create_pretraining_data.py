r"""Masked-LM / next-sentence pretraining TFRecords from raw text (Google's flags).

Input files: one sentence per line, a blank line between documents. Output:
TFRecords with Google BERT's features (see `bert_tf.pretraining.data`).

    python trainers/create_pretraining_data.py \
      --input_file='corpus/*.txt' --output_file=/tmp/pretrain --num_output_shards=8 \
      --vocab_file=vocab.txt --do_lower_case --max_seq_length=128 \
      --max_predictions_per_seq=20 --masked_lm_prob=0.15 --dupe_factor=10 \
      --short_seq_prob=0.1 --random_seed=12345

Flags beyond Google's: `--num_output_shards` (with `--output_file` as a prefix),
`--num_workers` (processes making instances; default: the CPUs available to
this process), `--block_tokens` (streaming window; see the module docstring of
`bert_tf.pretraining.data` for how this deviates from Google's whole-corpus
sampling). `--masked_lm_prob=0` writes unmasked pair records for
`pretrain.py --dynamic_masking`.

With `--runner` the same library code runs as an Apache Beam pipeline
(`bert_tf.pretraining.beam`) and writes the same multiset of records as the
local tool for the same inputs, flags, seed and `--num_output_shards`; every
flag this program does not define is passed to Beam as a pipeline option:

    python trainers/create_pretraining_data.py --runner=FnApiRunner \
      --direct_num_workers=2 --direct_running_mode=multi_processing \
      --input_file='corpus/*.txt' --output_file=/tmp/pretrain --num_output_shards=8 \
      --vocab_file=vocab.txt --dupe_factor=10
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from bert_tf.pretraining import data as pretraining_data  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_string("input_file", None, "Input raw text file(s): comma-separated list, globs allowed.")
flags.DEFINE_string("output_file", None,
                    "Output TFRecord file(s): comma-separated list, or a prefix with --num_output_shards.")
flags.DEFINE_string("vocab_file", None, "The vocabulary file that the BERT model was trained on.")
flags.DEFINE_bool("do_lower_case", True, "Lower-case the input (True for uncased models).")
flags.DEFINE_bool("do_whole_word_mask", False,
                  "Mask all the wordpieces of a word at once (## pieces join the previous piece).")
flags.DEFINE_string("word_segmenter", None,
                    "With --do_whole_word_mask: mask the characters of one segmenter word together (Chinese "
                    "whole-word masking): 'jieba', or 'package.module:function' (str -> list of words).")
flags.DEFINE_bool("nsp", True,
                  "Next-sentence pairs (Google). --nonsp: one segment per instance for MLM-only training, the "
                  "documents' sentences run on and cut into full-length chunks ([SEP] between documents).")
flags.DEFINE_integer("max_seq_length", 128, "Maximum sequence length.")
flags.DEFINE_integer("max_predictions_per_seq", 20, "Maximum number of masked LM predictions per sequence.")
flags.DEFINE_integer("random_seed", 12345, "Random seed for data generation.")
flags.DEFINE_integer("dupe_factor", 10, "Number of times to duplicate the input data (with different masks).")
flags.DEFINE_float("masked_lm_prob", 0.15, "Masked LM probability (0 = unmasked records).")
flags.DEFINE_float("short_seq_prob", 0.1,
                   "Probability of creating sequences which are shorter than the maximum length.")
flags.DEFINE_integer("num_output_shards", None,
                     "If set, --output_file is a prefix and this many <prefix>-NNNNN-of-NNNNN.tfrecord are written.")
flags.DEFINE_integer("num_workers", None,
                     "Processes making instances (default: the CPUs available to this process; 1 = in this "
                     "process). The records do not depend on it.")
flags.DEFINE_integer("block_tokens", pretraining_data.DEFAULT_BLOCK_TOKENS,
                     "Wordpieces per streaming block (bounds memory; random-next documents come from the block).")
flags.DEFINE_string("runner", None,
                    "Run as an Apache Beam pipeline on this runner (FnApiRunner, DataflowRunner, FlinkRunner, "
                    "SparkRunner, ...); other unknown flags are passed to Beam as pipeline options. "
                    "Needs --num_output_shards. Without it: the local tool.")
flags.DEFINE_bool("beam_write_to_tfrecord", False,
                  "With --runner: write through Beam's WriteToTFRecord (every record shuffled to its shard) "
                  "instead of each task writing the shards it owns (no shuffle; files identical to the "
                  "local tool's). Same multiset of records either way.")


def _parse_flags(argv):
    """absl parses its flags; what it does not know is kept for Beam."""
    try:
        return FLAGS(argv, known_only=True)
    except flags.Error as e:
        print(f"FATAL Flags parsing error: {e}", file=sys.stderr)
        sys.exit(1)


def _settings():
    return pretraining_data.make_settings(
        FLAGS.vocab_file, do_lower_case=FLAGS.do_lower_case, max_seq_length=FLAGS.max_seq_length,
        max_predictions_per_seq=FLAGS.max_predictions_per_seq, masked_lm_prob=FLAGS.masked_lm_prob,
        dupe_factor=FLAGS.dupe_factor, short_seq_prob=FLAGS.short_seq_prob, random_seed=FLAGS.random_seed,
        do_whole_word_mask=FLAGS.do_whole_word_mask, block_tokens=FLAGS.block_tokens, nsp=FLAGS.nsp,
        word_segmenter=FLAGS.word_segmenter)


def main(argv):
    for name in ("input_file", "output_file", "vocab_file"):
        if not getattr(FLAGS, name):
            raise app.UsageError(f"--{name} is required")
    extra = argv[1:]
    if FLAGS.runner and not FLAGS.num_output_shards:
        raise app.UsageError("--runner needs --num_output_shards (and --output_file as a prefix)")
    if FLAGS.runner:
        import logging

        from absl import logging as absl_logging

        from bert_tf.pretraining import beam as pretraining_beam

        # Beam logs every worker's lifecycle at INFO; keep warnings and our summary
        absl_logging.set_verbosity(absl_logging.WARNING)
        logging.getLogger().setLevel(logging.WARNING)
        # Beam's worker processes import bert_tf: give them this checkout
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        pretraining_beam.run(FLAGS.input_file, FLAGS.output_file, FLAGS.num_output_shards, _settings(),
                             [f"--runner={FLAGS.runner}", *extra],
                             log=lambda m: print(m, file=sys.stderr, flush=True),
                             write_to_tfrecord=FLAGS.beam_write_to_tfrecord)
        return
    if extra:
        raise app.UsageError(f"unknown flags {extra} (Beam pipeline options need --runner)")
    inputs = pretraining_data.expand_input_files(FLAGS.input_file)
    outputs = pretraining_data.output_file_names(FLAGS.output_file, FLAGS.num_output_shards)
    _settings()
    pretraining_data.create_pretraining_data(
        inputs, outputs, FLAGS.vocab_file, do_lower_case=FLAGS.do_lower_case,
        max_seq_length=FLAGS.max_seq_length, max_predictions_per_seq=FLAGS.max_predictions_per_seq,
        masked_lm_prob=FLAGS.masked_lm_prob, dupe_factor=FLAGS.dupe_factor,
        short_seq_prob=FLAGS.short_seq_prob, random_seed=FLAGS.random_seed,
        do_whole_word_mask=FLAGS.do_whole_word_mask, block_tokens=FLAGS.block_tokens, nsp=FLAGS.nsp,
        word_segmenter=FLAGS.word_segmenter, num_workers=FLAGS.num_workers, verbose=True)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
