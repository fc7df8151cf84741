"""LiteRT (TFLite) export of a `BertClassifier` with the tokenizer inside: raw UTF-8 strings in, predictions out.

`export_litert(model, export_dir, precision="int8", representative_texts=...)` converts the classifier to
``<export_dir>/model.tflite`` plus ``<export_dir>/model.json`` (labels, signature, input and output names,
precision, tokenizer settings), written atomically (`bert_tf.export.litert.write_litert_export`).

The .tflite runs in ``ai_edge_litert.interpreter.InterpreterWithCustomOps`` with tensorflow-text's LiteRT
registrar (`bert_tf.export.litert.load_interpreter` does this; `LiteRTClassifier` wraps it)::

    from ai_edge_litert.interpreter import InterpreterWithCustomOps
    from tensorflow_text import tflite_registrar
    interpreter = InterpreterWithCustomOps(model_path="model.tflite",
                                           custom_op_registerers=tflite_registrar.SELECT_TFTEXT_OPS)
    run = interpreter.get_signature_runner("serving_default")
    run(text=np.array(["great phone"], dtype=object))   # probabilities, class_ids, labels

Signatures (``text`` is a string tensor ``[B]``, any B; pair models take ``text_a`` and ``text_b``):

* ``serving_default``: classification -> ``probabilities`` [B, C] float32, ``class_ids`` [B] int64,
  ``labels`` [B] string; regression -> ``predictions`` [B] float32.
* ``tokenize``: -> ``input_word_ids``, ``input_mask``, ``input_type_ids`` int32 [B, T]: what the model saw.

T is the longest packed row of the batch (capped at the model's ``seq_length``): a batch of one short
sentence runs the encoder on exactly its own tokens, with no padding to 128. Preprocessing and precisions: see
`bert_tf.export.litert`.
"""


import numpy as np
import tensorflow as tf

from bert_tf.export.litert import (INT8_FLOAT_OPS, LiteRTPreprocessor, convert_module, encoder_sequence_output,
                                   load_interpreter, open_export, text_model_metadata, texts_columns,
                                   write_litert_export)
from bert_tf.model.encoder import BertEncoder
from bert_tf.text.packer import INPUT_KEYS

_CHECK_TEXTS = ("This is a check request.", "A second, longer check request: café 北京!")


class LiteRTTextModel(tf.Module):
    """The functions that become the .tflite: raw strings -> `LiteRTPreprocessor` -> encoder -> head -> outputs.

    Args:
      model: a `bert_tf.BertClassifier` with its preprocessor (vocabulary, casing, `seq_length`).
      seq_length: longest packed sequence (default: the preprocessor's).
    """

    float_ops = INT8_FLOAT_OPS  # what full int8 keeps float

    def __init__(self, model, seq_length=None):
        super().__init__(name="litert_text_model")
        if model.preprocessor is None:
            raise ValueError("LiteRT export needs a task model holding its preprocessor")
        self._model = model
        self.is_pair = bool(model.is_pair)
        self.is_regression = bool(model.is_regression)
        self.labels = None if self.is_regression else list(model.labels)
        self.preprocessor = LiteRTPreprocessor(model.preprocessor, seq_length=seq_length, is_pair=self.is_pair)
        self.seq_length, self.lower_case = self.preprocessor.seq_length, self.preprocessor.lower_case
        self.input_names = self.preprocessor.input_names
        self.output_names = (["predictions"] if self.is_regression else ["probabilities", "class_ids", "labels"])
        self.serving_default = self.preprocessor.signature(self.outputs)
        self.tokenize = self.preprocessor.tokenize

    def features(self, *texts):
        return self.preprocessor.features(*texts)

    def logits(self, features):
        model, encoder = self._model, self._model.encoder
        if not isinstance(encoder, BertEncoder):
            return tf.cast(model({k: features[k] for k in INPUT_KEYS}, training=False), tf.float32)
        pooled = tf.cast(encoder.pooler(encoder_sequence_output(encoder, features)), tf.float32)
        return tf.cast(model.head(model.dropout(pooled, training=False)), tf.float32)

    def outputs(self, *texts):
        logits = self.logits(self.features(*texts))
        if self.is_regression:
            return {"predictions": logits[:, 0]}
        class_ids = tf.argmax(logits, axis=-1, output_type=tf.int64)
        return {"probabilities": tf.nn.softmax(logits, axis=-1), "class_ids": class_ids,
                "labels": tf.gather(tf.constant(self.labels, tf.string), class_ids)}


def convert(model, precision="int8", representative_texts=None, seq_length=None, module_class=LiteRTTextModel):
    """The .tflite bytes of a `BertClassifier` (raw strings in), at `precision` (one of `PRECISIONS`), and the
    `module_class` module converted (a subclass of `LiteRTTextModel` changes the outputs).

    `representative_texts` (strings, or (a, b) pairs for pair models) calibrate `int8` activations; each is
    run alone (batch 1, as served on a device).
    """
    module = module_class(model, seq_length=seq_length)
    warm = texts_columns([("a", "b")] if module.is_pair else ["a"], module.is_pair)
    module.serving_default(*[tf.constant(c) for c in warm])  # variables exist before export
    endpoints = {"serving_default": module.serving_default, "tokenize": module.tokenize}
    return convert_module(module, endpoints, precision, representative_texts, module.float_ops), module


class LiteRTClassifier:
    """Runs an exported .tflite: `predict(texts)` -> NumPy outputs; `tokenize(texts)` -> the model's inputs.

    Args:
      path: the `model.tflite` (its `model.json` beside it is read if present), an export directory, or the
        .tflite bytes (e.g. of `convert_tokenizer`).
      num_threads: CPU threads (XNNPACK).
    """

    def __init__(self, path, num_threads=None):
        self.interpreter, self.path, self.metadata = open_export(path, num_threads=num_threads)
        signatures = self.interpreter.get_signature_list()
        self._serve = (self.interpreter.get_signature_runner("serving_default")
                       if "serving_default" in signatures else None)
        self._tokenize = self.interpreter.get_signature_runner("tokenize")
        self.input_names = sorted(signatures["tokenize"]["inputs"])

    def _feed(self, texts):
        is_pair = len(self.input_names) == 2
        return {name: np.array(col, dtype=object)
                for name, col in zip(self.input_names, texts_columns(texts, is_pair))}

    def predict(self, texts):
        """Strings (or (a, b) pairs) -> dict of NumPy outputs (string outputs as Python str)."""
        if self._serve is None:
            raise ValueError(f"{self.path} is a tokenizer-only model (no serving_default signature)")
        out = self._serve(**self._feed(texts))
        for key, value in out.items():
            if value.dtype == object:
                out[key] = np.array([x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in value],
                                    dtype=object)
        return out

    def tokenize(self, texts):
        """Strings (or pairs) -> `input_word_ids`, `input_mask`, `input_type_ids` int32 [B, T] as the model sees them."""
        return self._tokenize(**self._feed(texts))


def _check(tflite_bytes, module):
    """Loads the converted model in the LiteRT runtime and runs both signatures once (an op without a
    LiteRT kernel only fails here, at run time)."""
    interpreter = load_interpreter(tflite_bytes)
    texts = [(a, b) for a, b in zip(_CHECK_TEXTS, _CHECK_TEXTS[::-1])] if module.is_pair else list(_CHECK_TEXTS)
    feed = {name: np.array(col, dtype=object) for name, col in zip(module.input_names,
                                                                     texts_columns(texts, module.is_pair))}
    out = interpreter.get_signature_runner("serving_default")(**feed)
    interpreter.get_signature_runner("tokenize")(**feed)
    first = out["predictions"] if module.is_regression else out["probabilities"]
    if not np.all(np.isfinite(first)):
        raise RuntimeError("the converted LiteRT model gives non-finite outputs")


def export_litert(model, export_dir, precision="int8", representative_texts=None, task=None, seq_length=None,
                  module_class=LiteRTTextModel, extra_metadata=None):
    """Writes ``<export_dir>/model.tflite`` and ``<export_dir>/model.json``; returns the .tflite path.

    Args:
      model: a `bert_tf.BertClassifier` with its preprocessor.
      export_dir: output directory (created; files in it of the same names are replaced).
      precision: ``float32``, ``float16``, ``dynamic_int8`` or ``int8`` (full integer, calibrated).
      representative_texts: real texts (pairs for pair models) calibrating ``int8``.
      task: task name recorded in model.json.
      seq_length: longest packed input (default: the model preprocessor's).
      module_class: the `LiteRTTextModel` (subclass) converted; `extra_metadata`: model.json entries it adds.
    """
    tflite, module = convert(model, precision=precision, representative_texts=representative_texts,
                             seq_length=seq_length, module_class=module_class)
    _check(tflite, module)
    metadata = {
        "format": "bert_tf LiteRT text classifier",
        "task": task,
        "precision": precision,
        "labels": module.labels,
        "regression": module.is_regression,
        "is_pair": module.is_pair,
        **text_model_metadata(module, module.output_names, precision, representative_texts, tflite),
        **(extra_metadata or {}),
    }
    return write_litert_export(export_dir, tflite, metadata)
