"""The serving SavedModel of a `BertClassifier`: raw text in, labels and probabilities out.

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

A windowed classifier (``max_windows`` > 1) classifies each text of ``serving_default`` and ``classify``/
``regress`` over its sliding windows (one prediction per document, the window logits pooled); ``predict_pairs``
and ``encode`` read the first window, and the metadata records ``max_windows``, ``window_stride``, ``window_pooling``.

``assets.extra/tf_serving_warmup_requests`` holds warmup `PredictionLog`
records for every signature, and ``assets.extra/bert_tf_export.json`` (the
export's one metadata record) the labels, task kind and preprocessing settings. Before the rename the export is
checked with `bert_tf.check_serving_ops` (only ops TF Serving 2.12+ links).

Example:

>>> from bert_tf.tasks.classification.export import export_classifier                   # doctest: +SKIP
>>> path = export_classifier(classifier, "/tmp/models/bert", task="sst2")  # doctest: +SKIP
>>> path                                                           # doctest: +SKIP
'/tmp/models/bert/1'
>>> import tensorflow as tf, tensorflow_text                       # doctest: +SKIP
>>> m = tf.saved_model.load(path)                                  # doctest: +SKIP
>>> m.serving_default(tf.constant(["a fine film"]))["labels"]      # doctest: +SKIP
"""

import tensorflow as tf

from bert_tf.export.saved_model import DEFAULT_WARMUP_TEXTS, export_signatures, make_example

def _classifier_endpoints(model, pre):
    """The serving functions of a `BertClassifier` (raw text in, `model.outputs_from_logits` out)."""
    text_spec = tf.TensorSpec([None], tf.string, name="text")
    feature_names = ("text_a", "text_b") if model.is_pair else ("text",)
    example_spec = {k: tf.io.FixedLenFeature([], tf.string, default_value="") for k in feature_names}

    def logits_of(features):
        return tf.cast(model(features, training=False), tf.float32)

    def text_features(text):
        """One text per document: its sliding windows for a windowed model, else the truncated packing."""
        return model.window_features(text, pre)[0] if model.is_windowed else pre(text)

    @tf.function(input_signature=[text_spec])
    def serving_default(text):
        return model.outputs_from_logits(logits_of(text_features(text)))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text_a"),
                                  tf.TensorSpec([None], tf.string, name="text_b")])
    def predict_pairs(text_a, text_b):
        return model.outputs_from_logits(logits_of(pre([text_a, text_b])))

    def from_examples(inputs):
        feats = tf.io.parse_example(inputs, example_spec)
        segments = [feats[k] for k in feature_names]
        return logits_of(pre(segments) if model.is_pair else text_features(segments[0]))

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


def export_classifier(model, export_base, version=None, task=None, pad_to_multiple_of=8, warmup_texts=None,
                      overwrite=False, extra_metadata=None):
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
      extra_metadata: entries added to (or replacing) the metadata record (e.g. a multi-label model's thresholds).
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
        **({"max_windows": model.max_windows, "window_stride": model.window_stride,
            "window_pooling": model.window_pooling} if model.is_windowed else {}),
        **(extra_metadata or {}),
    }
    return export_signatures(export_base, endpoints, _classifier_warmup(model, texts), metadata, version=version,
                             overwrite=overwrite)
