"""Export a fine-tuned BERT classifier for TF Serving (thin CLI over `bert_tf.export`).

Reads a model directory that `bert_tf.from_pretrained` understands (Google TF1
checkpoint, Hugging Face, or bert_tf's own `save_pretrained` output) whose extra
weights hold a classifier head under Google's names (`output_weights` [C, H],
`output_bias` [C]); `classifier_config.json` next to it (written by
`trainers/finetune.py`) supplies labels, task type and sequence length unless
flags override them. Writes `<export_base>/<version>/` atomically.

    python -m serving.export --model_dir=/tmp/finetuned --export_base=/tmp/models/bert
    python -m serving.export --model_dir=/tmp/finetuned --export_base=/tmp/models/bert \
        --labels=negative,neutral,positive --max_seq_length=128 --version=3
    # TF Hub-style preprocessing + encoder SavedModels (no head needed):
    python -m serving.export --model_dir=/path/to/bert --hub_dir=/tmp/hub
"""

import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Model dir for bert_tf.from_pretrained (with a classifier head).")
flags.DEFINE_string("export_base", None, "Serving base dir; the export goes to <export_base>/<version>.")
flags.DEFINE_integer("version", None, "Version number (default: largest existing + 1).")
flags.DEFINE_bool("overwrite", False, "Replace an existing version (atomic swap).")
flags.DEFINE_list("labels", None, "Class labels, in logit order (default: classifier_config.json or 0..C-1).")
flags.DEFINE_bool("regression", None, "Regression head (1 output). Default: from classifier_config.json / head.")
flags.DEFINE_bool("is_pair", None, "Sentence-pair task (classify/regress read text_a, text_b).")
flags.DEFINE_integer("max_seq_length", None, "Longest packed input (default: classifier_config.json or 128).")
flags.DEFINE_bool("lower_case", None, "Override the vocab casing found in model_dir.")
flags.DEFINE_string("task", None, "Task name recorded in the export's metadata.")
flags.DEFINE_integer("pad_to_multiple_of", 8, "Dynamic padding rounds each batch up to this multiple.")
flags.DEFINE_string("hub_dir", None, "Also write TF Hub-style preprocessing/ and encoder/ SavedModels here.")


def _pick(flag_value, config, key, default=None):
    if flag_value is not None:
        return flag_value
    return config.get(key, default) if config else default


def run(model_dir, export_base=None, hub_dir=None, version=None, overwrite=False, labels=None, regression=None,
        is_pair=None, max_seq_length=None, lower_case=None, task=None, pad_to_multiple_of=8):
    """Does the export; returns `{"export": path or None, "hub": (pre_dir, enc_dir) or None}`."""
    import tensorflow as tf

    import bert_tf
    from bert_tf import export as export_lib
    from bert_tf.classifier import BertClassifier
    from bert_tf.preprocessor import BertPreprocessor

    if not export_base and not hub_dir:
        raise app.UsageError("give --export_base (serving export) and/or --hub_dir (TF Hub-style pair)")
    pretrained = bert_tf.from_pretrained(model_dir)
    cfg_path = os.path.join(model_dir, "classifier_config.json")
    config = {}
    if os.path.isfile(cfg_path):
        with open(cfg_path, encoding="utf-8") as f:
            config = json.load(f)
    lower = _pick(lower_case, config, "lower_case", pretrained.lower_case)
    lower = True if lower is None else bool(lower)
    seq_length = int(_pick(max_seq_length, config, "max_seq_length", 128))
    pre = BertPreprocessor(pretrained.vocab_file, lower_case=lower, seq_length=seq_length)
    result = {"export": None, "hub": None}

    if export_base:
        head = pretrained.extra_weights or {}
        if "output_weights" not in head or "output_bias" not in head:
            raise app.UsageError(f"{model_dir!r} has no classifier head (output_weights/output_bias); "
                                 "export a fine-tuned model, or use --hub_dir for the encoder alone")
        num_classes = int(head["output_bias"].shape[0])
        labels = _pick(labels, config, "labels")
        regression = _pick(regression, config, "regression", num_classes == 1)
        clf = BertClassifier(pretrained.encoder, num_classes, preprocessor=pre, labels=None if regression else labels)
        clf(pre(tf.constant(["x"])), training=False)
        clf.load_head_weights(head, source=model_dir)
        result["export"] = export_lib.export_classifier(
            clf, export_base, version=version, labels=labels, regression=regression,
            is_pair=bool(_pick(is_pair, config, "is_pair", False)), overwrite=overwrite,
            task=_pick(task, config, "task"), pad_to_multiple_of=pad_to_multiple_of)
        logging.info("serving export written to %s", result["export"])
    if hub_dir:
        result["hub"] = export_lib.export_hub_style(pre, pretrained.encoder, hub_dir)
        logging.info("TF Hub-style pair written to %s", hub_dir)
    return result


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.model_dir:
        raise app.UsageError("--model_dir is required")
    result = run(FLAGS.model_dir, export_base=FLAGS.export_base, hub_dir=FLAGS.hub_dir, version=FLAGS.version,
                 overwrite=FLAGS.overwrite, labels=FLAGS.labels, regression=FLAGS.regression,
                 is_pair=FLAGS.is_pair, max_seq_length=FLAGS.max_seq_length, lower_case=FLAGS.lower_case,
                 task=FLAGS.task, pad_to_multiple_of=FLAGS.pad_to_multiple_of)
    if result["export"]:
        print(f"exported serving model to {result['export']}", flush=True)
    if result["hub"]:
        print(f"exported TF Hub-style preprocessing to {result['hub'][0]} and encoder to {result['hub'][1]}",
              flush=True)


if __name__ == "__main__":
    ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    app.run(main)
