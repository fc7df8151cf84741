r"""Export a fine-tuned BERT task model for TF Serving or LiteRT (thin program over the task model's own `export` and
`export_litert`).

From the task model that `trainers/finetune.py` saves (`<model_dir>/model.keras` of a classifier, a tagger or
a question answerer: encoder, preprocessor with its vocabulary, head, labels, task kind — nothing else is read):

    python trainers/export.py --keras_model=/tmp/run/model.keras --export_base=/tmp/models/bert

From a checkpoint directory that `bert_tf.from_pretrained` reads (Google TF1, Hugging Face or
`save_pretrained`) whose extra weights hold a classifier head under Google's names (`output_weights` [C, H],
`output_bias` [C]); the flags say what the checkpoint cannot (a `classifier_config.json` beside it, written
by earlier bert_tf versions, is still read for labels, task kind and sequence length):

    python trainers/export.py --model_dir=/tmp/finetuned --export_base=/tmp/models/bert \
        --labels=negative,neutral,positive --max_seq_length=128 --version=3

TF Hub-style preprocessing + encoder SavedModels (no head needed; the encoder has TF Hub's BERT encoder interface:
`hub.KerasLayer(<hub_dir>/encoder, trainable=True)`, and `from_pretrained` reads it back):

    python trainers/export.py --model_dir=/path/to/bert --hub_dir=/tmp/hub

LiteRT (.tflite with the tokenizer inside, for devices and single-request CPU serving; `bert_tf.export.litert`), from
either source; full int8 is calibrated on real texts, one per line (or a tsv/csv column, see --text_column):

    python trainers/export.py --keras_model=/tmp/run/model.keras --litert_export_dir=/tmp/litert \
        --litert_precision=int8 --representative_file=/data/train.tsv --representative_examples=200

(a multiple-choice model calibrates on items: --representative_file is a .jsonl / .csv in `--task=multiple_choice`'s
layout, e.g. its train file).

A keras-hub preset (`keras_hub.models.BertTextClassifier.from_preset(dir)` for a classifier, else
`BertBackbone` + `BertTokenizer` of the encoder; `bert_tf.save_keras_hub_preset`), from either source:

    python trainers/export.py --keras_model=/tmp/run/model.keras --format=keras_hub --preset_dir=/tmp/preset

The encoder as a Model Garden TF2 checkpoint (`official.nlp.modeling.networks.BertEncoder` restores it with
`tf.train.Checkpoint(encoder=encoder)`; `bert_tf.save_model_garden_checkpoint`), from either source:

    python trainers/export.py --model_dir=/path/to/bert --format=model_garden --checkpoint_dir=/tmp/mg

Writes `<export_base>/<version>/` atomically (a server polling `export_base` never sees half a model), and
`<litert_export_dir>/model.tflite` + `model.json` the same way.
"""

import csv
import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import bert_tf  # noqa: E402
from bert_tf import atomic  # noqa: E402
from bert_tf.export.hub import export_hub_style  # noqa: E402
from bert_tf.tasks.multiple_choice import data as choice_data  # noqa: E402
from bert_tf.tasks.multiple_choice.model import BertMultipleChoice  # noqa: E402

flags.DEFINE_string("keras_model", None, "A task model saved with model.save (finetune.py: <model_dir>/model.keras).")
flags.DEFINE_string("model_dir", None, "Or: a bert_tf.from_pretrained directory (with a classifier head).")
flags.DEFINE_enum("format", "serving", ["serving", "keras_hub", "model_garden"],
                  "serving: the SavedModel/TF Hub/LiteRT exports below; keras_hub: a keras-hub preset in --preset_dir; "
                  "model_garden: the encoder as a Model Garden TF2 checkpoint in --checkpoint_dir.")
flags.DEFINE_string("preset_dir", None, "--format=keras_hub: the preset directory to write.")
flags.DEFINE_bool("keras_hub_allow_gelu_tanh", False, "--format=keras_hub: write an exact-GELU encoder although "
                  "keras-hub computes the tanh GELU (outputs move by the difference).")
flags.DEFINE_string("checkpoint_dir", None, "--format=model_garden: the directory to write (bert_model.ckpt, "
                    "bert_config.json, vocab.txt).")
flags.DEFINE_bool("model_garden_allow_gelu_tanh", False, "--format=model_garden: write an exact-GELU encoder although "
                  "the Model Garden's BertEncoder computes the tanh GELU (outputs move by the difference).")
flags.DEFINE_string("export_base", None, "Serving base dir; the export goes to <export_base>/<version>.")
flags.DEFINE_integer("version", None, "Version number (default: largest existing + 1).")
flags.DEFINE_bool("overwrite", False, "Replace an existing version (atomic swap).")
flags.DEFINE_string("task", None, "Task name recorded in the export's metadata.")
flags.DEFINE_enum("serving_dtype", None, ["float32", "bfloat16", "float16"],
                  "Compute dtype of the serving export (default: the model's own). bfloat16/float16: the "
                  "encoder's matmuls in that dtype (weights, LayerNorm, softmax and outputs stay float32).")
flags.DEFINE_integer("pad_to_multiple_of", 8, "Classifier exports: dynamic padding rounds each batch up to this "
                     "multiple.")
flags.DEFINE_string("hub_dir", None, "Also write TF Hub-style preprocessing/ and encoder/ SavedModels here.")
flags.DEFINE_list("labels", None, "--model_dir: class labels in logit order (default classifier_config.json, 0..C-1).")
flags.DEFINE_bool("regression", None, "--model_dir: regression head (default: classifier_config.json / 1 output).")
flags.DEFINE_bool("is_pair", None, "--model_dir: sentence-pair task (classify/regress read text_a, text_b).")
flags.DEFINE_integer("max_seq_length", None, "--model_dir: longest packed input (default classifier_config.json, 128).")
flags.DEFINE_bool("lower_case", None, "--model_dir: override the vocab casing found there.")
# LiteRT export (device / single-request CPU serving)
flags.DEFINE_string("litert_export_dir", None, "Write <dir>/model.tflite (tokenizer inside) + model.json.")
flags.DEFINE_enum("litert_precision", "int8", ["float32", "float16", "dynamic_int8", "int8"], "LiteRT weights.")
flags.DEFINE_integer("representative_examples", 200, "Texts from --representative_file that calibrate int8.")
flags.DEFINE_string("representative_file", None, "int8 calibration texts: one per line, or a .tsv/.csv with a header "
                    "(multiple choice: a .jsonl/.csv of items in --task=multiple_choice's layout).")
flags.DEFINE_string("text_column", "sentence", "--representative_file tsv/csv: the text column.")
flags.DEFINE_string("text_b_column", None, "--representative_file tsv/csv: the second text (pair models).")
FLAGS = flags.FLAGS


def _legacy_classifier_config(model_dir):
    """`classifier_config.json` of a directory written by earlier bert_tf versions ({} if absent)."""
    path = os.path.join(model_dir, "classifier_config.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _pick(flag_value, legacy, key, default=None):
    return flag_value if flag_value is not None else legacy.get(key, default)


def classifier_from_checkpoint(pretrained, model_dir):
    """A `BertClassifier` from a from_pretrained directory with a Google-named head, flags filling the rest."""
    head = pretrained.extra_weights or {}
    if "output_weights" not in head or "output_bias" not in head:
        raise app.UsageError(f"{model_dir!r} has no classifier head (output_weights/output_bias); export a "
                             "fine-tuned model, or use --hub_dir for the encoder alone")
    legacy = _legacy_classifier_config(model_dir)
    lower = _pick(FLAGS.lower_case, legacy, "lower_case", pretrained.lower_case)
    preprocessor = bert_tf.BertPreprocessor(pretrained.vocab_file, lower_case=True if lower is None else bool(lower),
                                            seq_length=int(_pick(FLAGS.max_seq_length, legacy, "max_seq_length", 128)),
                                            dynamic_padding=True)
    num_classes = int(head["output_bias"].shape[0])
    if bool(_pick(FLAGS.regression, legacy, "regression", num_classes == 1)) != (num_classes == 1):
        raise app.UsageError(f"--regression does not fit the head's {num_classes} outputs")
    model = bert_tf.BertClassifier(pretrained.encoder, preprocessor, num_classes=num_classes,
                                   labels=_pick(FLAGS.labels, legacy, "labels"),
                                   is_pair=bool(_pick(FLAGS.is_pair, legacy, "is_pair", False)))
    model.build()
    model.load_head_weights(head, source=model_dir)
    return model, legacy.get("task")


def representative_texts(path, n, is_pair, seed=0):
    """`n` texts of `path` (a fixed random sample, file order): lines of a text file, or the --text_column
    (+ --text_b_column for pair models) of a .tsv/.csv with a header row."""
    with open(path, encoding="utf-8", newline="") as f:
        if path.endswith((".tsv", ".csv")):
            rows = list(csv.DictReader(f, delimiter="\t" if path.endswith(".tsv") else ","))
            columns = [FLAGS.text_column] + ([FLAGS.text_b_column] if is_pair else [])
            missing = [c for c in columns if c is None or (rows and c not in rows[0])]
            if missing:
                raise app.UsageError(f"--representative_file={path}: no column(s) {missing} "
                                     f"(set --text_column / --text_b_column)")
            texts = [tuple(r[c] for c in columns) if is_pair else r[columns[0]] for r in rows]
        else:
            if is_pair:
                raise app.UsageError("a pair model calibrates on a .tsv/.csv --representative_file "
                                     "(--text_column and --text_b_column)")
            texts = [line.rstrip("\n") for line in f if line.strip()]
    if not texts:
        raise app.UsageError(f"--representative_file={path} holds no texts")
    keep = sorted(np.random.default_rng(seed).permutation(len(texts))[:n].tolist())
    return [texts[i] for i in keep]


def representative_items(path, n, seed=0):
    """`n` (context, question, options) items of a multiple-choice .jsonl / .csv (a fixed random sample, file order),
    read by the task's own reader (malformed rows skipped and reported, as in fine-tuning)."""
    if not path.endswith((".jsonl", ".csv")):
        raise app.UsageError(f"--representative_file={path}: a multiple-choice model calibrates on items, a .jsonl "
                             "or .csv in --task=multiple_choice's layout (e.g. its train file)")
    examples = choice_data.read_choices(path).examples
    if not examples:
        raise app.UsageError(f"--representative_file={path} holds no valid multiple-choice items")
    keep = sorted(np.random.default_rng(seed).permutation(len(examples))[:n].tolist())
    return [(examples[i].context, examples[i].question, list(examples[i].options)) for i in keep]


def serving_export(model, task):
    """The serving SavedModel of a task model (its own `export`): `<export_base>/<version>/`."""
    if FLAGS.serving_dtype:
        model = model.with_compute_dtype(FLAGS.serving_dtype)
    options = {"pad_to_multiple_of": FLAGS.pad_to_multiple_of} if FLAGS["pad_to_multiple_of"].present else {}
    return model.export(FLAGS.export_base, version=FLAGS.version, task=task, overwrite=FLAGS.overwrite, **options)


def litert_export(model, task):
    """`<litert_export_dir>/model.tflite` + `model.json` of a task model (its own `export_litert`)."""
    if not model.has_litert_export:
        raise app.UsageError(f"{type(model).__name__} has no LiteRT export (its SavedModel export serves it)")
    texts = None
    if FLAGS.litert_precision == "int8" and isinstance(model, BertMultipleChoice):
        texts = representative_items(FLAGS.representative_file, FLAGS.representative_examples)
    elif FLAGS.litert_precision == "int8":
        is_pair = isinstance(model, bert_tf.BertClassifier) and model.is_pair  # pair models calibrate on pairs
        texts = representative_texts(FLAGS.representative_file, FLAGS.representative_examples, is_pair)
    return model.export_litert(FLAGS.litert_export_dir, precision=FLAGS.litert_precision,
                               representative_texts=texts, task=task)


def keras_hub_export():
    """--format=keras_hub: the task model of --keras_model or the --model_dir checkpoint (a classifier becomes a
    BertTextClassifier preset; an encoder a BertBackbone + BertTokenizer one; other tasks are an error)."""
    if not FLAGS.preset_dir:
        raise app.UsageError("--format=keras_hub writes to --preset_dir")
    if FLAGS.keras_model:
        model = keras.saving.load_model(FLAGS.keras_model)
    else:
        model = bert_tf.from_pretrained(FLAGS.model_dir)
        if "output_weights" in model.extra_weights:  # a fine-tuned classifier checkpoint keeps its head
            model, _ = classifier_from_checkpoint(model, FLAGS.model_dir)
    return bert_tf.save_keras_hub_preset(model, FLAGS.preset_dir, lower_case=FLAGS.lower_case,
                                         allow_gelu_tanh=FLAGS.keras_hub_allow_gelu_tanh, overwrite=FLAGS.overwrite)


def model_garden_export():
    """--format=model_garden: the encoder of --keras_model or --model_dir as a Model Garden TF2 BERT checkpoint
    (`bert_tf.save_model_garden_checkpoint`); a task model's head is not part of it."""
    if not FLAGS.checkpoint_dir:
        raise app.UsageError("--format=model_garden writes to --checkpoint_dir")
    if FLAGS.keras_model:
        model = keras.saving.load_model(FLAGS.keras_model)
        if model.preprocessor is None:
            raise app.UsageError(f"{FLAGS.keras_model}: a task model without a preprocessor has no vocabulary")
        os.makedirs(FLAGS.checkpoint_dir, exist_ok=True)
        vocab_file = atomic.write_file(os.path.join(FLAGS.checkpoint_dir, "vocab.txt"),
                                       "".join(token + "\n" for token in model.preprocessor.vocabulary))
        encoder = model.encoder
    else:
        encoder = bert_tf.from_pretrained(FLAGS.model_dir)
        vocab_file = encoder.vocab_file
    return bert_tf.save_model_garden_checkpoint(encoder, FLAGS.checkpoint_dir, vocab_file=vocab_file,
                                                allow_gelu_tanh=FLAGS.model_garden_allow_gelu_tanh)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if (FLAGS.keras_model is None) == (FLAGS.model_dir is None):
        raise app.UsageError("give exactly one of --keras_model and --model_dir")
    if FLAGS.format == "keras_hub":
        print(f"wrote keras-hub preset to {keras_hub_export()}", flush=True)
        return
    if FLAGS.format == "model_garden":
        print(f"wrote Model Garden checkpoint {model_garden_export()}", flush=True)
        return
    if not FLAGS.export_base and not FLAGS.hub_dir and not FLAGS.litert_export_dir:
        raise app.UsageError("give --export_base (serving export), --hub_dir (TF Hub-style pair) and/or "
                             "--litert_export_dir (LiteRT)")
    if FLAGS.litert_export_dir and FLAGS.litert_precision == "int8" and not FLAGS.representative_file:
        raise app.UsageError("--litert_precision=int8 calibrates on real texts: give --representative_file "
                             "(or choose --litert_precision=dynamic_int8, which needs none)")
    task = FLAGS.task
    if FLAGS.keras_model:
        model = keras.saving.load_model(FLAGS.keras_model)
        encoder, preprocessor = model.encoder, model.preprocessor
    else:
        pretrained = bert_tf.from_pretrained(FLAGS.model_dir)
        encoder = pretrained.encoder
        lower = FLAGS.lower_case if FLAGS.lower_case is not None else pretrained.lower_case
        preprocessor = bert_tf.BertPreprocessor(pretrained.vocab_file, lower_case=True if lower is None else lower,
                                                seq_length=FLAGS.max_seq_length or 128)
        model = None
        if FLAGS.export_base or FLAGS.litert_export_dir:
            model, legacy_task = classifier_from_checkpoint(pretrained, FLAGS.model_dir)
            preprocessor, task = model.preprocessor, task or legacy_task
    if FLAGS.export_base:
        print(f"exported serving model to {serving_export(model, task)}", flush=True)
    if FLAGS.hub_dir:
        pre_dir, enc_dir = export_hub_style(preprocessor, encoder, FLAGS.hub_dir)
        print(f"exported TF Hub-style preprocessing to {pre_dir} and encoder to {enc_dir}", flush=True)
    if FLAGS.litert_export_dir:
        print(f"exported LiteRT model to {litert_export(model, task)}", flush=True)

if __name__ == "__main__":
    app.run(main)
