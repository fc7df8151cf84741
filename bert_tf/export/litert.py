"""LiteRT (TFLite) export, shared by every task: the tokenizer inside, raw UTF-8 strings in.

* `LiteRTPreprocessor`: the preprocessing that goes into a .tflite — tensorflow-text's ``FastBertTokenizer`` on
  the model's own vocabulary and casing (ops ``FastBertNormalize`` + ``FastWordpieceTokenizeWithOffsets`` +
  ``RaggedTensorToTensor``, which have LiteRT kernels) and `bert_tf.text.packer.BertPacker.pack_dense` (dense TF
  ops only: no ``RaggedGather``, ``RaggedRange`` or ``Substr``). On printable ASCII it is exactly what the
  SavedModel preprocessor runs (that takes the same op for such rows); other text goes through
  ``FastBertNormalize``'s own Unicode tables instead of our regex rules, which have no LiteRT kernels
  (`bert_tf.export.litert_parity` measures where they differ).
* `encoder_sequence_output`: a `BertEncoder` run with LiteRT-friendly ops.
* `convert_module(module, endpoints, precision, representative_texts)`: `tf.function` endpoints -> .tflite bytes.
  Precisions: ``float32``; ``float16`` (weights stored as float16, computed in float32); ``dynamic_int8`` (int8
  weights, activations quantized on the fly); ``int8`` (int8 weights and activations of the dense matmuls and
  embeddings, calibrated on representative real texts run through the model's own preprocessing; the residual
  adds, LayerNorm, GELU, attention and softmax stay float, see `INT8_FLOAT_OPS`; inputs/outputs stay strings).
* `convert_tokenizer`: the preprocessing alone as a .tflite (tokenizer parity checks, apps with their own encoder).
* `load_interpreter`: ``ai_edge_litert.interpreter.InterpreterWithCustomOps`` with tensorflow-text's registrar.
* `write_litert_export(export_dir, tflite, metadata)`: ``<export_dir>/model.tflite`` + ``model.json`` (the
  export's metadata record, as `bert_tf.export.saved_model.write_metadata` writes it), written atomically: a new
  directory is built in a hidden sibling and renamed into place; an existing one gets each file replaced by a
  rename.

Each task's LiteRT model (its signatures and outputs) lives in its folder: `bert_tf.tasks.classification.litert`,
`bert_tf.tasks.tagging.litert`.
"""

import json
import os
import shutil
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_text as tf_text  # noqa: E402

from bert_tf.export.saved_model import read_metadata as read_export_metadata  # noqa: E402
from bert_tf.export.saved_model import write_metadata  # noqa: E402
from bert_tf.text.packer import INPUT_KEYS, BertPacker  # noqa: E402
from bert_tf.text.tokenizer import MAX_CHARS_PER_WORD, wordpiece_vocab  # noqa: E402

PRECISIONS = ("float32", "float16", "dynamic_int8", "int8")
MODEL_FILE = "model.tflite"
METADATA_FILE = "model.json"
RUNTIME = "ai-edge-litert==2.3.0 InterpreterWithCustomOps + tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS"
# Google's additive attention mask. exp(-10000) is 0 in float32 as exp(-1e9) is, and the smaller
# magnitude keeps the score range that int8 calibration sees sane.
_MASK_BIAS = -10000.0
# Full int8 keeps these float: quantizing the residual adds, LayerNorm (mean, variance, rsqrt), GELU, softmax
# and the logits to int8 lost 1.1 points of accuracy on the tweet dev set (and 9% of predictions changed),
# and int8 BATCH_MATMUL ran slower than float on XNNPACK; with them float, the int8 matmuls keep the speed
# (bench/litert.py has the figures).
INT8_FLOAT_OPS = ("ADD", "SUB", "MUL", "MEAN", "SQUARED_DIFFERENCE", "RSQRT", "GELU", "TANH", "SOFTMAX",
                  "BATCH_MATMUL", "ARG_MAX")


def litert_tokenizer(vocabulary, lower_case):
    """tensorflow-text's `FastBertTokenizer` as `bert_tf.BertTokenizer` builds it for ASCII rows (LiteRT kernels)."""
    return tf_text.FastBertTokenizer(
        vocab=wordpiece_vocab(list(vocabulary)), max_bytes_per_word=MAX_CHARS_PER_WORD, token_out_type=tf.int32,
        unknown_token="[UNK]", lower_case_nfd_strip_accents=bool(lower_case))


class LiteRTPreprocessor(tf.Module):
    """The preprocessing that goes into the .tflite: strings -> `FastBertTokenizer` -> dense packing.

    Args:
      preprocessor: the task model's `bert_tf.BertPreprocessor` (vocabulary, casing, special ids).
      seq_length: longest packed sequence (default: the preprocessor's).
      is_pair: take two strings per example (``text_a``, ``text_b``).
    """

    def __init__(self, preprocessor, seq_length=None, is_pair=False):
        super().__init__(name="litert_preprocessor")
        self.seq_length = int(seq_length or preprocessor.seq_length)
        self.lower_case = bool(preprocessor.lower_case)
        self.is_pair = bool(is_pair)
        self.tokenizer = litert_tokenizer(preprocessor.vocabulary, preprocessor.lower_case)
        ids = preprocessor.special_tokens
        self.packer = BertPacker(self.seq_length, cls_id=ids["cls_id"], sep_id=ids["sep_id"], pad_id=ids["pad_id"],
                                 dynamic_padding=True, pad_to_multiple_of=None, name="litert_packer")
        self.input_names = ["text_a", "text_b"] if self.is_pair else ["text"]
        self.tokenize = self.signature(self.features)

    def signature(self, fn):
        """`fn(*texts)` as a tf.function with this model's string inputs as its signature."""
        spec = [tf.TensorSpec([None], tf.string, name=n) for n in self.input_names]
        if self.is_pair:
            def pair(text_a, text_b):
                return fn(text_a, text_b)

            return tf.function(pair, input_signature=spec, autograph=False)

        def single(text):
            return fn(text)

        return tf.function(single, input_signature=spec, autograph=False)

    def segment(self, strings):
        """strings [B] -> (ids int32 [B, seq_length] zero padded, true lengths int32 [B])."""
        ids = self.tokenizer.tokenize(strings)
        if ids.ragged_rank > 1:
            ids = ids.merge_dims(-2, -1)
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        batch = tf.shape(strings, out_type=tf.int32)[0]
        dense = ids.to_tensor(default_value=0, shape=tf.stack([batch, self.seq_length]))
        return tf.cast(dense, tf.int32), lengths

    def features(self, *texts):
        """String tensor(s) [B] -> the encoder inputs, int32 [B, T] (T = longest packed row)."""
        a, la = self.segment(texts[0])
        if len(texts) == 1:
            return self.packer.pack_dense(a, la)
        b, lb = self.segment(texts[1])
        return self.packer.pack_dense(a, la, b, lb)


def texts_columns(texts, is_pair):
    """Texts (strings, or (a, b) pairs for pair models) -> list of per-input lists."""
    texts = list(texts)
    if is_pair:
        return [[str(a) for a, _ in texts], [str(b) for _, b in texts]]
    return [[str(t) for t in texts]]


def encoder_sequence_output(encoder, features):
    """`BertEncoder`'s sequence output from its own layers, with the attention bias built by reshape (the
    Keras layer's ``[:, None, None, :]`` is a StridedSlice with new axes, which has no LiteRT kernel)."""
    mask = features["input_mask"]
    shape = tf.shape(mask)
    # Reshaped while still the int mask: a float bias reshaped (RESHAPE is not kept float) is quantized in full int8
    # with the range calibration saw, and single unpadded calibration texts give it [0, 0]: -10000 became ~0, and
    # padded keys took most of the attention in any batch of unequal lengths.
    bias = (1.0 - tf.cast(tf.reshape(mask, [shape[0], 1, 1, shape[1]]), tf.float32)) * _MASK_BIAS
    x = encoder.embeddings(features["input_word_ids"], features["input_type_ids"], training=False)
    for block in encoder.transformer_layers:
        x = block(x, bias, training=False)
    return x


def convert_module(module, endpoints, precision, representative_texts=None, float_ops=INT8_FLOAT_OPS):
    """Converts the tf.functions `endpoints` of `module` (its `input_names`, `is_pair`) at `precision`
    (`float_ops`: the ops that full `int8` keeps float)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8" and not representative_texts:
        raise ValueError("int8 needs representative_texts (real training texts) to calibrate activations")
    with tempfile.TemporaryDirectory(prefix="bert_tf_litert_") as tmp:
        converter = _converter(tmp, endpoints)
        if precision == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif precision == "dynamic_int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        elif precision == "int8":
            feeds = calibration_feeds(module, representative_texts)

            def representative_dataset():
                for feed in feeds:
                    yield "serving_default", feed

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = tf.lite.RepresentativeDataset(representative_dataset)
            converter._experimental_calibrate_only = True
            return _quantize_calibrated(converter.convert(), float_ops)
        return converter.convert()


def calibration_feeds(module, representative_texts):
    """The int8 calibration inputs of ``serving_default``, one example (batch 1) each: `representative_texts` are
    strings, (a, b) pairs for pair models, or dicts {input name: value} for models with other inputs."""
    texts = list(representative_texts)
    if all(isinstance(t, dict) for t in texts):
        return [{name: np.array([t[name]], dtype=object) for name in module.input_names} for t in texts]
    columns = texts_columns(texts, module.is_pair)
    return [{name: np.array([col[i]], dtype=object) for name, col in zip(module.input_names, columns)}
            for i in range(len(columns[0]))]


def _quantize_calibrated(calibrated, float_ops):
    """int8 weights and activations for the matmuls (FULLY_CONNECTED) and the embedding lookups; the ops in
    `float_ops` stay float (what `tf.lite.experimental.QuantizationDebugger`'s denylist does)."""
    from tensorflow.lite.python.convert import mlir_quantize

    return mlir_quantize(calibrated, denylisted_ops=list(float_ops))


def _converter(tmp, endpoints):
    """A TFLiteConverter over a SavedModel of `endpoints` written by `keras.export.ExportArchive` (which saves
    Keras 3 variables so that the converter reads them; a plain tf.saved_model.save of a module holding a
    Keras model does not)."""
    archive = keras.export.ExportArchive()
    for name, fn in endpoints.items():
        archive.add_endpoint(name, fn)
    archive.write_out(tmp, verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=list(endpoints))
    converter.allow_custom_ops = True  # the tensorflow-text ops: LiteRT kernels via tflite_registrar
    converter.target_spec._experimental_custom_op_registerers = _registerers()  # int8 calibration runs them
    return converter


def convert_tokenizer(preprocessor, seq_length=None, is_pair=False):
    """The .tflite bytes of the preprocessing alone (signature ``tokenize``: strings -> `INPUT_KEYS`), exactly
    as it is inside `convert`'s model: for tokenizer parity checks and for apps that run their own encoder."""
    module = LiteRTPreprocessor(preprocessor, seq_length=seq_length, is_pair=is_pair)
    with tempfile.TemporaryDirectory(prefix="bert_tf_litert_") as tmp:
        return _converter(tmp, {"tokenize": module.tokenize}).convert()


def read_metadata(export_dir):
    """The `model.json` of a LiteRT export."""
    return read_export_metadata(export_dir, name=METADATA_FILE)


def _registerers():
    from tensorflow_text import tflite_registrar

    return list(tflite_registrar.SELECT_TFTEXT_OPS)


def load_interpreter(model, num_threads=None):
    """An `ai_edge_litert.interpreter.InterpreterWithCustomOps` for a .tflite path or bytes, with
    tensorflow-text's LiteRT kernels registered (XNNPACK on CPU)."""
    from ai_edge_litert.interpreter import InterpreterWithCustomOps

    source = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else {"model_path": str(model)}
    return InterpreterWithCustomOps(custom_op_registerers=_registerers(), num_threads=num_threads, **source)


def open_export(path, num_threads=None):
    """(interpreter, path, metadata) of a LiteRT export: `path` is its `model.tflite`, the export directory, or
    .tflite bytes (metadata {} when no `model.json` sits beside it). What every task's runner starts from."""
    metadata = {}
    if isinstance(path, (bytes, bytearray)):
        shown = "<bytes>"
    else:
        if os.path.isdir(path):
            path = os.path.join(path, MODEL_FILE)
        shown = path
        if os.path.exists(os.path.join(os.path.dirname(path), METADATA_FILE)):
            metadata = read_metadata(os.path.dirname(path))
    return load_interpreter(path, num_threads=num_threads), shown, metadata


def text_model_metadata(module, output_names, precision, representative_texts, tflite):
    """The `model.json` entries every raw-text LiteRT export shares (signatures, inputs/outputs, tokenizer, runtime,
    size); a task adds its own (format, labels, pooling ...)."""
    return {
        "signatures": {
            "serving_default": {"inputs": module.input_names, "outputs": output_names},
            "tokenize": {"inputs": module.input_names, "outputs": list(INPUT_KEYS)},
        },
        "inputs": module.input_names,
        "outputs": output_names,
        "max_seq_length": module.seq_length,
        "lower_case": module.lower_case,
        "tokenizer": "tensorflow_text.FastBertTokenizer (FastBertNormalize + FastWordpieceTokenize)",
        "representative_examples": len(representative_texts or []) if precision == "int8" else 0,
        "runtime": RUNTIME,
        "size_bytes": len(tflite),
    }


def write_litert_export(export_dir, tflite, metadata):
    """Writes ``<export_dir>/model.tflite`` and its ``model.json`` atomically; returns the .tflite path."""
    export_dir = os.path.abspath(os.fspath(export_dir))
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    if not os.path.exists(export_dir):
        tmp = tempfile.mkdtemp(prefix=f".tmp-litert-{os.path.basename(export_dir)}-", dir=parent)
        try:
            with open(os.path.join(tmp, MODEL_FILE), "wb") as f:
                f.write(tflite)
            write_metadata(tmp, metadata, name=METADATA_FILE)
            _readable(tmp)
            os.rename(tmp, export_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return os.path.join(export_dir, MODEL_FILE)
    # Existing directory: each file is written under a hidden name and renamed over the old one.
    written = []
    try:
        for name, data in ((MODEL_FILE, tflite), (METADATA_FILE, json.dumps(metadata, indent=2).encode("utf-8"))):
            fd, tmp = tempfile.mkstemp(prefix=f".tmp-{name}-", dir=export_dir)
            written.append(tmp)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        for name, tmp in zip((MODEL_FILE, METADATA_FILE), written):
            _readable(tmp)
            os.replace(tmp, os.path.join(export_dir, name))
    except BaseException:
        for tmp in written:
            if os.path.exists(tmp):
                os.remove(tmp)
        raise
    return os.path.join(export_dir, MODEL_FILE)


def _readable(path):
    """mkdtemp/mkstemp create owner-only entries: give them the modes a plain mkdir/open would (umask)."""
    umask = os.umask(0)
    os.umask(umask)
    if os.path.isdir(path):
        os.chmod(path, 0o777 & ~umask)
        for name in os.listdir(path):
            os.chmod(os.path.join(path, name), 0o666 & ~umask)
    else:
        os.chmod(path, 0o666 & ~umask)
