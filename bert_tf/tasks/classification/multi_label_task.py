"""`MultiLabelTask`: multi-label text classification (`--task=tsv --multi_label`, or csv).

The data come from `bert_tf.tasks.classification.multi_label_data.MultiLabelTextTask` (labels separated in one
column, or one 0/1 column per label), the model is a `BertMultiLabelClassifier` (one sigmoid per label on the
pooled output), the loss is binary cross-entropy averaged over every (example, label) — what Hugging Face's
``problem_type="multi_label_classification"`` computes — and the metrics are micro/macro F1, per-label F1 and the
exact-match ratio (`bert_tf.tasks.classification.multi_label_metrics`).

Decision thresholds: training and its per-epoch evaluations (which pick the best checkpoint by dev ``micro_f1``)
decide at 0.5. Once the final weights are loaded, `tune_on_dev` fits a cut per label and a global one on the dev
predictions, stores the chosen ones (``threshold_tuning``: ``per_label``, ``global`` or ``none`` = 0.5) in the
model (so ``model.keras`` and the serving export use them) and returns them for eval_results.json
(``threshold_<label>``, ``global_threshold``). The final metrics are at those thresholds, with the
``at_0.5_``-prefixed and ``global_threshold_``-prefixed figures beside them; on dev they are optimistic (tuned
there), on a labelled test file they are a fair estimate.

Predictions (``--do_predict``): ``predictions.tsv`` with ``index``, ``prediction`` (the label set joined by the
separator) and one probability column per label.
"""

import os

import keras
import numpy as np

from bert_tf import atomic
from bert_tf.distillation.losses import DistillTarget
from bert_tf.tasks.classification import multi_label_metrics as metrics_lib
from bert_tf.tasks.classification.multi_label_data import MultiLabelTextTask
from bert_tf.tasks.classification.multi_label_model import BertMultiLabelClassifier
from bert_tf.tasks.classification.text_task import TextDataTask
from bert_tf.training.settings import ConfigError

THRESHOLD_CHOICES = ("per_label", "global", "none")


def binary_cross_entropy(labels, logits):
    """Mean sigmoid cross-entropy over every (example, label) of float 0/1 `labels` [B, C] and `logits` [B, C]."""
    labels = keras.ops.cast(labels, "float32")
    return keras.ops.mean(keras.ops.binary_crossentropy(labels, keras.ops.cast(logits, "float32"),
                                                        from_logits=True))


class MultiLabelTask(TextDataTask):
    """Fine-tunes a `BertMultiLabelClassifier` on a `MultiLabelTextTask`'s data (see the module docstring).

    Args:
      data: a `MultiLabelTextTask`.
      labels: the label set when the data cannot tell it (no training file).
      threshold_tuning: which tuned thresholds the model keeps (`THRESHOLD_CHOICES`).
    """

    model_class = BertMultiLabelClassifier

    @classmethod
    def from_config(cls, name, config):
        if name not in ("tsv", "csv"):
            raise ConfigError(f"--multi_label works with --task=tsv or --task=csv, not --task={name}")
        if config.regression:
            raise ConfigError("--multi_label and --regression exclude each other")
        data = MultiLabelTextTask(config.data_dir, fmt=name, text_column=config.text_column,
                                  text_b_column=config.text_b_column, label_column=config.label_column,
                                  labels=config.labels, label_separator=config.label_separator,
                                  label_columns=config.label_columns, strict=config.strict)
        return cls(data, threshold_tuning=config.threshold_tuning)

    def __init__(self, data, labels=None, threshold_tuning="per_label"):
        super().__init__(data, labels)
        if threshold_tuning not in THRESHOLD_CHOICES:
            raise ValueError(f"threshold_tuning={threshold_tuning!r}: one of {THRESHOLD_CHOICES}")
        self.threshold_tuning = threshold_tuning

    def _label_column(self, examples):
        """[N, C] float32 0/1 (zeros for unlabelled examples)."""
        ids = {label: i for i, label in enumerate(self.labels)}
        matrix = np.zeros((len(examples), len(ids)), np.float32)
        for row, example in enumerate(examples):
            for label in example.label or ():
                matrix[row, ids[label]] = 1.0
        return matrix

    # ----------------------------------------------------------- model
    def build_model(self, encoder, preprocessor, dropout_rate=None, saved_config=None):
        """A built `BertMultiLabelClassifier` for this task's labels, holding `preprocessor`."""
        if saved_config is not None and self._labels is None:
            self._labels = saved_config.get("labels")
        model = BertMultiLabelClassifier(encoder, preprocessor, labels=self.labels, is_pair=self.data.is_pair,
                                         dropout_rate=dropout_rate, label_separator=self.data.label_separator)
        model.build()
        if saved_config is not None:
            kind = {k: model.get_config()[k] for k in ("labels", "is_pair", "label_separator")}
            before = {k: saved_config.get(k) for k in kind}
            if kind != before:
                raise ValueError(f"the model directory holds a model with {before}, but the multi-label task "
                                 f"{self.name} now has {kind}; use a fresh --model_dir")
        return model

    # ----------------------------------------------------------- steps
    def logits_loss(self, model, logits, labels):
        decided = keras.ops.cast(keras.ops.greater_equal(logits, 0.0), "float32")  # sigmoid >= 0.5
        hits = keras.ops.mean(keras.ops.cast(keras.ops.all(keras.ops.equal(decided, labels), axis=-1), "float32"))
        return binary_cross_entropy(labels, logits), {"exact_match": hits}

    def distillation_targets(self, model, features, labels, logits):
        return [DistillTarget(logits, "sigmoid")]

    def predict(self, model, examples, batch_size, strategy=None):
        """`{"logits", "labels", "probabilities", "predictions"}` NumPy arrays in example order (`predictions`:
        the [N, C] bool sets at the model's thresholds; `labels`: [N, C] 0/1)."""
        outputs = self.predict_logits(model, examples, batch_size, strategy)
        served = model.outputs_from_logits(outputs["logits"])
        outputs["probabilities"] = np.asarray(served["probabilities"])
        outputs["predictions"] = np.asarray(served["predicted"])
        return outputs

    def metrics(self, examples, outputs):
        """At the model's thresholds, plus `at_0.5_` (the conventional cut) figures when those differ."""
        results = metrics_lib.multi_label_metrics(outputs["predictions"], outputs["labels"], self.labels)
        at_half = outputs["probabilities"] >= 0.5
        if not np.array_equal(at_half, outputs["predictions"]):
            for key in ("micro_f1", "macro_f1", "exact_match"):
                results[f"at_0.5_{key}"] = metrics_lib.multi_label_metrics(at_half, outputs["labels"],
                                                                            self.labels)[key]
        return results

    def tune_on_dev(self, model, evaluator):
        """Fits the thresholds on the first dev split (see the module docstring); returns them ({} without
        dev data, keeping the model's)."""
        split = next((s for s in self.eval_splits if self.has_split(s) and evaluator.examples(s)), None)
        if split is None:
            return {}
        model.set_thresholds(np.full(len(self.labels), 0.5))
        outputs = evaluator.predict(split)
        cuts, global_cut, info = metrics_lib.tune_thresholds(outputs["probabilities"], outputs["labels"])
        chosen = {"per_label": cuts, "global": np.full(len(cuts), global_cut),
                  "none": np.full(len(cuts), 0.5)}[self.threshold_tuning]
        model.set_thresholds(chosen)
        kept = [self.labels[j] for j in info["kept_global"]]
        print(f"{self.name}: thresholds tuned on {split} ({self.threshold_tuning} kept): "
              + ", ".join(f"{label} {cut:.2f}" for label, cut in zip(self.labels, model.thresholds))
              + f"; global {global_cut:.2f}"
              + (f"; {kept} have under {metrics_lib.MIN_POSITIVES} positives there and keep the global cut"
                 if kept else ""), flush=True)
        at_global = outputs["probabilities"] >= global_cut
        results = {f"threshold_{label}": float(cut) for label, cut in zip(self.labels, model.thresholds)}
        results["global_threshold"] = global_cut
        results["global_threshold_micro_f1"] = metrics_lib.micro_f1(at_global, outputs["labels"])
        return results

    def degenerate_predictions(self, examples, outputs):
        predictions, labels = np.asarray(outputs["predictions"]), np.asarray(outputs["labels"])
        if len(predictions) < 2 or not labels.any():
            return None
        if not predictions.any():
            return f"no label is predicted for any of the {len(predictions)} examples"
        if (predictions == predictions[0]).all() and not (labels == labels[0]).all():
            return f"every one of the {len(predictions)} examples gets the same label set"
        return None

    def write_predictions(self, split, examples, outputs, out_dir):
        """`predictions.tsv`: `index`, `prediction` (the label set, joined by the separator), one probability
        column per label."""
        separator = self.data.label_separator
        lines = ["\t".join(["index", "prediction"] + [f"p_{label}" for label in self.labels])]
        for example, chosen, probabilities in zip(examples, outputs["predictions"], outputs["probabilities"]):
            names = separator.join(label for label, on in zip(self.labels, chosen) if on)
            lines.append("\t".join([example.index, names] + [f"{p:.4f}" for p in probabilities]))
        path = os.path.join(out_dir, self.test_splits[split])
        os.makedirs(out_dir, exist_ok=True)
        return atomic.write_file(path, "\n".join(lines) + "\n")
