"""Serving exports, shared by every task: versioned, atomic SavedModels that TF Serving 2.12+ loads.

* `atomic_export(export_base, version, write_fn)`: `write_fn` fills a hidden temporary sibling, which is then
  renamed to ``<export_base>/<version>/`` (default version: the largest present + 1), so a server polling
  `export_base` never sees half a model;
* `write_warmup_requests` / `read_warmup_requests`: ``assets.extra/tf_serving_warmup_requests`` records;
* `write_metadata` / `read_metadata`: the export's one metadata record, ``assets.extra/bert_tf_export.json``
  (LiteRT exports write the same record as ``model.json``);
* `export_signatures(export_base, endpoints, warmup_requests, metadata)`: all of the above for a task's
  `tf.function` endpoints (a `keras.export.ExportArchive`, which TF Serving's session loader accepts), checked
  with `check_serving_ops` before the rename;
* `make_example`: a serialized ``tf.Example`` with string features (Classify/Regress API inputs).

Each task's own export (its signatures) lives in its folder: `bert_tf.tasks.<task>.export`; the TF Hub-style
preprocessing/encoder pair in `bert_tf.export.hub`.
"""

import json
import os
import re
import shutil
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bert_tf.export.serving_ops import check_serving_ops  # noqa: E402

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


def write_metadata(saved_model_dir, metadata, name=METADATA_FILE):
    """Writes the export's one metadata record (``assets.extra/bert_tf_export.json``, or `name` inside
    `saved_model_dir`)."""
    path = os.path.join(saved_model_dir, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=2)
    return path


def read_metadata(saved_model_dir, name=METADATA_FILE):
    """The metadata record of an export (``assets.extra/bert_tf_export.json``, or `name`)."""
    with open(os.path.join(saved_model_dir, name), encoding="utf-8") as f:
        return json.load(f)


def export_signatures(export_base, endpoints, warmup_requests, metadata, version=None, overwrite=False):
    """Writes `endpoints` (``[(signature name, tf.function with an input signature)]``) as a serving SavedModel
    with its warmup records and metadata record, checks its ops against TF Serving 2.12+, and renames it into
    ``<export_base>/<version>/`` (`atomic_export`); returns that path."""
    def write(tmp):
        # No archive.track(model): ExportArchive saves the variables the endpoints use by itself, and tracking
        # the Keras model as well would store every weight twice (Keras variable + its tf.Variable).
        archive = keras.export.ExportArchive()
        for name, fn in endpoints:
            archive.add_endpoint(name, fn)
        archive.write_out(tmp, verbose=False)
        write_warmup_requests(tmp, warmup_requests)
        write_metadata(tmp, metadata)
        check_serving_ops(tmp)

    return atomic_export(export_base, version, write, overwrite=overwrite)
