r"""A WordPiece vocab.txt learned from raw text, for `create_pretraining_data.py` and `pretrain.py`.

    python trainers/build_vocab.py --input_file='corpus/*.txt' --output_file=vocab.txt \
      --vocab_size=30522 --do_lower_case --num_unused=99 --min_char_count=2

Words are normalised and split as the tokenizer does (Google's BasicTokenizer rules), counted (in parallel
processes over byte ranges of the files), and given to tensorflow-text's WordPiece learning algorithm (our faster
implementation of it, same vocabulary). Layout: `[PAD]`, `[unused0..N-1]`, `[UNK] [CLS] [SEP] [MASK]` (ids 100-103
with the default 99 unused, as in Google's vocab), characters, pieces. See `bert_tf.text.vocab_learning`.

Without `--runner` the program imports no TensorFlow (its package inits are skipped, see
`_import_packages_without_init`): it starts in a fraction of a second and forks its counting processes. TensorFlow
is imported only where needed: remote paths (gs://...), and lines holding one of the few characters whose Unicode
data differ between Python and TensorFlow's ICU (counted by the tokenizer itself).

With `--runner` the words are counted on Apache Beam (`bert_tf.text.vocab_beam`) and the same vocabulary is
learned from the counts; every flag this program does not define is passed to Beam as a pipeline option:

    python trainers/build_vocab.py --runner=FnApiRunner \
      --direct_num_workers=2 --direct_running_mode=multi_processing \
      --input_file='corpus/*.txt' --output_file=vocab.txt --vocab_size=30522
"""

import importlib.util
import logging
import os
import sys
import types

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402


def _import_packages_without_init(*names):
    """Makes the packages `names` importable as bare packages: their submodules import, their __init__.py does
    not run. The inits of `bert_tf` and `bert_tf.training` import TensorFlow and Keras (~5 s), to register the
    Keras classes and to offer the trainer; learning a vocabulary needs none of it, and counting forks worker
    processes only where TensorFlow is not imported. `find_spec` finds the packages wherever `import` would
    (this checkout, an installed copy, Bazel's runfiles)."""
    for name in names:
        if name in sys.modules:  # already imported in full (a test, an embedding program): keep it
            continue
        package = types.ModuleType(name)
        package.__path__ = list(importlib.util.find_spec(name).submodule_search_locations)
        sys.modules[name] = package
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, package)


_import_packages_without_init("bert_tf", "bert_tf.training")
from bert_tf.text import vocab_learning  # noqa: E402
from bert_tf.training import settings  # noqa: E402

FLAGS = flags.FLAGS

settings.define_flags(vocab_learning.VocabConfig)
flags.DEFINE_string("runner", None,
                    "Count words as an Apache Beam pipeline on this runner (FnApiRunner, DataflowRunner, "
                    "FlinkRunner, ...); other unknown flags are passed to Beam as pipeline options. Without it: "
                    "counted locally, --num_workers processes.")


def _parse_flags(argv):
    """absl parses its flags; what it does not know is kept for Beam."""
    try:
        return FLAGS(argv, known_only=True)
    except flags.Error as e:
        print(f"FATAL Flags parsing error: {e}", file=sys.stderr)
        sys.exit(1)


def _log(message):
    print(message, file=sys.stderr, flush=True)


def main(argv):
    config = settings.from_flags(vocab_learning.VocabConfig)
    try:
        config.check()
    except settings.ConfigError as e:
        raise app.UsageError(str(e)) from None
    extra = argv[1:]
    if not FLAGS.runner:
        if extra:
            raise app.UsageError(f"unknown flags {extra} (Beam pipeline options need --runner)")
        vocab_learning.build_vocab(config, log=_log)
        return
    from bert_tf.text import vocab_beam

    # Beam logs every worker's lifecycle at INFO; keep warnings (bad lines) and our summary
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger().setLevel(logging.WARNING)
    # Beam's worker processes import bert_tf: give them this checkout
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    vocab_beam.build_vocab(config, [f"--runner={FLAGS.runner}", *extra], log=_log)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
