"""LiteRT (TFLite) export of a `BertSentenceEmbedder` with the tokenizer inside: raw UTF-8 strings in, embeddings out.

`export_litert(model, export_dir, precision="int8", representative_texts=...)` converts the embedder to
``<export_dir>/model.tflite`` plus ``<export_dir>/model.json`` (pooling, normalisation, embedding size, signature,
precision, tokenizer settings), written atomically (`bert_tf.export.litert.write_litert_export`).
`LiteRTEmbedder(path).embed(texts)` runs it in ``ai_edge_litert``'s interpreter with tensorflow-text's registrar.

Signatures (``text`` is a string tensor ``[B]``, any B):

* ``serving_default``: -> ``embedding`` [B, H] float32 (the model's pooling over the real tokens, unit L2 norm
  when the model normalises).
* ``tokenize``: -> ``input_word_ids``, ``input_mask``, ``input_type_ids`` int32 [B, T]: what the model saw.

Each batch is padded to its longest text (capped at the model's ``seq_length``). The preprocessing and the
precisions are `bert_tf.export.litert`'s (on printable ASCII the tokenizer is exactly the SavedModel's); full
``int8`` also keeps the pooling and normalisation float (`EMBEDDING_FLOAT_OPS`). Measured on MiniLM and real
sentences (tests/test_embedding_litert.py): float32 matches the SavedModel to a cosine of 0.99999; full int8
keeps a cosine of about 0.9 only (its per-tensor int8 activations lose MiniLM's outlier features), and
``dynamic_int8`` (int8 weights, float activations) about 0.997: the better int8 choice for embeddings. A
windowed embedder (``max_windows`` > 1) has no LiteRT export: the .tflite reads one window per text.
"""


import numpy as np
import tensorflow as tf

from bert_tf.export.litert import (INT8_FLOAT_OPS, LiteRTPreprocessor, convert_module, text_model_metadata,
                                   encoder_sequence_output, open_export, write_litert_export)
from bert_tf.model.encoder import BertEncoder
from bert_tf.text.packer import INPUT_KEYS

_CHECK_TEXTS = ("This is a check request.", "A second, longer check request: café 北京!")
OUTPUT_NAMES = ["embedding"]
# Full int8 also keeps the pooling and the L2 normalisation float: quantized, they cut the worst cosine with the
# float embedding on real sentences from 0.91 to 0.83 (MiniLM; the int8 matmuls account for the rest).
EMBEDDING_FLOAT_OPS = INT8_FLOAT_OPS + ("SUM", "DIV", "MAXIMUM", "REDUCE_MAX", "SELECT", "SELECT_V2",
                                       "L2_NORMALIZATION")


class LiteRTEmbeddingModel(tf.Module):
    """The functions that become the .tflite: strings -> `LiteRTPreprocessor` -> encoder -> pooling (-> L2).

    Args:
      model: a `BertSentenceEmbedder` with its preprocessor (vocabulary, casing, `seq_length`).
      seq_length: longest packed sequence (default: the preprocessor's).
    """

    def __init__(self, model, seq_length=None):
        super().__init__(name="litert_embedding_model")
        if model.preprocessor is None:
            raise ValueError("LiteRT export needs an embedder holding its preprocessor")
        if model.is_windowed:
            raise ValueError("the LiteRT export reads one window per text; a windowed embedder (max_windows > 1) "
                             "exports for serving with model.export")
        self._model = model
        self.is_pair = False
        self.preprocessor = LiteRTPreprocessor(model.preprocessor, seq_length=seq_length)
        self.seq_length, self.lower_case = self.preprocessor.seq_length, self.preprocessor.lower_case
        self.input_names = self.preprocessor.input_names
        self.serving_default = self.preprocessor.signature(self.outputs)
        self.tokenize = self.preprocessor.tokenize

    def outputs(self, text):
        features = self.preprocessor.features(text)
        model = self._model
        if isinstance(model.encoder, BertEncoder):
            sequence = encoder_sequence_output(model.encoder, features)
        else:
            sequence = model.encode({k: features[k] for k in INPUT_KEYS}, training=False)["sequence_output"]
        return {"embedding": model.pool(sequence, features["input_mask"])}


def convert(model, precision="int8", representative_texts=None, seq_length=None):
    """The .tflite bytes of a `BertSentenceEmbedder` (raw strings in) at `precision`, and its module.

    `representative_texts` (real strings) calibrate `int8` activations, each run alone (batch 1)."""
    module = LiteRTEmbeddingModel(model, seq_length=seq_length)
    module.serving_default(tf.constant(["a"]))  # variables exist before export
    endpoints = {"serving_default": module.serving_default, "tokenize": module.tokenize}
    return convert_module(module, endpoints, precision, representative_texts, EMBEDDING_FLOAT_OPS), module


class LiteRTEmbedder:
    """Runs an exported embedder .tflite: `embed(texts)` -> NumPy float32 [N, H]; `tokenize(texts)` -> its inputs.

    Args:
      path: the `model.tflite` (its `model.json` beside it is read if present), an export directory, or bytes.
      num_threads: CPU threads (XNNPACK).
    """

    def __init__(self, path, num_threads=None):
        self.interpreter, self.path, self.metadata = open_export(path, num_threads=num_threads)
        self._serve = self.interpreter.get_signature_runner("serving_default")
        self._tokenize = self.interpreter.get_signature_runner("tokenize")

    def run(self, texts):
        """Strings -> `{"embedding"}` NumPy arrays, all texts in one batch."""
        texts = list(texts)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"text {bad[0]} is a {type(texts[bad[0]]).__name__}, not a string")
        return self._serve(text=np.array(texts, dtype=object))

    def embed(self, texts, batch_size=1):
        """Embeddings [N, H] of a list of strings, `batch_size` at a time (1: as served on a device)."""
        texts = list(texts)
        parts = [self.run(texts[i:i + batch_size])["embedding"] for i in range(0, len(texts), batch_size)]
        return np.concatenate(parts) if parts else np.zeros([0, int(self.metadata.get("embedding_size", 0))])

    def tokenize(self, texts):
        """Strings -> `input_word_ids`, `input_mask`, `input_type_ids` int32 [B, T] as the model sees them."""
        return self._tokenize(text=np.array(list(texts), dtype=object))


def _check(tflite_bytes):
    """Runs both signatures of the converted model once in the LiteRT runtime (an op without a LiteRT kernel
    only fails here, at run time)."""
    embedder = LiteRTEmbedder(tflite_bytes)
    out = embedder.run(list(_CHECK_TEXTS))
    embedder.tokenize(list(_CHECK_TEXTS))
    if not np.all(np.isfinite(out["embedding"])):
        raise RuntimeError("the converted LiteRT embedder gives non-finite embeddings")


def export_litert(model, export_dir, precision="int8", representative_texts=None, task=None, seq_length=None):
    """Writes ``<export_dir>/model.tflite`` and ``<export_dir>/model.json``; returns the .tflite path.

    Args:
      model: a `BertSentenceEmbedder` with its preprocessor (not windowed).
      export_dir: output directory (created; files in it of the same names are replaced).
      precision: ``float32``, ``float16``, ``dynamic_int8`` or ``int8`` (full integer, calibrated).
      representative_texts: real texts calibrating ``int8``.
      task: task name recorded in model.json.
      seq_length: longest packed input (default: the model preprocessor's).
    """
    tflite, module = convert(model, precision=precision, representative_texts=representative_texts,
                             seq_length=seq_length)
    _check(tflite)
    metadata = {
        "format": "bert_tf LiteRT sentence embedder",
        "task": task or model.task_kind,
        "precision": precision,
        "pooling": model.pooling,
        "normalize": model.normalize,
        "embedding_size": model.embedding_size,
        **text_model_metadata(module, OUTPUT_NAMES, precision, representative_texts, tflite),
    }
    return write_litert_export(export_dir, tflite, metadata)
