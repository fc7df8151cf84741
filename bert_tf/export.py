"""Serving exports: raw text in, predictions out, loadable by TF Serving 2.12+.

`export_classifier(model, export_base)` takes the task model (a
`bert_tf.BertClassifier` holding its preprocessor, labels and task kind) and
writes ``<export_base>/<version>/``, a SavedModel with the preprocessor inside (dynamic padding: each batch is
padded only to its longest row, rounded up to a multiple of 8), built in a
temporary sibling directory and renamed into place, so a server polling
`export_base` never sees half a model. Versions increase by default
(largest existing integer + 1); ``version=`` sets one.

Signatures (all written by `keras.export.ExportArchive`, which TF Serving's
session-based loader accepts):

* ``serving_default``: ``text`` [B] string -> classification: ``probabilities``
  [B, C] float32, ``class_ids`` [B] int64, ``labels`` [B] string;
  regression: ``predictions`` [B] float32.
* ``predict_pairs``: ``text_a``, ``text_b`` [B] -> the same outputs for pairs.
* ``classify`` (classification) / ``regress`` (regression): ``inputs`` [B]
  serialized ``tf.Example`` with string feature ``text`` (single-text tasks) or
  ``text_a`` + ``text_b`` (pair tasks) -> ``classes`` [B, C] label strings and
  ``scores`` [B, C], or ``outputs`` [B]: the form TF Serving's Classify and
  Regress APIs expect.
* ``encode``: ``text`` -> ``pooled_output`` [B, H], ``sequence_output``
  [B, T, H], ``input_mask`` [B, T] (T = padded length of this batch).

``assets.extra/tf_serving_warmup_requests`` holds warmup `PredictionLog`
records for every signature, and ``assets.extra/bert_tf_export.json`` (the
export's one metadata record) the labels, task kind and preprocessing settings. Before the rename the export is
checked with `bert_tf.check_serving_ops` (only ops TF Serving 2.12+ links).

`export_hub_style(preprocessor, encoder, export_dir)` writes the TF Hub-style
pair for `tf.data` pipelines: ``<export_dir>/preprocessing`` (callable on
strings; ``tokenize``; ``bert_pack_inputs(segments, seq_length)``) and
``<export_dir>/encoder`` (callable on the input dict ->
``sequence_output``, ``pooled_output``, ``encoder_outputs``).

Example:

>>> from bert_tf.export import export_classifier                   # doctest: +SKIP
>>> path = export_classifier(classifier, "/tmp/models/bert", task="sst2")  # doctest: +SKIP
>>> path                                                           # doctest: +SKIP
'/tmp/models/bert/1'
>>> import tensorflow as tf, tensorflow_text                       # doctest: +SKIP
>>> m = tf.saved_model.load(path)                                  # doctest: +SKIP
>>> m.serving_default(tf.constant(["a fine film"]))["labels"]      # doctest: +SKIP
"""

import json
import os
import re
import shutil
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bert_tf.saved_model_ops import check_serving_ops  # noqa: E402

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
METADATA_FILE = os.path.join("assets.extra", "bert_tf_export.json")
DEFAULT_WARMUP_TEXTS = (
    "This is a warmup request.",
    "TF Serving runs these records once before the model takes traffic, café 北京!",
)
_VERSION_RE = re.compile(r"^\d+$")


# ------------------------------------------------------------------ versions


def existing_versions(export_base):
    """Sorted integer versions present under `export_base` (what TF Serving would see)."""
    if not os.path.isdir(export_base):
        return []
    return sorted(int(d) for d in os.listdir(export_base)
                  if _VERSION_RE.match(d) and os.path.isdir(os.path.join(export_base, d)))


def next_version(export_base):
    versions = existing_versions(export_base)
    return (versions[-1] + 1) if versions else 1


def atomic_export(export_base, version, write_fn, overwrite=False):
    """Calls ``write_fn(tmp_dir)`` on a temporary sibling, then renames it to
    ``<export_base>/<version>``. Returns the final path."""
    export_base = os.path.abspath(os.fspath(export_base))
    os.makedirs(export_base, exist_ok=True)
    if version is None:
        version = next_version(export_base)
    version = int(version)
    if version < 0:
        raise ValueError(f"version must be a non-negative integer, got {version}")
    final = os.path.join(export_base, str(version))
    if os.path.exists(final) and not overwrite:
        raise FileExistsError(f"export version {final!r} already exists (pass overwrite=True or another version)")
    # A hidden, non-integer name: servers polling export_base ignore it.
    tmp = tempfile.mkdtemp(prefix=f".tmp-export-{version}-", dir=export_base)
    try:
        write_fn(tmp)
        if os.path.exists(final):  # overwrite: move the old one away first, then swap
            old = tempfile.mkdtemp(prefix=f".old-export-{version}-", dir=export_base)
            os.rename(final, os.path.join(old, "v"))
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# ------------------------------------------------------------------ warmup


def write_warmup_requests(saved_model_dir, requests):
    """Writes `requests` (a list of `(signature_name, {input_name: list of
    str/bytes})`, or `("classify"/"regress", [serialized tf.Example, ...])`) as
    TF Serving warmup records to ``assets.extra/tf_serving_warmup_requests``."""
    from tensorflow_serving.apis import (classification_pb2, inference_pb2, model_pb2, predict_pb2,
                                         prediction_log_pb2, regression_pb2)

    del inference_pb2
    path = os.path.join(saved_model_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for signature, payload in requests:
            spec = model_pb2.ModelSpec(signature_name=signature)
            if signature in ("classify", "regress"):
                examples = [tf.train.Example.FromString(e) for e in payload]
                if signature == "classify":
                    req = classification_pb2.ClassificationRequest(model_spec=spec)
                    req.input.example_list.examples.extend(examples)
                    log = prediction_log_pb2.PredictionLog(
                        classify_log=prediction_log_pb2.ClassifyLog(request=req))
                else:
                    req = regression_pb2.RegressionRequest(model_spec=spec)
                    req.input.example_list.examples.extend(examples)
                    log = prediction_log_pb2.PredictionLog(
                        regress_log=prediction_log_pb2.RegressLog(request=req))
            else:
                req = predict_pb2.PredictRequest(model_spec=spec)
                for name, values in payload.items():
                    req.inputs[name].CopyFrom(tf.make_tensor_proto(
                        [v.encode("utf-8") if isinstance(v, str) else v for v in values], dtype=tf.string))
                log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=req))
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(saved_model_dir):
    """The warmup `PredictionLog` protos of an export (for tests and tools)."""
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(saved_model_dir, WARMUP_FILE)
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]


def make_example(**features):
    """A serialized tf.Example with string features (e.g. ``text=...`` or ``text_a=..., text_b=...``)."""
    feats = {k: tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[v.encode("utf-8") if isinstance(v, str) else v])) for k, v in features.items()}
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


# ------------------------------------------------------------------ classifier export


def _classifier_endpoints(model, pre):
    """The serving functions of a `BertClassifier` (raw text in, `model.outputs_from_logits` out)."""
    text_spec = tf.TensorSpec([None], tf.string, name="text")
    feature_names = ("text_a", "text_b") if model.is_pair else ("text",)
    example_spec = {k: tf.io.FixedLenFeature([], tf.string, default_value="") for k in feature_names}

    def logits_of(features):
        return tf.cast(model(features, training=False), tf.float32)

    @tf.function(input_signature=[text_spec])
    def serving_default(text):
        return model.outputs_from_logits(logits_of(pre(text)))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text_a"),
                                  tf.TensorSpec([None], tf.string, name="text_b")])
    def predict_pairs(text_a, text_b):
        return model.outputs_from_logits(logits_of(pre([text_a, text_b])))

    def from_examples(inputs):
        feats = tf.io.parse_example(inputs, example_spec)
        segments = [feats[k] for k in feature_names]
        return logits_of(pre(segments if model.is_pair else segments[0]))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(inputs):
        outputs = model.outputs_from_logits(from_examples(inputs))
        label_table = tf.constant(model.labels, tf.string)
        return {"classes": tf.tile(label_table[tf.newaxis, :], [tf.shape(inputs)[0], 1]),
                "scores": outputs["probabilities"]}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(inputs):
        return {"outputs": model.outputs_from_logits(from_examples(inputs))["predictions"]}

    @tf.function(input_signature=[text_spec])
    def encode(text):
        features = pre(text)
        out = model.encoder(features, training=False)
        return {"pooled_output": tf.cast(out["pooled_output"], tf.float32),
                "sequence_output": tf.cast(out["sequence_output"], tf.float32),
                "input_mask": features["input_mask"]}

    return [("serving_default", serving_default), ("predict_pairs", predict_pairs),
            ("regress", regress) if model.is_regression else ("classify", classify), ("encode", encode)]


def _classifier_warmup(model, texts):
    pairs_b = texts[1:] + texts[:1]
    if model.is_pair:
        examples = [make_example(text_a=a, text_b=b) for a, b in zip(texts, pairs_b)]
    else:
        examples = [make_example(text=t) for t in texts]
    return [("serving_default", {"text": texts}), ("predict_pairs", {"text_a": texts, "text_b": pairs_b}),
            ("regress" if model.is_regression else "classify", examples), ("encode", {"text": texts})]


def write_metadata(saved_model_dir, metadata):
    """Writes the export's one metadata record, ``assets.extra/bert_tf_export.json``."""
    path = os.path.join(saved_model_dir, METADATA_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=2)
    return path


def read_metadata(saved_model_dir):
    """The metadata record of an export (``assets.extra/bert_tf_export.json``)."""
    with open(os.path.join(saved_model_dir, METADATA_FILE), encoding="utf-8") as f:
        return json.load(f)


def export_classifier(model, export_base, version=None, task=None, pad_to_multiple_of=8, warmup_texts=None,
                      overwrite=False):
    """Exports a `bert_tf.BertClassifier` for serving; returns the version dir.

    Everything about the task comes from the model itself: its preprocessor
    (vocabulary, casing, `seq_length`), `labels`, `is_regression` and `is_pair`.

    Args:
      model: a `BertClassifier` with a preprocessor (always called with `training=False`).
      export_base: model base dir; the export goes to ``<export_base>/<version>``.
      version: integer version; default: one more than the largest present.
      task: task name, recorded in the metadata.
      pad_to_multiple_of: each request is padded to its longest row, rounded up to this.
      warmup_texts: texts for the warmup requests.
      overwrite: replace an existing version dir (atomically swapped).
    """
    if model.preprocessor is None:
        raise ValueError("export_classifier needs a BertClassifier with its preprocessor "
                         "(BertClassifier(encoder, preprocessor, ...))")
    pre = model.preprocessor.with_padding(dynamic_padding=True, pad_to_multiple_of=pad_to_multiple_of,
                                          name="serving_preprocessor")
    texts = list(warmup_texts or DEFAULT_WARMUP_TEXTS)
    model(pre(tf.constant(texts[:1])), training=False)  # variables exist before tracing
    endpoints = _classifier_endpoints(model, pre)
    metadata = {
        "format": "bert_tf text classifier",
        "task": task,
        "labels": None if model.is_regression else list(model.labels),
        "regression": model.is_regression,
        "is_pair": model.is_pair,
        "example_features": ["text_a", "text_b"] if model.is_pair else ["text"],
        "signatures": [name for name, _ in endpoints],
        "max_seq_length": pre.seq_length,
        "lower_case": pre.lower_case,
        "dynamic_padding": True,
        "pad_to_multiple_of": pad_to_multiple_of,
    }

    def write(tmp):
        # No archive.track(model): ExportArchive saves the variables the
        # endpoints use by itself, and tracking the Keras model as well would
        # store every weight twice (Keras variable + its tf.Variable).
        archive = keras.export.ExportArchive()
        for name, fn in endpoints:
            archive.add_endpoint(name, fn)
        archive.write_out(tmp, verbose=False)
        write_warmup_requests(tmp, _classifier_warmup(model, texts))
        write_metadata(tmp, metadata)
        check_serving_ops(tmp)

    return atomic_export(export_base, version, write, overwrite=overwrite)


# ------------------------------------------------------------------ TF Hub-style pair


class _PreprocessingModule(tf.Module):
    """TF Hub-style preprocessing object: callable, `tokenize`, `bert_pack_inputs`."""

    def __init__(self, preprocessor):
        super().__init__(name="bert_preprocessing")
        pre = preprocessor
        strings = tf.TensorSpec([None], tf.string, name="text")
        self.__call__ = tf.function(lambda text: pre(text), input_signature=[strings])
        self.tokenize = tf.function(lambda text: pre.tokenize(text), input_signature=[strings])
        pack = tf.function(lambda segments, seq_length: pre.bert_pack_inputs(segments, seq_length))
        ragged = tf.RaggedTensorSpec([None, None], tf.int32, ragged_rank=1, row_splits_dtype=tf.int64)
        length = tf.TensorSpec([], tf.int32, name="seq_length")
        pack.get_concrete_function([ragged], length)
        pack.get_concrete_function([ragged, ragged], length)
        self.bert_pack_inputs = pack
        self.seq_length = tf.constant(pre.seq_length, tf.int32)
        self.vocab_size = tf.constant(pre.vocab_size, tf.int32)


def export_hub_style(preprocessor, encoder, export_dir):
    """Writes ``<export_dir>/preprocessing`` and ``<export_dir>/encoder`` (TF Hub
    BERT conventions); returns the two paths.

    Use: ``pre = tf.saved_model.load(p); enc = tf.saved_model.load(e)``;
    ``enc(pre(tf.constant(["text"])))["pooled_output"]``; inside `Dataset.map`;
    ``pre.bert_pack_inputs([pre.tokenize(a), pre.tokenize(b)], seq_length=64)``;
    as Keras layers: ``keras.layers.TFSMLayer(p, call_endpoint="serving_default")``.
    """
    export_dir = os.path.abspath(os.fspath(export_dir))
    os.makedirs(export_dir, exist_ok=True)
    pre_dir = os.path.join(export_dir, "preprocessing")
    enc_dir = os.path.join(export_dir, "encoder")

    def write_pre(tmp):
        module = _PreprocessingModule(preprocessor)
        tf.saved_model.save(module, tmp, signatures={"serving_default": module.__call__})

    def write_enc(tmp):
        archive = keras.export.ExportArchive()  # variables tracked from the endpoints
        spec = {k: tf.TensorSpec([None, None], tf.int32, name=k)
                for k in ("input_word_ids", "input_mask", "input_type_ids")}

        def run(inputs):
            out = encoder(inputs, training=False)
            return {"sequence_output": out["sequence_output"], "pooled_output": out["pooled_output"],
                    "encoder_outputs": list(out["encoder_outputs"])}

        def serving_default(inputs):
            out = run(inputs)
            flat = {"sequence_output": out["sequence_output"], "pooled_output": out["pooled_output"]}
            for i, layer_out in enumerate(out["encoder_outputs"]):
                flat[f"encoder_outputs_{i}"] = layer_out
            return flat

        archive.add_endpoint("serving_default", serving_default, input_signature=[spec])
        # The TF Hub-style root call returns encoder_outputs as a list, which a
        # signature cannot; it is saved as a plain function of the archive's
        # root object (whose variables ExportArchive already tracks).
        archive._tf_trackable.__call__ = tf.function(run, input_signature=[spec])
        archive.write_out(tmp, verbose=False)

    for final, write in ((pre_dir, write_pre), (enc_dir, write_enc)):
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=export_dir)
        try:
            write(tmp)
            check_serving_ops(tmp)
            if os.path.exists(final):
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return pre_dir, enc_dir
