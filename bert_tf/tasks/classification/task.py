"""`SentencePredictionTask`: sentence (pair) classification and regression — GLUE and your own TSV/CSV.

The data come from a `bert_tf.tasks.classification.data` reader (`glue.get_task(name, data_dir)`),
the model is a `bert_tf.BertClassifier` holding its preprocessor, labels and
task kind, the loss is Google's (softmax cross-entropy; mean squared error for
regression) and the metrics are GLUE's official ones (`bert_tf.tasks.classification.metrics`).

Example (a tiny random encoder on two labelled sentences):

>>> import os, tempfile
>>> import bert_tf
>>> from bert_tf import glue
>>> from bert_tf.tasks import SentencePredictionTask
>>> d = tempfile.mkdtemp()
>>> _ = open(os.path.join(d, "train.tsv"), "w").write("sentence\\tlabel\\ngood film\\tpos\\nbad film\\tneg\\n")
>>> _ = open(os.path.join(d, "vocab.txt"), "w").write("\\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "bad", "film"]))
>>> task = SentencePredictionTask(glue.get_task("tsv", d))
>>> examples = task.examples("train")  # doctest: +ELLIPSIS
tsv: read 2 examples from ...
>>> encoder = bert_tf.BertEncoder(bert_tf.BertConfig(vocab_size=7, hidden_size=16, num_hidden_layers=1,
...                                                  num_attention_heads=2, intermediate_size=32))
>>> model = task.build_model(encoder, bert_tf.BertPreprocessor(os.path.join(d, "vocab.txt"), seq_length=16))
>>> model.labels
['neg', 'pos']
>>> features, labels = next(iter(task.build_train_dataset(model, examples, batch_size=2, bucket_window=1)))
>>> loss, metrics = task.compute_loss(model, (features, labels), training=True)
>>> sorted(task.metrics(examples, task.predict(model, examples, batch_size=2)))
['accuracy']
"""

import dataclasses
import os

import keras
import numpy as np

from bert_tf.tasks.classification import data as glue
from bert_tf.tasks.classification import metrics as metrics_lib
from bert_tf.tasks.classification.model import BertClassifier
from bert_tf.tasks.base import FinetuningTask, data_dir_setting, in_example_order, strict_setting, token_id_predictor
from bert_tf.training.settings import ConfigError, setting
from bert_tf.text.batches import bucketed_batches, ordered_batches


@dataclasses.dataclass
class SentencePredictionConfig:
    """Settings of GLUE and tsv/csv tasks (`--task=<GLUE name>|tsv|csv`)."""

    data_dir: str | None = data_dir_setting()
    strict: bool = strict_setting()
    text_column: str = setting("sentence", "tsv/csv: header name of the text column.")
    text_b_column: str | None = setting(None, "tsv/csv: header name of the second text (pair tasks).")
    label_column: str = setting("label", "tsv/csv: header name of the label column.")
    labels: list | None = setting(None, "tsv/csv: the label set in id order (default: detected from train).")
    regression: bool = setting(False, "tsv/csv: numeric label, one output, MSE loss.")


class SentencePredictionTask(FinetuningTask):
    """Fine-tunes a `BertClassifier` on a `bert_tf.tasks.classification.data` task (GLUE or tsv/csv data).

    Args:
      data: a `bert_tf.tasks.classification.data.Task` (e.g. `glue.get_task("mrpc", data_dir)`).
      labels: the label set when the data cannot tell it (a tsv task without a
        training file, e.g. evaluation of a model trained earlier).
    """

    model_class = BertClassifier
    config_class = SentencePredictionConfig

    @classmethod
    def from_config(cls, name, config):
        if not config.data_dir:
            raise ConfigError("--data_dir is required")
        name = glue.canonical_task_name(name)
        options = {}
        if name in ("tsv", "csv"):
            options = dict(text_column=config.text_column, text_b_column=config.text_b_column,
                           label_column=config.label_column, labels=config.labels, regression=config.regression)
        return cls(glue.get_task(name, config.data_dir, strict=config.strict, **options))

    def check(self, run_config):
        if self.name == "ax" and run_config.do_train:
            raise ConfigError("--task=ax is GLUE's unlabelled diagnostic set: train on --task=mnli (whose "
                              "--do_predict also writes AX.tsv) or use --task=ax with --do_predict only")

    def __init__(self, data, labels=None):
        self.data = data
        self.name = data.name
        self.main_metric = data.main_metric
        self._labels = labels
        self._predictors = {}

    # ------------------------------------------------------------ data
    @property
    def labels(self):
        if self.data.is_regression:
            return None
        try:
            return list(self.data.labels)
        except FileNotFoundError:  # tsv/csv labels detected from a train file that is absent
            if self._labels is None:
                raise
            return list(self._labels)

    @property
    def eval_splits(self):
        return self.data.eval_splits

    @property
    def test_splits(self):
        return self.data.test_splits

    @property
    def final_eval_splits(self):
        """Dev splits, plus a labelled test file of a custom (tsv/csv) task as `test_*` metrics."""
        splits = dict(self.eval_splits)
        if self.name in ("tsv", "csv") and self.has_split("test") and self.data.split_has_labels("test"):
            splits["test"] = "test_"
        return splits

    def has_split(self, split):
        return self.data.has_split(split)

    def examples(self, split):
        return self.data.get_examples(split)

    def split_has_labels(self, split):
        return self.data.split_has_labels(split)

    def _columns(self, examples):
        """Examples -> NumPy columns `text_a` (+ `text_b`) and `label` (0 where unlabelled)."""
        columns = {"text_a": np.array([e.text_a for e in examples], dtype=object)}
        if self.data.is_pair:
            columns["text_b"] = np.array([e.text_b or "" for e in examples], dtype=object)
        labelled = bool(examples) and examples[0].label is not None
        if self.data.is_regression:
            columns["label"] = np.array([float(e.label) if labelled else 0.0 for e in examples], np.float32)
        else:
            ids = {label: i for i, label in enumerate(self.labels)}
            columns["label"] = np.array([ids[e.label] if labelled else 0 for e in examples], np.int32)
        return columns, labelled

    # ----------------------------------------------------------- model
    def build_model(self, encoder, preprocessor, dropout_rate=None, saved_config=None):
        """A built `BertClassifier` for this task's labels and kind, holding `preprocessor`."""
        if saved_config is not None and self._labels is None:
            self._labels = saved_config.get("labels")
        model = BertClassifier(encoder, preprocessor, num_classes=self.data.num_classes, labels=self.labels,
                               is_pair=self.data.is_pair, dropout_rate=dropout_rate)
        model.build()
        if saved_config is not None:
            kind = {k: model.get_config()[k] for k in ("num_classes", "labels", "is_pair")}
            before = {k: saved_config.get(k) for k in kind}
            if kind != before:
                raise ValueError(f"the model directory holds a model with {before}, but the task {self.name} "
                                 f"now has {kind}; use a fresh --model_dir")
        return model

    # ----------------------------------------------------------- steps
    def _featurizer(self, preprocessor):
        def featurize(batch):
            texts = [batch["text_a"], batch["text_b"]] if "text_b" in batch else batch["text_a"]
            return preprocessor(texts), batch["label"]

        return featurize

    def build_train_dataset(self, model, examples, batch_size, seed=0, bucket_window=32, dynamic_padding=True,
                            input_context=None, shuffle_batches=True):
        columns, labelled = self._columns(examples)
        if not labelled:
            raise ValueError("training examples have no labels")
        preprocessor = model.preprocessor.with_padding(dynamic_padding=dynamic_padding)
        return bucketed_batches(columns, self._featurizer(preprocessor), batch_size, seed=seed,
                                bucket_window=bucket_window, dynamic_padding=dynamic_padding,
                                input_context=input_context, shuffle_batches=shuffle_batches)

    def build_eval_dataset(self, model, examples, batch_size):
        columns, _ = self._columns(examples)
        lengths = [len(e.text_a) + len(e.text_b or "") for e in examples]
        preprocessor = model.preprocessor.with_padding(dynamic_padding=True)
        return ordered_batches(columns, self._featurizer(preprocessor), batch_size, lengths=lengths)

    def compute_loss(self, model, batch, training):
        features, labels = batch
        logits = model(features, training=training)
        if model.is_regression:
            loss = keras.ops.mean(keras.ops.square(logits[:, 0] - keras.ops.cast(labels, "float32")))
            return loss, {}
        loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        hits = keras.ops.equal(keras.ops.argmax(logits, -1), keras.ops.cast(labels, "int64"))
        return loss, {"accuracy": keras.ops.mean(keras.ops.cast(hits, "float32"))}

    def predict(self, model, examples, batch_size, strategy=None):
        """`{"logits", "labels", "predictions"}` NumPy arrays in example order
        (`predictions`: class ids, or the regression value)."""
        key = (id(model), id(strategy))
        if key not in self._predictors:
            self._predictors = {key: token_id_predictor(model, strategy)}
        outputs = self._predictors[key](self.build_eval_dataset(model, examples, batch_size))
        outputs = in_example_order(outputs, len(examples))
        served = model.outputs_from_logits(outputs["logits"])
        outputs["predictions"] = np.asarray(served["predictions" if model.is_regression else "class_ids"])
        return outputs

    def metrics(self, examples, outputs):
        return metrics_lib.task_metrics(self.name, outputs["predictions"], outputs["labels"],
                                        regression=self.data.is_regression)

    def degenerate_predictions(self, examples, outputs):
        predictions, labels = np.asarray(outputs["predictions"]), np.asarray(outputs["labels"])
        if len(predictions) < 2:
            return None
        if self.data.is_regression:
            spread = float(np.std(labels)) if labels.size and not np.isnan(labels).any() else 1.0
            if float(np.std(predictions)) < 0.01 * max(spread, 1e-6):
                return f"every prediction is about {float(np.mean(predictions)):.4g} (constant output)"
            return None
        labelled = labels[labels >= 0] if labels.size else labels
        if len(np.unique(predictions)) == 1 and len(np.unique(labelled)) > 1:
            return f"every one of the {len(predictions)} examples is predicted as {self.labels[int(predictions[0])]!r}"
        return None

    def aggregate_metrics(self, results):
        if self.name == "mnli" and "accuracy" in results:
            results["matched_accuracy"] = results["accuracy"]
        return results

    def write_predictions(self, split, examples, outputs, out_dir):
        """GLUE submission file for `split` (`index`, `prediction` label strings) in `out_dir`."""
        return glue.write_submission(os.path.join(out_dir, self.test_splits[split]), examples,
                                     outputs["predictions"], self.data)

    def representative_texts(self, n, seed=0, split="train"):
        """`n` texts of `split` (pairs for pair tasks) in file order, a fixed random sample: int8 calibration."""
        if not self.has_split(split):
            raise FileNotFoundError(f"{self.name}: no {split} split to draw representative texts from (int8 "
                                    "calibration); use another precision or give training data")
        examples = self.examples(split)
        keep = sorted(np.random.default_rng(seed).permutation(len(examples))[:int(n)].tolist())
        if self.data.is_pair:
            return [(examples[i].text_a, examples[i].text_b or "") for i in keep]
        return [examples[i].text_a for i in keep]
