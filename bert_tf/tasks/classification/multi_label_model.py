"""`BertMultiLabelClassifier`: one sigmoid per label on BERT's pooled output, with its decision thresholds.

The network is `BertClassifier`'s (dropout on ``pooled_output`` and one dense layer to C logits), read as C
independent yes/no decisions: label j's probability is ``sigmoid(logit_j)`` and the predicted set is every label
whose probability reaches its threshold. The thresholds are a non-trainable weight ``decision_thresholds`` [C]
(0.5 until tuned on dev data, `bert_tf.tasks.classification.multi_label_metrics.tune_thresholds`), so the training
checkpoints, ``model.keras`` and the serving export carry the ones in force.

``outputs_from_logits`` (what exports return): ``probabilities`` [B, C] float32, ``predicted`` [B, C] bool
(label order), ``label_set`` [B] string (the predicted labels joined by ``label_separator``, "" for none).

>>> import numpy as np, bert_tf
>>> from bert_tf.tasks.classification.multi_label_model import BertMultiLabelClassifier
>>> enc = bert_tf.BertEncoder(bert_tf.BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
...                                              num_attention_heads=2, intermediate_size=16))
>>> model = BertMultiLabelClassifier(enc, labels=["LOC", "ORG", "PER"]); model.build()
>>> model.set_thresholds([0.3, 0.5, 0.9])
>>> out = model.outputs_from_logits(np.array([[0.0, 2.0, 1.0]], "float32"))
>>> out["predicted"].numpy().tolist(), out["label_set"].numpy().tolist()
([[True, True, False]], [b'LOC,ORG'])
"""

import keras
import numpy as np
import tensorflow as tf

from bert_tf.tasks.classification import export as export_lib
from bert_tf.tasks.classification import multi_label_litert
from bert_tf.tasks.classification.model import BertClassifier


@keras.saving.register_keras_serializable(package="bert_tf")
class BertMultiLabelClassifier(BertClassifier):
    """`BertClassifier` with sigmoid outputs and per-label decision thresholds (see the module docstring).

    Args: as `BertClassifier` (``labels`` required, at least two; no regression), plus
      label_separator: joins the predicted labels in the ``label_set`` output.
    """

    def __init__(self, encoder, preprocessor=None, labels=None, is_pair=False, dropout_rate=None,
                 initializer_range=None, label_separator=",", **kwargs):
        kwargs.pop("num_classes", None)  # get_config() writes it; the labels decide it
        if not labels or len(labels) < 2:
            raise ValueError(f"BertMultiLabelClassifier needs at least 2 labels, got {labels}")
        super().__init__(encoder, preprocessor, num_classes=len(labels), labels=labels, is_pair=is_pair,
                         dropout_rate=dropout_rate, initializer_range=initializer_range, **kwargs)
        self.label_separator = str(label_separator)
        self.decision_thresholds = self.add_weight(
            shape=(self.num_classes,), initializer=keras.initializers.Constant(0.5), trainable=False,
            name="decision_thresholds")

    def set_thresholds(self, thresholds):
        """Sets the per-label decision thresholds (probabilities in (0, 1), one per label)."""
        values = np.asarray(thresholds, np.float32).reshape(-1)
        if values.shape != (self.num_classes,) or not np.all((values > 0) & (values < 1)):
            raise ValueError(f"thresholds must be {self.num_classes} values in (0, 1), got {values.tolist()}")
        self.decision_thresholds.assign(values)

    @property
    def thresholds(self):
        return np.asarray(keras.ops.convert_to_numpy(self.decision_thresholds)).tolist()

    def outputs_from_logits(self, logits):
        probabilities = tf.sigmoid(tf.cast(logits, tf.float32))
        predicted = probabilities >= tf.cast(self.decision_thresholds, tf.float32)[tf.newaxis, :]
        names = tf.constant([name + self.label_separator for name in self.labels], tf.string)
        joined = tf.strings.reduce_join(tf.where(predicted, names[tf.newaxis, :], ""), axis=-1)
        # Every chosen name carries one trailing separator: drop the last one.
        cut = tf.maximum(tf.strings.length(joined) - len(self.label_separator.encode()), 0)
        return {"probabilities": probabilities, "predicted": predicted,
                "label_set": tf.strings.substr(joined, tf.zeros_like(cut), cut)}

    def export(self, export_base, version=None, task=None, overwrite=False, **options):
        """The serving SavedModel (`bert_tf.tasks.classification.export`): ``serving_default`` returns every
        label's ``probabilities``, the ``predicted`` mask and the ``label_set``; ``classify`` the
        sigmoid ``scores``. Its metadata records the thresholds and the separator."""
        extra = {"format": "bert_tf multi-label text classifier", "multi_label": True,
                 "thresholds": dict(zip(self.labels, self.thresholds)), "label_separator": self.label_separator}
        return export_lib.export_classifier(self, export_base, version=version, task=task, overwrite=overwrite,
                                            extra_metadata=extra, **options)

    def export_litert(self, export_dir, precision="int8", representative_texts=None, task=None):
        """The .tflite (`bert_tf.tasks.classification.multi_label_litert`) at the thresholds in force: every
        label's ``probabilities``, the ``predicted`` mask and the ``label_set``."""
        if self.is_windowed:
            raise ValueError("the LiteRT export reads one window per text; a windowed classifier (max_windows > 1) "
                             "exports for serving with model.export")
        return multi_label_litert.export_litert(self, export_dir, precision=precision,
                                                representative_texts=representative_texts, task=task)

    def get_config(self):
        config = super().get_config()
        config["label_separator"] = self.label_separator
        return config
