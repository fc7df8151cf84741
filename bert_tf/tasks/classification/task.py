"""`SentencePredictionTask`: sentence (pair) classification and regression — GLUE and your own TSV/CSV.

The data come from a `bert_tf.tasks.classification.data` reader (`glue.get_task(name, data_dir)`),
the model is a `bert_tf.BertClassifier` holding its preprocessor, labels and
task kind, the loss is Google's (softmax cross-entropy; mean squared error for
regression) and the metrics are GLUE's official ones (`bert_tf.tasks.classification.metrics`).

Example (a tiny random encoder on two labelled sentences):

>>> import os, tempfile
>>> import bert_tf
>>> from bert_tf.tasks.classification import data as glue
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
import tensorflow as tf

from bert_tf.distillation.losses import DistillTarget
from bert_tf.tasks.classification import data as glue
from bert_tf.tasks.classification import metrics as metrics_lib
from bert_tf.tasks.classification.model import BertClassifier
from bert_tf.tasks.classification.multi_label_task import THRESHOLD_CHOICES, MultiLabelTask
from bert_tf.tasks.classification.text_task import TextDataTask
from bert_tf.tasks.base import data_dir_setting, strict_setting
from bert_tf.tasks.window_settings import max_windows_setting, window_pooling_setting, window_stride_setting
from bert_tf.text import windows as windows_lib
from bert_tf.text.batches import bucketed_batches, ordered_batches
from bert_tf.training.settings import ConfigError, setting


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
    multi_label: bool = setting(False, "tsv/csv: each text has a set of labels (sigmoid per label, binary "
                                       "cross-entropy, thresholds tuned on dev); see --label_separator, "
                                       "--label_columns.")
    label_separator: str = setting(",", "tsv/csv --multi_label: separates the labels inside --label_column.")
    label_columns: list | None = setting(None, "tsv/csv --multi_label: one 0/1 column per label instead of "
                                               "--label_column (the column names are the labels).")
    threshold_tuning: str = setting("per_label", "--multi_label: the decision thresholds the model keeps after "
                                                 "tuning on dev: one per label, one global, or none (0.5).",
                                    choices=THRESHOLD_CHOICES)
    max_windows: int = max_windows_setting()
    window_stride: int = window_stride_setting()
    window_pooling: str = window_pooling_setting()


class SentencePredictionTask(TextDataTask):
    """Fine-tunes a `BertClassifier` on a `bert_tf.tasks.classification.data` task (GLUE or tsv/csv data).

    Args:
      data: a `bert_tf.tasks.classification.data.Task` (e.g. `glue.get_task("mrpc", data_dir)`).
      labels: the label set when the data cannot tell it (a tsv task without a
        training file, e.g. evaluation of a model trained earlier).
    """

    model_class = BertClassifier
    config_class = SentencePredictionConfig

    def __init__(self, data, labels=None, max_windows=1, window_stride=0, window_pooling="mean"):
        super().__init__(data, labels)
        if int(max_windows) > 1 and data.is_pair:
            raise ConfigError(f"--max_windows={max_windows}: sliding windows classify single texts; {data.name} "
                              "is a pair task")
        self.windowing = dict(max_windows=int(max_windows), window_stride=int(window_stride),
                              window_pooling=window_pooling)

    @classmethod
    def from_config(cls, name, config):
        if not config.data_dir:
            raise ConfigError("--data_dir is required")
        name = glue.canonical_task_name(name)
        if config.multi_label:
            if config.max_windows > 1:
                raise ConfigError("--max_windows > 1 is not implemented for --multi_label")
            return MultiLabelTask.from_config(name, config)
        options = {}
        if name in ("tsv", "csv"):
            options = dict(text_column=config.text_column, text_b_column=config.text_b_column,
                           label_column=config.label_column, labels=config.labels, regression=config.regression)
        return cls(glue.get_task(name, config.data_dir, strict=config.strict, **options),
                   max_windows=config.max_windows, window_stride=config.window_stride,
                   window_pooling=config.window_pooling)

    def check(self, run_config):
        if self.name == "ax" and run_config.do_train:
            raise ConfigError("--task=ax is GLUE's unlabelled diagnostic set: train on --task=mnli (whose "
                              "--do_predict also writes AX.tsv) or use --task=ax with --do_predict only")
        try:
            windows_lib.check_windowing(run_config.max_seq_length or self.default_max_seq_length,
                                        **self.windowing)
        except ValueError as e:
            raise ConfigError(f"--task={self.name}: {e}") from e
        if self.is_windowed and run_config.litert_export_dir:
            raise ConfigError("--max_windows > 1: the LiteRT export reads one window per text; drop "
                              "--litert_export_dir (--export_dir serves the windowed model)")

    @property
    def is_windowed(self):
        return self.windowing["max_windows"] > 1

    def _label_column(self, examples):
        labelled = bool(examples) and examples[0].label is not None
        if self.data.is_regression:
            return np.array([float(e.label) if labelled else 0.0 for e in examples], np.float32)
        ids = {label: i for i, label in enumerate(self.labels)}
        return np.array([ids[e.label] if labelled else 0 for e in examples], np.int32)

    # ----------------------------------------------------------- model
    def build_model(self, encoder, preprocessor, dropout_rate=None, saved_config=None):
        """A built `BertClassifier` for this task's labels and kind, holding `preprocessor`."""
        if saved_config is not None and self._labels is None:
            self._labels = saved_config.get("labels")
        try:
            model = BertClassifier(encoder, preprocessor, num_classes=self.data.num_classes, labels=self.labels,
                                   is_pair=self.data.is_pair, dropout_rate=dropout_rate, **self.windowing)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        model.build()
        if saved_config is not None:
            kind = {k: model.get_config().get(k) for k in ("num_classes", "labels", "is_pair", "max_windows",
                                                           "window_stride", "window_pooling")}
            before = {k: saved_config.get(k) for k in kind}
            if kind != before:
                raise ValueError(f"the model directory holds a model with {before}, but the task {self.name} "
                                 f"now has {kind}; use a fresh --model_dir")
        return model

    # ----------------------------------------------------------- windows
    def _window_featurizer(self, model, preprocessor):
        def featurize(batch):
            return model.window_features(batch["text_a"], preprocessor)[0], batch["label"]

        return featurize

    def build_train_dataset(self, model, examples, batch_size, seed=0, bucket_window=1, dynamic_padding=True,
                            input_context=None, shuffle_batches=True):
        if not model.is_windowed:
            return super().build_train_dataset(model, examples, batch_size, seed=seed, bucket_window=bucket_window,
                                               dynamic_padding=dynamic_padding, input_context=input_context,
                                               shuffle_batches=shuffle_batches)
        columns, labelled = self._columns(examples)
        if not labelled:
            raise ValueError("training examples have no labels")
        preprocessor = model.preprocessor.with_padding(dynamic_padding=dynamic_padding)
        # Documents are not length-bucketed: each batch pads to its own most windows and longest window.
        return bucketed_batches(columns, self._window_featurizer(model, preprocessor), batch_size, seed=seed,
                                bucket_window=1, dynamic_padding=False, input_context=input_context,
                                shuffle_batches=shuffle_batches, per_token_labels=False)

    def build_eval_dataset(self, model, examples, batch_size):
        if not model.is_windowed:
            return super().build_eval_dataset(model, examples, batch_size)
        columns, _ = self._columns(examples)
        preprocessor = model.preprocessor.with_padding(dynamic_padding=True)
        return ordered_batches(columns, self._window_featurizer(model, preprocessor), batch_size,
                               lengths=[len(e.text_a) for e in examples])

    def _feature_rank(self, model):
        return 3 if model.is_windowed else 2

    @staticmethod
    def windows_needed(model, texts, batch_size=256):
        """NumPy int32 [N]: the windows each whole text needs (more than `model.max_windows`: partly unread)."""
        counts = []
        for i in range(0, len(texts), batch_size):
            _, lengths = model.preprocessor.tokenizer.tokenize_dense(tf.constant(texts[i:i + batch_size]), width=1)
            counts.append(windows_lib.windows_needed(lengths, model.preprocessor.seq_length, model.window_stride))
        return np.concatenate([c.numpy() for c in counts]) if counts else np.zeros([0], np.int32)

    # ----------------------------------------------------------- steps
    def logits_loss(self, model, logits, labels):
        if model.is_regression:
            loss = keras.ops.mean(keras.ops.square(logits[:, 0] - keras.ops.cast(labels, "float32")))
            return loss, {}
        loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        hits = keras.ops.equal(keras.ops.argmax(logits, -1), keras.ops.cast(labels, "int64"))
        return loss, {"accuracy": keras.ops.mean(keras.ops.cast(hits, "float32"))}

    def distillation_targets(self, model, features, labels, logits):
        return [DistillTarget(logits, "mse" if model.is_regression else "softmax")]

    def examples_from_texts(self, texts):
        if self.data.is_pair:
            raise ConfigError(f"--task={self.name} classifies text pairs: unlabelled text (one text per line) "
                              "is for single-text tasks")
        placeholder = 0.0 if self.data.is_regression else self.labels[0]
        return [glue.Example(guid=source, text_a=text, label=placeholder) for text, source in texts]

    def predict(self, model, examples, batch_size, strategy=None):
        """`{"logits", "labels", "predictions"}` NumPy arrays in example order
        (`predictions`: class ids, or the regression value)."""
        outputs = self.predict_logits(model, examples, batch_size, strategy)
        served = model.outputs_from_logits(outputs["logits"])
        outputs["predictions"] = np.asarray(served["predictions" if model.is_regression else "class_ids"])
        if model.is_windowed:
            outputs["windows_needed"] = self.windows_needed(model, [e.text_a for e in examples])
        return outputs

    def metrics(self, examples, outputs):
        results = metrics_lib.task_metrics(self.name, outputs["predictions"], outputs["labels"],
                                           regression=self.data.is_regression)
        if "windows_needed" in outputs:  # the documents whose tail past max_windows windows was not read
            needed = np.asarray(outputs["windows_needed"])
            results["documents_over_max_windows"] = int(np.sum(needed > self.windowing["max_windows"]))
            results["mean_windows_needed"] = float(np.mean(needed)) if needed.size else 0.0
        return results

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
