"""LiteRT (TFLite) export of a `BertMultiLabelClassifier`: raw UTF-8 strings in, every label's sigmoid and the
predicted set out, at the decision thresholds the model holds when it is exported.

`export_litert(model, export_dir, precision="int8", representative_texts=...)` writes ``<export_dir>/model.tflite``
and ``model.json`` (labels, thresholds, separator, signatures, precision, tokenizer settings). The network, the
preprocessing (tensorflow-text's ``FastBertTokenizer`` inside, pair models take ``text_a`` and ``text_b``) and the
precisions are the single-label classifier's (`bert_tf.tasks.classification.litert`, `bert_tf.export.litert`);
`LiteRTClassifier(path).predict(texts)` runs it.

Signatures (``text`` is a string tensor ``[B]``, any B):

* ``serving_default``: -> ``probabilities`` [B, C] float32 (``sigmoid(logit)`` per label), ``predicted`` [B, C]
  bool (``probabilities >= thresholds``, label order) and ``label_set`` [B] string (the predicted labels joined
  by the separator, "" for none), as the SavedModel export returns them.
* ``tokenize``: -> ``input_word_ids``, ``input_mask``, ``input_type_ids`` int32 [B, T]: what the model saw.

The SavedModel joins the label set with ``ReduceJoin`` + ``Substr``, which have no LiteRT kernels; the .tflite
instead looks the set up in a table of every subset (2^C strings, indexed by the predicted bits), made from the
labels at export. Up to `MAX_LABEL_SET_LABELS` labels have it; a model with more labels exports without the
``label_set`` output (model.json then says so; ``predicted`` and ``labels`` give the set). Full ``int8`` keeps the
sigmoid and the threshold comparison float (`MULTI_LABEL_FLOAT_OPS`).

Measured (README, tests/test_litert_multi_label.py): float32 equals the Keras model (max |Δp| 1.8e-7 on MiniLM);
``dynamic_int8`` keeps 97-99.5% of the predicted sets, full ``int8`` 71-74% (it moves probabilities by ~0.005-0.02
on average, and a set flips wherever a probability sits near its threshold): ``dynamic_int8`` is the better int8
for multi-label models.
"""

import tensorflow as tf

from bert_tf.export.litert import INT8_FLOAT_OPS
from bert_tf.tasks.classification import litert as classifier_litert

# 2^12 = 4,096 joined strings at most in the .tflite (a few tens of KB for short label names).
MAX_LABEL_SET_LABELS = 12
MULTI_LABEL_FLOAT_OPS = INT8_FLOAT_OPS + ("LOGISTIC", "GREATER_EQUAL")


def has_label_set(labels):
    """Whether the .tflite of a model with these labels returns ``label_set`` (its subset table is small enough)."""
    return len(labels) <= MAX_LABEL_SET_LABELS


def label_set_table(labels, separator):
    """Every subset of `labels` joined by `separator` in label order, at the index whose bit j says label j."""
    return [separator.join(label for j, label in enumerate(labels) if index >> j & 1)
            for index in range(2 ** len(labels))]


class LiteRTMultiLabelModel(classifier_litert.LiteRTTextModel):
    """`LiteRTTextModel` whose outputs are the multi-label ones (see the module docstring).

    Args:
      model: a `BertMultiLabelClassifier` with its preprocessor; its current thresholds are baked in.
      seq_length: longest packed sequence (default: the preprocessor's).
    """

    float_ops = MULTI_LABEL_FLOAT_OPS

    def __init__(self, model, seq_length=None):
        self.thresholds = [float(t) for t in model.thresholds]
        self.label_separator = model.label_separator
        self.has_label_set = has_label_set(model.labels)
        super().__init__(model, seq_length=seq_length)
        self.output_names = ["probabilities", "predicted"] + (["label_set"] if self.has_label_set else [])

    def outputs(self, *texts):
        probabilities = tf.sigmoid(self.logits(self.features(*texts)))
        predicted = probabilities >= tf.constant(self.thresholds, tf.float32)[tf.newaxis, :]
        out = {"probabilities": probabilities, "predicted": predicted}
        if self.has_label_set:
            bits = tf.constant([2 ** j for j in range(len(self.labels))], tf.int32)[tf.newaxis, :]
            index = tf.reduce_sum(tf.cast(predicted, tf.int32) * bits, axis=-1)
            table = tf.constant(label_set_table(self.labels, self.label_separator), tf.string)
            out["label_set"] = tf.gather(table, index)
        return out


def export_litert(model, export_dir, precision="int8", representative_texts=None, task=None, seq_length=None):
    """Writes ``<export_dir>/model.tflite`` and ``<export_dir>/model.json``; returns the .tflite path.

    Args: as `bert_tf.tasks.classification.litert.export_litert` (`model`: a `BertMultiLabelClassifier`).
    """
    labels, thresholds = list(model.labels), [float(t) for t in model.thresholds]
    extra = {"format": "bert_tf LiteRT multi-label text classifier", "multi_label": True,
             "thresholds": dict(zip(labels, thresholds)), "label_separator": model.label_separator,
             "label_set_output": (True if has_label_set(labels) else
                                  f"omitted: over {MAX_LABEL_SET_LABELS} labels (read the set from 'predicted' and "
                                  "'labels')")}
    return classifier_litert.export_litert(model, export_dir, precision=precision,
                                           representative_texts=representative_texts, task=task,
                                           seq_length=seq_length, module_class=LiteRTMultiLabelModel,
                                           extra_metadata=extra)
