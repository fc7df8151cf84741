"""LiteRT (TFLite) export of a `BertMultipleChoice`: raw context, question and options in; the choice out.

`export_litert(model, export_dir, precision="int8", representative_texts=...)` writes ``<export_dir>/model.tflite``
and ``model.json``; `LiteRTMultipleChoice(path).choose(contexts, questions, options)` runs it in ``ai_edge_litert``'s
interpreter with tensorflow-text's registrar. The tokenizer (``FastBertTokenizer``), its parity with the SavedModel
preprocessor and the precisions are `bert_tf.export.litert`'s.

Signatures (``context``, ``question`` string ``[B]``; ``options`` string ``[B, N]``, any B and any N):

* ``serving_default(context, question, options)`` -> ``choice`` [B] int64, ``probabilities`` [B, N] float32
  (``question`` "" for SWAG-style items with none: the SavedModel's ``without_question`` is not repeated here, as
  a second signature holding the encoder doubles a full-int8 file with an uncalibrated float copy: 116 MB vs 25 MB);
* ``tokenize(context, question, options)`` -> ``input_word_ids``, ``input_mask``, ``input_type_ids`` int32
  [B, N, T]: the pairs the encoder reads.

The packing is the SavedModel's (`BertMultipleChoice.pack_choices`): each option is one pair,
``[CLS] context [SEP] question option [SEP]`` (``[CLS] question [SEP] option [SEP]`` for a blank context), Google's
pair truncation; the outputs are `BertMultipleChoice.outputs_from_logits` (a blank option, e.g. the "" padding of a
shorter option list, gets probability 0; an item with none left gets ``choice`` -1). The SavedModel joins question and
option with ``StringJoin`` and tests blankness with ``StringStrip``/``StringLength``, which have no LiteRT kernels;
here each string is tokenized alone and the question's and the option's wordpieces are concatenated (the same ids:
a space between them is a word break) and "blank" means "no wordpiece". The two differ only for a text made of
characters the tokenizer drops (e.g. only control characters): the SavedModel reads it as present but empty.

Measured on 100 HellaSwag items (MiniLM, seeded untrained head, README): float32 max |Δp| 4.8e-7, same choice 100%;
``dynamic_int8`` 86%, full ``int8`` 52%: ``dynamic_int8`` or ``float16`` are the better small files.
"""

import numpy as np
import tensorflow as tf

from bert_tf.export.litert import (INT8_FLOAT_OPS, LiteRTPreprocessor, convert_module, encoder_sequence_output,
                                   open_export, text_model_metadata, write_litert_export)
from bert_tf.model.encoder import BertEncoder
from bert_tf.text.packer import INPUT_KEYS

INPUT_NAMES = ["context", "question", "options"]
OUTPUT_NAMES = ["choice", "probabilities"]
# Full int8 also keeps the masked softmax over the options float.
CHOICE_FLOAT_OPS = INT8_FLOAT_OPS + ("SELECT", "SELECT_V2", "REDUCE_MIN", "REDUCE_MAX", "EXP", "SUM", "DIV",
                                     "MAXIMUM", "REDUCE_ANY")
_CHECK_ITEMS = (("A man is sitting on a roof.", "he", ("starts pulling up roofing.", "is holding a cube.", "")),
                ("", "Where does water boil at 100 degrees, café 北京?", ("at sea level", "on the moon", "nowhere")))


class LiteRTMultipleChoiceModel(tf.Module):
    """The functions that become the .tflite: strings -> wordpieces -> B x N packed pairs -> encoder -> choice.

    Args:
      model: a `BertMultipleChoice` with its preprocessor (vocabulary, casing, `seq_length`).
      seq_length: longest packed pair (default: the preprocessor's).
    """

    def __init__(self, model, seq_length=None):
        super().__init__(name="litert_multiple_choice")
        if model.preprocessor is None:
            raise ValueError("LiteRT export needs a BertMultipleChoice holding its preprocessor")
        self._model = model
        self.is_pair = False  # three inputs: calibration takes dicts (`convert`)
        self.preprocessor = LiteRTPreprocessor(model.preprocessor, seq_length=seq_length, is_pair=True)
        self.seq_length, self.lower_case = self.preprocessor.seq_length, self.preprocessor.lower_case
        self.input_names = list(INPUT_NAMES)
        texts = tf.TensorSpec([None], tf.string, name="context"), tf.TensorSpec([None], tf.string, name="question")
        options = tf.TensorSpec([None, None], tf.string, name="options")

        def serving_default(context, question, options):
            return self.outputs(context, question, options)

        def tokenize(context, question, options):
            features, _ = self.features(context, question, options)
            return features

        self.serving_default = tf.function(serving_default, input_signature=[*texts, options], autograph=False)
        self.tokenize = tf.function(tokenize, input_signature=[*texts, options], autograph=False)

    def features(self, context, question, options):
        """-> (the encoder inputs int32 [B, N, T], bool [B, N]: the options holding a wordpiece)."""
        pre, width = self.preprocessor, self.seq_length
        batch, num_options = tf.shape(options)[0], tf.shape(options)[1]
        (c, lc), (q, lq) = pre.segment(context), pre.segment(question)
        o, lo = pre.segment(tf.reshape(options, [-1]))
        no_context = lc == 0  # a blank context: the question is the first segment, the option alone the second
        first, first_len = tf.where(no_context[:, tf.newaxis], q, c), tf.where(no_context, lq, lc)
        prefix, prefix_len = tf.where(no_context[:, tf.newaxis], tf.zeros_like(q), q), tf.where(no_context, 0, lq)
        item = tf.range(batch * num_options) // num_options  # the item of each (item, option) row
        first, first_len = tf.gather(first, item), tf.gather(first_len, item)
        prefix, prefix_len = tf.gather(prefix, item), tf.gather(prefix_len, item)
        # second = prefix's pieces then the option's: column j reads the option at j - prefix_len.
        j = tf.range(width)[tf.newaxis, :]
        from_option = tf.gather(o, tf.clip_by_value(j - prefix_len[:, tf.newaxis], 0, width - 1), batch_dims=1)
        second = tf.where(j < prefix_len[:, tf.newaxis], prefix, from_option)
        packed = pre.packer.pack_dense(first, first_len, second, prefix_len + lo)
        length = tf.shape(packed["input_word_ids"])[1]
        features = {k: tf.reshape(packed[k], [batch, num_options, length]) for k in INPUT_KEYS}
        return features, tf.reshape(lo > 0, [batch, num_options])

    def logits(self, features):
        model, encoder = self._model, self._model.encoder
        if not isinstance(encoder, BertEncoder):
            return tf.cast(model(features, training=False), tf.float32)
        shape = tf.shape(features["input_word_ids"])
        flat = {k: tf.reshape(features[k], [-1, shape[2]]) for k in INPUT_KEYS}
        pooled = encoder.pooler(encoder_sequence_output(encoder, flat))
        scores = tf.cast(model.head(model.dropout(pooled, training=False)), tf.float32)
        return tf.reshape(scores, [shape[0], shape[1]])

    def outputs(self, context, question, options):
        features, given = self.features(context, question, options)
        return self._model.outputs_from_logits(self.logits(features), given)


def calibration_items(representative_texts):
    """(context, question, options) items (or dicts with those keys) -> the dicts `convert_module` feeds; anything
    else is an error naming the item."""
    items = []
    for i, item in enumerate(representative_texts):
        if isinstance(item, dict):
            item = tuple(item.get(name) for name in INPUT_NAMES)
        if (not isinstance(item, (tuple, list)) or len(item) != 3 or not isinstance(item[0], str)
                or not isinstance(item[1], str) or not isinstance(item[2], (tuple, list)) or len(item[2]) < 1
                or not all(isinstance(o, str) for o in item[2])):
            raise ValueError(f"multiple-choice int8 calibration takes (context, question, options) items, options "
                             f"a list of strings; item {i} is {item!r:.200}")
        items.append({"context": item[0], "question": item[1], "options": list(item[2])})
    return items


def convert(model, precision="int8", representative_texts=None, seq_length=None):
    """The .tflite bytes of a `BertMultipleChoice` (raw strings in) at `precision`, and its module.

    `representative_texts`: real (context, question, options) items that calibrate `int8`, each run alone."""
    module = LiteRTMultipleChoiceModel(model, seq_length=seq_length)
    module.serving_default(tf.constant(["a"]), tf.constant(["b"]), tf.constant([["c", "d"]]))  # variables exist
    feeds = calibration_items(representative_texts) if representative_texts is not None else None
    endpoints = {"serving_default": module.serving_default, "tokenize": module.tokenize}
    return convert_module(module, endpoints, precision, feeds, CHOICE_FLOAT_OPS), module


class LiteRTMultipleChoice:
    """Runs an exported multiple-choice .tflite: `choose(contexts, questions, options)` -> NumPy outputs.

    Args:
      path: the `model.tflite` (its `model.json` beside it is read if present), an export directory, or bytes.
      num_threads: CPU threads (XNNPACK).
    """

    def __init__(self, path, num_threads=None):
        self.interpreter, self.path, self.metadata = open_export(path, num_threads=num_threads)
        self._serve = self.interpreter.get_signature_runner("serving_default")
        self._tokenize = self.interpreter.get_signature_runner("tokenize")

    @staticmethod
    def feed(contexts, questions, options):
        """Lists -> the input arrays: shorter option lists padded with "" (no option) to the longest; `questions`
        None: "" for every item."""
        contexts, options = list(contexts), [list(row) for row in options]
        if len(options) != len(contexts) or (questions is not None and len(questions) != len(contexts)):
            raise ValueError(f"{len(contexts)} contexts, {len(options)} option lists"
                             + ("" if questions is None else f", {len(questions)} questions") + ": one each per item")
        width = max([len(row) for row in options] + [1])
        return {"context": np.array(contexts, dtype=object),
                "question": np.array([""] * len(contexts) if questions is None else list(questions), dtype=object),
                "options": np.array([row + [""] * (width - len(row)) for row in options], dtype=object)}

    def choose(self, contexts, questions, options):
        """Items -> {"choice" int64 [B], "probabilities" float32 [B, N]}; `questions` None: items with none."""
        return self._serve(**self.feed(contexts, questions, options))

    def tokenize(self, contexts, questions, options):
        """Items -> `input_word_ids`, `input_mask`, `input_type_ids` int32 [B, N, T] as the encoder reads them."""
        return self._tokenize(**self.feed(contexts, questions, options))


def _check(tflite_bytes):
    """Runs both signatures of the converted model once in the LiteRT runtime (an op without a LiteRT kernel only
    fails here, at run time)."""
    runner = LiteRTMultipleChoice(tflite_bytes)
    contexts, questions, options = ([item[k] for item in _CHECK_ITEMS] for k in range(3))
    out = runner.choose(contexts, questions, options)
    runner.tokenize(contexts, questions, options)
    if not np.all(np.isfinite(out["probabilities"])):
        raise RuntimeError("the converted LiteRT multiple-choice model gives non-finite probabilities")


def export_litert(model, export_dir, precision="int8", representative_texts=None, task=None, seq_length=None):
    """Writes ``<export_dir>/model.tflite`` and ``<export_dir>/model.json``; returns the .tflite path.

    Args:
      model: a `BertMultipleChoice` with its preprocessor.
      export_dir: output directory (created; files in it of the same names are replaced).
      precision: ``float32``, ``float16``, ``dynamic_int8`` or ``int8`` (full integer, calibrated).
      representative_texts: real (context, question, options) items calibrating ``int8``.
      task: task name recorded in model.json.
      seq_length: longest packed pair (default: the model preprocessor's).
    """
    tflite, module = convert(model, precision=precision, representative_texts=representative_texts,
                             seq_length=seq_length)
    _check(tflite)
    metadata = {
        "format": "bert_tf LiteRT multiple choice",
        "task": task or model.task_kind,
        "precision": precision,
        "num_choices": model.num_choices,
        **text_model_metadata(module, OUTPUT_NAMES, precision, representative_texts, tflite),
    }
    metadata["signatures"]["tokenize"]["outputs"] = [f"{k} [B, N, T]" for k in INPUT_KEYS]
    metadata["options"] = "[B, N] string, any N; \"\" (or a text with no wordpiece) = no option"
    return write_litert_export(export_dir, tflite, metadata)
