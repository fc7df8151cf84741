"""`MultipleChoiceTask`: SWAG / HellaSwag / ARC-style multiple choice (`--task=multiple_choice`).

Data: ``<data_dir>/train``, ``dev``, ``test`` as ``.jsonl`` or ``.csv`` (`bert_tf.tasks.multiple_choice.data`:
SWAG, HellaSwag and ARC column names, malformed rows by file:line). Every example has the same number of options
(``--num_choices``, else the training file's first row). The model is a `BertMultipleChoice` (one score per
option, softmax over the options), the loss softmax cross-entropy over the options, the metric accuracy.
`--do_predict` writes ``predictions.jsonl`` (id, chosen index, probabilities) and, when the test file has labels,
its accuracy into ``eval_results.json``.

Example (a tiny random encoder on two items):

>>> import os, tempfile
>>> import bert_tf
>>> from bert_tf.tasks.multiple_choice import MultipleChoiceTask
>>> d = tempfile.mkdtemp()
>>> _ = open(os.path.join(d, "train.jsonl"), "w").write('{"context": "good film", "endings": ["yes", "no"], '
...     '"label": 0}\\n{"context": "bad film", "endings": ["yes", "no"], "label": 1}\\n')
>>> _ = open(os.path.join(d, "vocab.txt"), "w").write("\\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "bad",
...     "film", "yes", "no"]))
>>> task = MultipleChoiceTask(d)
>>> examples = task.examples("train")  # doctest: +ELLIPSIS
multiple_choice: read 2 examples from ...
>>> encoder = bert_tf.BertEncoder(bert_tf.BertConfig(vocab_size=9, hidden_size=16, num_hidden_layers=1,
...                                                  num_attention_heads=2, intermediate_size=32))
>>> model = task.build_model(encoder, bert_tf.BertPreprocessor(os.path.join(d, "vocab.txt"), seq_length=16))
>>> batch = next(iter(task.build_train_dataset(model, examples, batch_size=2, bucket_window=1)))
>>> loss, metrics = task.compute_loss(model, batch, training=True)
>>> sorted(task.metrics(examples, task.predict(model, examples, batch_size=2)))
['accuracy']
"""

import dataclasses
import json
import os

import keras
import numpy as np
import tensorflow as tf

from bert_tf import atomic
from bert_tf.distillation.losses import DistillTarget
from bert_tf.tasks.base import (FinetuningTask, data_dir_setting, in_example_order, strict_setting,
                                token_id_predictor)
from bert_tf.tasks.multiple_choice import data as choice_data
from bert_tf.tasks.multiple_choice import metrics as metrics_lib
from bert_tf.tasks.multiple_choice.model import BertMultipleChoice
from bert_tf.text.batches import ordered_batches
from bert_tf.training.settings import ConfigError, setting


@dataclasses.dataclass
class MultipleChoiceConfig:
    """Settings of `--task=multiple_choice`."""

    data_dir: str | None = data_dir_setting()
    strict: bool = strict_setting()
    num_choices: int | None = setting(None, "multiple_choice: options per example (default: the training "
                                            "file's first row); a row with another count is malformed.")


def longest_option(features):
    """int32 [B]: the packed length of each item's longest option."""
    return tf.reduce_max(tf.reduce_sum(features["input_mask"], axis=-1), axis=-1)


def trim_options(features, multiple=8):
    """A batch of [B, N, T] features cut to its longest option, rounded up to `multiple`."""
    longest = tf.maximum(tf.reduce_max(longest_option(features)), 1)
    width = tf.minimum((longest + multiple - 1) // multiple * multiple, tf.shape(features["input_mask"])[2])
    return {k: v[:, :, :width] for k, v in features.items()}


class MultipleChoiceTask(FinetuningTask):
    """Fine-tunes a `BertMultipleChoice` on the .jsonl/.csv splits of `data_dir`."""

    name = "multiple_choice"
    model_class = BertMultipleChoice
    config_class = MultipleChoiceConfig
    predictions_subdir = ""

    @classmethod
    def from_config(cls, name, config):
        del name
        if not config.data_dir:
            raise ConfigError("--data_dir is required (train/dev/test .jsonl or .csv files)")
        return cls(config.data_dir, num_choices=config.num_choices, strict=config.strict)

    def __init__(self, data_dir, num_choices=None, strict=False):
        if num_choices is not None and int(num_choices) < 2:
            raise ConfigError(f"--num_choices={num_choices}: a multiple-choice item needs at least 2 options")
        self.data_dir = data_dir
        self.num_choices = None if num_choices is None else int(num_choices)
        self.strict = bool(strict)
        self._data = {}
        self._predictors = {}

    def check(self, run_config):
        if run_config.do_train and not self.has_split("train"):
            raise ConfigError(f"--do_train needs {self.data_dir}/train.jsonl or train.csv")

    # ------------------------------------------------------------ data
    def data(self, split):
        """The `ChoiceData` of a split, read once; the option count is the training file's unless given."""
        if split not in self._data:
            path = choice_data.split_path(self.data_dir, split)
            if path is None:
                raise FileNotFoundError(f"no {split}.jsonl or {split}.csv in {self.data_dir}")
            if self.num_choices is None and split != "train" and self.has_split("train"):
                self.num_choices = self.data("train").num_choices
            self._data[split] = choice_data.read_choices(path, self.num_choices, strict=self.strict)
            if self.num_choices is None:
                self.num_choices = self._data[split].num_choices
        return self._data[split]

    def has_split(self, split):
        return choice_data.split_path(self.data_dir, split) is not None

    def examples(self, split):
        return self.data(split).examples

    @property
    def test_splits(self):
        return {"test": "predictions.jsonl"}

    # ----------------------------------------------------------- model
    def build_model(self, encoder, preprocessor, dropout_rate=None, saved_config=None):
        """A built `BertMultipleChoice` holding `preprocessor`; an earlier run's option count must match."""
        if self.has_split("train"):
            self.data("train")
        before = (saved_config or {}).get("num_choices")
        if self.num_choices is None:
            self.num_choices = before
        elif before is not None and before != self.num_choices:
            raise ValueError(f"the model directory holds a model for {before} options, the data have "
                             f"{self.num_choices}; use a fresh --model_dir")
        model = BertMultipleChoice(encoder, preprocessor, num_choices=self.num_choices, dropout_rate=dropout_rate)
        model.build()
        return model

    # ----------------------------------------------------------- steps
    @staticmethod
    def _columns(examples):
        labelled = bool(examples) and all(e.label is not None for e in examples)
        return {"context": np.array([e.context for e in examples], dtype=object),
                "question": np.array([e.question for e in examples], dtype=object),
                "options": np.array([list(e.options) for e in examples], dtype=object),
                "label": np.array([e.label if labelled else 0 for e in examples], np.int32)}, labelled

    @staticmethod
    def _featurizer(model, preprocessor):
        def featurize(batch):
            return model.pack_choices(batch["context"], batch["question"], batch["options"], preprocessor), \
                batch["label"]

        return featurize

    def build_train_dataset(self, model, examples, batch_size, seed=0, bucket_window=1, dynamic_padding=True,
                            input_context=None, shuffle_batches=True):
        """Endless shuffled batches of [B, N, T] features; with `dynamic_padding`, `bucket_window` batches are
        packed together, sorted by their longest option and each batch cut to its own longest option."""
        columns, labelled = self._columns(examples)
        if not labelled:
            raise ValueError("training examples have no labels")
        featurize = self._featurizer(model, model.preprocessor.with_padding(dynamic_padding=dynamic_padding))
        constants = {k: tf.constant(v.tolist() if v.dtype == object else v) for k, v in columns.items()}
        ds = tf.data.Dataset.range(len(examples))
        if input_context is not None and input_context.num_input_pipelines > 1:
            ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        ds = ds.shuffle(len(examples), seed=seed, reshuffle_each_iteration=True).repeat()
        window = max(1, int(bucket_window)) if dynamic_padding else 1
        ds = ds.batch(batch_size * window, drop_remainder=True)

        def featurize_window(idx):
            features, labels = featurize({k: tf.gather(v, idx) for k, v in constants.items()})
            order = tf.argsort(longest_option(features), stable=True)
            return {k: tf.gather(v, order) for k, v in features.items()}, tf.gather(labels, order)

        ds = ds.map(featurize_window, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if window > 1:  # a window is exactly `window` batches: no batch mixes two windows' widths
            ds = ds.unbatch().batch(batch_size, drop_remainder=True)
            ds = ds.map(lambda f, y: (trim_options(f), y), num_parallel_calls=tf.data.AUTOTUNE)
            if shuffle_batches:
                ds = ds.shuffle(window, seed=seed + 1, reshuffle_each_iteration=True)
        return ds.prefetch(tf.data.AUTOTUNE)

    def build_eval_dataset(self, model, examples, batch_size):
        columns, _ = self._columns(examples)
        lengths = [len(e.context) + len(e.question) + max(len(o) for o in e.options) for e in examples]
        return ordered_batches(columns, self._featurizer(model, model.preprocessor.with_padding(dynamic_padding=True)),
                               batch_size, lengths=lengths)

    def logits_loss(self, model, logits, labels):
        loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        hits = keras.ops.equal(keras.ops.argmax(logits, -1), keras.ops.cast(labels, "int64"))
        return loss, {"accuracy": keras.ops.mean(keras.ops.cast(hits, "float32"))}

    def distillation_targets(self, model, features, labels, logits):
        return [DistillTarget(logits, "softmax")]

    def _predictor(self, model, strategy):
        return token_id_predictor(model, strategy, rank=3)  # features [B, options, T]

    def predict(self, model, examples, batch_size, strategy=None):
        """`{"logits" [n, N], "labels", "choices", "probabilities"}` NumPy arrays in example order."""
        key = (id(model), id(strategy))
        if key not in self._predictors:
            self._predictors = {key: self._predictor(model, strategy)}
        outputs = in_example_order(self._predictors[key](self.build_eval_dataset(model, examples, batch_size)),
                                   len(examples))
        served = model.outputs_from_logits(outputs["logits"])
        outputs["choices"] = served["choice"].numpy()
        outputs["probabilities"] = served["probabilities"].numpy()
        return outputs

    def metrics(self, examples, outputs):
        return metrics_lib.choice_metrics(outputs["choices"], [e.label for e in examples])

    def degenerate_predictions(self, examples, outputs):
        choices = np.asarray(outputs["choices"])
        labels = {e.label for e in examples}
        if len(choices) > 1 and len(set(choices.tolist())) == 1 and len(labels) > 1:
            return f"every one of the {len(choices)} examples is answered with option {int(choices[0])}"
        return None

    def write_predictions(self, split, examples, outputs, out_dir):
        """`predictions.jsonl`: one {"id", "choice", "probabilities"} a line, in file order."""
        path = os.path.join(out_dir, self.test_splits[split])
        lines = [json.dumps({"id": e.example_id, "choice": int(c), "probabilities": [round(float(p), 6) for p in ps]})
                 for e, c, ps in zip(examples, outputs["choices"], outputs["probabilities"])]
        atomic.write_file(path, "\n".join(lines) + "\n")
        return path

    def prediction_metrics(self, split, examples, outputs):
        if not examples or any(e.label is None for e in examples):
            return {}
        return {f"{split}_{k}": v for k, v in self.metrics(examples, outputs).items()}

    def representative_texts(self, n, seed=0, split="train"):
        """`n` (context, question, options) items of `split` in file order, a fixed random sample: int8 calibration."""
        if not self.has_split(split):
            raise FileNotFoundError(f"{self.name}: no {split} split to draw representative items from (int8 "
                                    "calibration); use another --litert_precision or give training data")
        examples = self.examples(split)
        keep = sorted(np.random.default_rng(seed).permutation(len(examples))[:int(n)].tolist())
        return [(examples[i].context, examples[i].question, list(examples[i].options)) for i in keep]
