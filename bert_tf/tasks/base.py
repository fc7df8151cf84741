"""`FinetuningTask`: what a fine-tuning task supplies to the shared driver (`bert_tf.training.finetuning.run`).

A task is a handful of small methods, in the Model Garden's shape:

* `build_model(encoder, preprocessor, dropout_rate)` -> the task model (it holds
  the preprocessor; the same object is trained, checkpointed and exported);
* `build_train_dataset(model, examples, ...)` / `build_eval_dataset(model, examples, ...)`
  -> tf.data batches made with the model's own preprocessor;
* `compute_loss(model, batch, training)` -> (mean loss, metrics) for the Trainer (by default the model on the
  batch's features, then `logits_loss(model, logits, labels)`);
* `distillation_targets(model, features, labels, logits)` -> what a student learns from a teacher
  (`bert_tf.distillation`), `examples_from_texts(texts)` -> examples a teacher labels (unlabelled text);
* `predict(model, examples, ...)` -> per-example outputs in example order;
* `metrics(examples, outputs)` -> the official metrics of the task (`aggregate_metrics` over splits);
* `write_predictions(split, examples, outputs, out_dir)`; `representative_texts(n)` (int8 LiteRT calibration).

Exports are the task model's own (`model.export`, `model.export_litert`): `export` and `export_litert` here only
add the task's name and calibration texts, and `trainers/export.py` calls the same model methods.

Data access (`examples(split)`, `eval_splits`, `test_splits`, `main_metric`) comes
from the task's reader. A new task is a new folder beside `classification/` (task, model, data, metrics,
export) and one line in `bert_tf.tasks.TASKS`, not a branch in a program.
"""

import numpy as np
import tensorflow as tf

from bert_tf.text.packer import INPUT_KEYS
from bert_tf.training import predict as distributed_predict
from bert_tf.training.settings import ConfigError, setting

# Settings that several tasks take (one declaration each; `bert_tf.training.settings.define_flags` makes one flag).
DATA_DIR_HELP = ("The task's data: GLUE's root (<data_dir>/<TASK>/train.tsv ...), a tsv/csv task's directory "
                 "(train.tsv, dev.tsv, test.tsv), or the CoNLL files' directory (tagging).")
STRICT_HELP = "A malformed data row is an error instead of being skipped (skipped rows are reported by file:line)."


def data_dir_setting():
    return setting(None, DATA_DIR_HELP)


def strict_setting():
    return setting(False, STRICT_HELP)


class FinetuningTask:
    """Base class of fine-tuning tasks; subclasses fill in the model, data, loss and metrics."""

    name = "task"
    main_metric = "accuracy"
    higher_is_better = True
    # The task's settings (a dataclass of `bert_tf.training.settings.setting` fields; its flags are generated).
    config_class = None
    # --max_seq_length when the run does not give one.
    default_max_seq_length = 128
    # --do_predict writes to <model_dir>/<predictions_subdir> unless --predict_dir says otherwise.
    predictions_subdir = "submission"
    # The task model's class: it knows its serving and LiteRT exports (`BertTaskModel.export`, `.export_litert`).
    model_class = None

    @classmethod
    def from_config(cls, name, config):
        """The task `--task=name` with its settings `config` (an instance of `config_class`)."""
        raise NotImplementedError

    def check(self, run_config):
        """Raises `ConfigError` when the run's settings (`FinetuneConfig`) cannot work for this task."""
        del run_config

    # ------------------------------------------------------------ data
    @property
    def eval_splits(self):
        """{split: metric-name prefix} evaluated after every epoch and by --do_eval."""
        return {"dev": ""}

    @property
    def test_splits(self):
        """{split: predictions file name} written by --do_predict."""
        return {"test": "predictions.tsv"}

    @property
    def final_eval_splits(self):
        """{split: prefix} scored by --do_eval at the end (default: `eval_splits`)."""
        return self.eval_splits

    def has_split(self, split):
        raise NotImplementedError

    def examples(self, split):
        raise NotImplementedError

    # ----------------------------------------------------------- model
    def build_model(self, encoder, preprocessor, dropout_rate=None, saved_config=None):
        """The built task model. `saved_config` is the `get_config()` of the model an earlier run in the
        same model_dir built: the new one must match it (raise otherwise) and may take settings from it
        that the data cannot tell (e.g. the label set)."""
        raise NotImplementedError

    # ----------------------------------------------------------- steps
    def build_train_dataset(self, model, examples, batch_size, seed=0, bucket_window=1, dynamic_padding=True,
                            input_context=None):
        raise NotImplementedError

    def build_eval_dataset(self, model, examples, batch_size):
        raise NotImplementedError

    def compute_loss(self, model, batch, training):
        features, labels = batch
        return self.logits_loss(model, model(features, training=training), labels)

    def logits_loss(self, model, logits, labels):
        """(mean loss, metrics) of the model's outputs `logits` for `labels` (a distillation step adds its own
        terms to the same loss)."""
        raise NotImplementedError

    def distillation_targets(self, model, features, labels, logits):
        """[`bert_tf.distillation.losses.DistillTarget`]: the outputs of `model` (`logits`, from `features`) that
        a student matches to its teacher's, with the rows and classes that count. A task without them cannot be
        distilled."""
        raise NotImplementedError

    def examples_from_texts(self, texts):
        """Examples for the texts `[(text, "file:line")]` with placeholder labels, for a teacher to label."""
        raise ConfigError(f"--task={self.name}: unlabelled text is not supported for this task")

    def pretrained_backbone(self, run_config):
        """(encoder, preprocessor) the task brings itself instead of `--init_checkpoint`'s (a distillation student
        taken from its teacher), or None: the driver loads them from the run's settings."""
        del run_config
        return None

    def predict(self, model, examples, batch_size, strategy=None):
        raise NotImplementedError

    def metrics(self, examples, outputs):
        raise NotImplementedError

    def tune_on_dev(self, model, evaluator):
        """Decision settings fitted on dev predictions once the final weights are loaded (e.g. a multi-label
        model's thresholds), stored in `model` so its saves and exports use them; returns them as {name: number}
        for eval_results.json ({}: the task tunes nothing). `evaluator` has `examples(split)` and
        `predict(split)`."""
        del model, evaluator
        return {}

    def aggregate_metrics(self, results):
        """Metrics of all splits together -> the reported dict (a hook for derived figures)."""
        return results

    def degenerate_predictions(self, examples, outputs):
        """Why `outputs` show a model that learned nothing (e.g. one class for every example), or None.

        The driver warns with this after an evaluation past warm-up, so a collapsed run says so."""
        del examples, outputs
        return None

    def write_predictions(self, split, examples, outputs, out_dir):
        raise NotImplementedError

    def prediction_metrics(self, split, examples, outputs):
        """The official metrics of predictions written for `split` when its examples carry answers, else {}
        (merged into eval_results.json by the driver)."""
        del split, examples, outputs
        return {}

    # ---------------------------------------------------------- export
    @property
    def has_litert_export(self):
        """Whether the task model has a LiteRT export (checked before training, not after it)."""
        return self.model_class.has_litert_export

    def export(self, model, export_dir):
        """Writes the serving SavedModel `<export_dir>/<version>/` (the model's own export); returns its path."""
        return model.export(export_dir, task=self.name)

    def representative_texts(self, n, seed=0):
        """`n` real training inputs of the task (a fixed random sample, file order): int8 LiteRT calibration."""
        raise NotImplementedError

    def export_litert(self, model, export_dir, precision="int8", representative_examples=200):
        """Writes `<export_dir>/model.tflite` + `model.json` (the model's own LiteRT export, full `int8` calibrated
        on `representative_examples` training inputs); returns the .tflite path."""
        texts = self.representative_texts(representative_examples) if precision == "int8" else None
        return model.export_litert(export_dir, precision=precision, representative_texts=texts, task=self.name)


def token_id_predictor(model, strategy=None, rank=2):
    """`predictor(dataset) -> {"logits", "labels", "index"}` NumPy arrays for a model fed token ids.

    The dataset yields `(features, labels, index)`. On one replica this is one
    `tf.function` traced once for any batch size and length (a `[None] * rank`
    signature: 2 for `[B, T]`, 3 for `[B, options, T]`); on several replicas it
    goes through `bert_tf.training.predict`.
    """
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        def step(model_, batch):
            features, labels, index = batch
            return {"logits": model_(features, training=False), "labels": labels, "index": index}

        return lambda ds: distributed_predict(strategy, model, ds, step)
    spec = {k: tf.TensorSpec([None] * rank, tf.int32, name=k) for k in INPUT_KEYS}
    forward = tf.function(lambda features: model(features, training=False), input_signature=[spec])

    def predictor(ds):
        out = {"logits": [], "labels": [], "index": []}
        for features, labels, index in ds:
            out["logits"].append(forward({k: features[k] for k in INPUT_KEYS}).numpy())
            out["labels"].append(labels.numpy())
            out["index"].append(index.numpy())
        return {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in out.items()}

    return predictor


def in_example_order(outputs, n):
    """Prediction outputs carrying `index` -> the same arrays in example order (checks none is lost)."""
    index = np.asarray(outputs["index"])
    if sorted(index.tolist()) != list(range(n)):
        raise RuntimeError(f"prediction lost or duplicated examples: {len(index)} outputs for {n} examples")
    inverse = np.argsort(index)
    return {k: np.asarray(v)[inverse] for k, v in outputs.items() if k != "index"}
