"""LiteRT (TFLite) export of a task model with the tokenizer inside: raw UTF-8 strings in, predictions out.

`export_litert(model, export_dir, precision="int8", representative_texts=...)` converts a
`bert_tf.BertClassifier` to ``<export_dir>/model.tflite`` plus ``<export_dir>/model.json`` (labels, signature,
input and output names, precision, tokenizer settings), written atomically: a new directory is built in a
hidden sibling and renamed into place; an existing one gets each file replaced by a rename.

The .tflite runs in ``ai_edge_litert.interpreter.InterpreterWithCustomOps`` with tensorflow-text's LiteRT
registrar (`load_interpreter` does this)::

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
sentence runs the encoder on exactly its own tokens, with no padding to 128.

The tokenizer inside is tensorflow-text's ``FastBertTokenizer`` on the model's own vocabulary and casing
(ops ``FastBertNormalize`` + ``FastWordpieceTokenizeWithOffsets`` + ``RaggedTensorToTensor``, which have
LiteRT kernels); packing is `bert_tf.packer.BertPacker.pack_dense` (dense TF ops only: no ``RaggedGather``,
``RaggedRange`` or ``Substr``). On printable ASCII it is exactly what the SavedModel preprocessor runs
(that takes the same op for such rows); other text goes through ``FastBertNormalize``'s own Unicode tables
instead of our regex rules, which have no LiteRT kernels (`bert_tf.litert_parity` measures where they differ).

Precisions: ``float32``; ``float16`` (weights stored as float16, computed in float32); ``dynamic_int8``
(int8 weights, activations quantized on the fly); ``int8`` (int8 weights and activations of the dense matmuls and
embeddings, calibrated on representative real texts run through the model's own preprocessing; the residual
adds, LayerNorm, GELU, attention and softmax stay float, see `INT8_FLOAT_OPS`; inputs/outputs stay strings).
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

from bert_tf.encoder import BertEncoder  # noqa: E402
from bert_tf.packer import INPUT_KEYS, BertPacker  # noqa: E402
from bert_tf.tokenizer import MAX_CHARS_PER_WORD, _wordpiece_vocab  # noqa: E402

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
_CHECK_TEXTS = ("This is a check request.", "A second, longer check request: café 北京!")


def litert_tokenizer(vocabulary, lower_case):
    """tensorflow-text's `FastBertTokenizer` as `bert_tf.BertTokenizer` builds it for ASCII rows (LiteRT kernels)."""
    return tf_text.FastBertTokenizer(
        vocab=_wordpiece_vocab(list(vocabulary)), max_bytes_per_word=MAX_CHARS_PER_WORD, token_out_type=tf.int32,
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

    def _segment(self, strings):
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
        a, la = self._segment(texts[0])
        if len(texts) == 1:
            return self.packer.pack_dense(a, la)
        b, lb = self._segment(texts[1])
        return self.packer.pack_dense(a, la, b, lb)


class LiteRTTextModel(tf.Module):
    """The functions that become the .tflite: raw strings -> `LiteRTPreprocessor` -> encoder -> head -> outputs.

    Args:
      model: a `bert_tf.BertClassifier` with its preprocessor (vocabulary, casing, `seq_length`).
      seq_length: longest packed sequence (default: the preprocessor's).
    """

    def __init__(self, model, seq_length=None):
        super().__init__(name="litert_text_model")
        if getattr(model, "preprocessor", None) is None:
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


def _texts_columns(texts, is_pair):
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
    bias = tf.reshape((1.0 - tf.cast(mask, tf.float32)) * _MASK_BIAS, [shape[0], 1, 1, shape[1]])
    x = encoder.embeddings(features["input_word_ids"], features["input_type_ids"], training=False)
    for block in encoder.transformer_layers:
        x = block(x, bias, training=False)
    return x


def convert(model, precision="int8", representative_texts=None, seq_length=None):
    """The .tflite bytes of a `BertClassifier` (raw strings in), at `precision` (one of `PRECISIONS`).

    `representative_texts` (strings, or (a, b) pairs for pair models) calibrate `int8` activations; each is
    run alone (batch 1, as served on a device).
    """
    module = LiteRTTextModel(model, seq_length=seq_length)
    warm = _texts_columns([("a", "b")] if module.is_pair else ["a"], module.is_pair)
    module.serving_default(*[tf.constant(c) for c in warm])  # variables exist before export
    endpoints = {"serving_default": module.serving_default, "tokenize": module.tokenize}
    return convert_module(module, endpoints, precision, representative_texts), module


def convert_module(module, endpoints, precision, representative_texts=None):
    """Converts the tf.functions `endpoints` of `module` (its `input_names`, `is_pair`) at `precision`."""
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
            is_pair = getattr(module, "is_pair", False)
            columns = _texts_columns(representative_texts, is_pair)

            def representative_dataset():
                for i in range(len(columns[0])):
                    yield "serving_default", {name: np.array([col[i]], dtype=object)
                                              for name, col in zip(module.input_names, columns)}

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = tf.lite.RepresentativeDataset(representative_dataset)
            converter._experimental_calibrate_only = True
            return _quantize_calibrated(converter.convert())
        return converter.convert()


def _quantize_calibrated(calibrated):
    """int8 weights and activations for the matmuls (FULLY_CONNECTED) and the embedding lookups; the ops in
    `INT8_FLOAT_OPS` stay float (what `tf.lite.experimental.QuantizationDebugger`'s denylist does)."""
    from tensorflow.lite.python.convert import mlir_quantize

    return mlir_quantize(calibrated, denylisted_ops=list(INT8_FLOAT_OPS))


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


def _registerers():
    from tensorflow_text import tflite_registrar

    return list(tflite_registrar.SELECT_TFTEXT_OPS)


def load_interpreter(model, num_threads=None):
    """An `ai_edge_litert.interpreter.InterpreterWithCustomOps` for a .tflite path or bytes, with
    tensorflow-text's LiteRT kernels registered (XNNPACK on CPU)."""
    from ai_edge_litert.interpreter import InterpreterWithCustomOps

    source = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else {"model_path": str(model)}
    return InterpreterWithCustomOps(custom_op_registerers=_registerers(), num_threads=num_threads, **source)


class LiteRTClassifier:
    """Runs an exported .tflite: `predict(texts)` -> NumPy outputs; `tokenize(texts)` -> the model's inputs.

    Args:
      path: the `model.tflite` (its `model.json` beside it is read if present), an export directory, or the
        .tflite bytes (e.g. of `convert_tokenizer`).
      num_threads: CPU threads (XNNPACK).
    """

    def __init__(self, path, num_threads=None):
        self.metadata = {}
        if isinstance(path, (bytes, bytearray)):
            self.path = "<bytes>"
        else:
            if os.path.isdir(path):
                path = os.path.join(path, MODEL_FILE)
            self.path = path
            if os.path.exists(os.path.join(os.path.dirname(path), METADATA_FILE)):
                self.metadata = read_metadata(os.path.dirname(path))
        self.interpreter = load_interpreter(path, num_threads=num_threads)
        signatures = self.interpreter.get_signature_list()
        self._serve = (self.interpreter.get_signature_runner("serving_default")
                       if "serving_default" in signatures else None)
        self._tokenize = self.interpreter.get_signature_runner("tokenize")
        self.input_names = sorted(signatures["tokenize"]["inputs"])

    def _feed(self, texts):
        is_pair = len(self.input_names) == 2
        return {name: np.array(col, dtype=object)
                for name, col in zip(self.input_names, _texts_columns(texts, is_pair))}

    def predict(self, texts):
        """Strings (or (a, b) pairs) -> dict of NumPy outputs (labels as Python str)."""
        if self._serve is None:
            raise ValueError(f"{self.path} is a tokenizer-only model (no serving_default signature)")
        out = self._serve(**self._feed(texts))
        if "labels" in out:
            out["labels"] = np.array([x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in out["labels"]],
                                     dtype=object)
        return out

    def tokenize(self, texts):
        """Strings (or pairs) -> `input_word_ids`, `input_mask`, `input_type_ids` int32 [B, T] as the model sees them."""
        return self._tokenize(**self._feed(texts))


def write_metadata(export_dir, metadata):
    path = os.path.join(export_dir, METADATA_FILE)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=2)
    return path


def read_metadata(export_dir):
    """The `model.json` of a LiteRT export."""
    with open(os.path.join(export_dir, METADATA_FILE), encoding="utf-8") as f:
        return json.load(f)


def _check(tflite_bytes, module):
    """Loads the converted model in the LiteRT runtime and runs both signatures once (an op without a
    LiteRT kernel only fails here, at run time)."""
    interpreter = load_interpreter(tflite_bytes)
    texts = [(a, b) for a, b in zip(_CHECK_TEXTS, _CHECK_TEXTS[::-1])] if module.is_pair else list(_CHECK_TEXTS)
    feed = {name: np.array(col, dtype=object) for name, col in zip(module.input_names,
                                                                     _texts_columns(texts, module.is_pair))}
    out = interpreter.get_signature_runner("serving_default")(**feed)
    interpreter.get_signature_runner("tokenize")(**feed)
    first = out["predictions"] if module.is_regression else out["probabilities"]
    if not np.all(np.isfinite(first)):
        raise RuntimeError("the converted LiteRT model gives non-finite outputs")


def export_litert(model, export_dir, precision="int8", representative_texts=None, task=None, seq_length=None):
    """Writes ``<export_dir>/model.tflite`` and ``<export_dir>/model.json``; returns the .tflite path.

    Args:
      model: a `bert_tf.BertClassifier` with its preprocessor.
      export_dir: output directory (created; files in it of the same names are replaced).
      precision: ``float32``, ``float16``, ``dynamic_int8`` or ``int8`` (full integer, calibrated).
      representative_texts: real texts (pairs for pair models) calibrating ``int8``.
      task: task name recorded in model.json.
      seq_length: longest packed input (default: the model preprocessor's).
    """
    tflite, module = convert(model, precision=precision, representative_texts=representative_texts,
                             seq_length=seq_length)
    _check(tflite, module)
    metadata = {
        "format": "bert_tf LiteRT text classifier",
        "task": task,
        "precision": precision,
        "labels": module.labels,
        "regression": module.is_regression,
        "is_pair": module.is_pair,
        "signatures": {
            "serving_default": {"inputs": module.input_names, "outputs": module.output_names},
            "tokenize": {"inputs": module.input_names, "outputs": list(INPUT_KEYS)},
        },
        "inputs": module.input_names,
        "outputs": module.output_names,
        "max_seq_length": module.seq_length,
        "lower_case": module.lower_case,
        "tokenizer": "tensorflow_text.FastBertTokenizer (FastBertNormalize + FastWordpieceTokenize)",
        "representative_examples": len(representative_texts or []) if precision == "int8" else 0,
        "runtime": RUNTIME,
        "size_bytes": len(tflite),
    }
    return _write_atomically(export_dir, tflite, metadata)


def _write_atomically(export_dir, tflite, metadata):
    export_dir = os.path.abspath(os.fspath(export_dir))
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    if not os.path.exists(export_dir):
        tmp = tempfile.mkdtemp(prefix=f".tmp-litert-{os.path.basename(export_dir)}-", dir=parent)
        try:
            with open(os.path.join(tmp, MODEL_FILE), "wb") as f:
                f.write(tflite)
            write_metadata(tmp, metadata)
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
