"""Fine-tuning driver: a `bert_tf.tasks.FinetuningTask` + `FinetuneConfig` -> trained, evaluated, exported.

`run(task, config)` is what `trainers/finetune.py` calls after parsing its flags:

1. the pretrained encoder and a preprocessor with its vocabulary and casing
   (`load_pretrained`), then the task model from `task.build_model` — the one
   object that is trained, checkpointed, saved as `<model_dir>/model.keras`
   and exported;
2. training with `bert_tf.training.Trainer` (resume from the newest
   `ckpt-<step>`, SIGTERM checkpoint, NaN guard, progress, TensorBoard),
   evaluating every epoch and keeping the best checkpoint by the task's main
   metric in `<model_dir>/best/`;
3. the best weights (else the newest, else the initial ones) evaluated
   (`eval_results.json`), predicted (`task.write_predictions`) and exported
   (`task.export`).

`<model_dir>/model_config.json` records the task model's Keras config when a
run starts; a later run in the same directory must build the same kind of
model (same labels, pair/single input), and takes the labels from it when
the data cannot tell them.

Example (see `bert_tf.tasks.SentencePredictionTask` for a task)::

    config = FinetuneConfig(model_dir="/tmp/run", init_checkpoint="/models/bert", do_train=True, do_eval=True)
    results = run(SentencePredictionTask(glue.get_task("mrpc", "/data/glue")), config)
"""

import dataclasses
import json
import math
import os

import keras
import tensorflow as tf
from absl import logging

from bert_tf.training import distribute
from bert_tf import atomic
from bert_tf.export import litert
from bert_tf.model.checkpoints import from_pretrained
from bert_tf.model.config import BertConfig
from bert_tf.model.encoder import BertEncoder
from bert_tf.model.task_model import SERVING_DTYPES
from bert_tf.training.optimization import OPTIMIZERS, create_optimizer
from bert_tf.training.settings import ConfigError, setting
from bert_tf.text.preprocessor import BertPreprocessor
from bert_tf.training import BestCheckpointExporter, Trainer, latest_checkpoint_step

MODEL_CONFIG_FILE = "model_config.json"
KERAS_MODEL_FILE = "model.keras"


@dataclasses.dataclass
class FinetuneConfig:
    """Settings of one fine-tuning run; `trainers/finetune.py`'s flags are generated from these fields (with the
    settings of the tasks, each task's own dataclass)."""

    model_dir: str | None = setting(None, "Checkpoints, TensorBoard logs, eval_results.json, submissions, "
                                          "model.keras (required).")
    init_checkpoint: str | None = setting(None, "Pretrained BERT: any directory/prefix bert_tf.from_pretrained reads.")
    bert_config_file: str | None = setting(None, "Without --init_checkpoint: train from random init with this "
                                                 "config.")
    vocab_file: str | None = setting(None, "vocab.txt (default: the init checkpoint's).")
    do_lower_case: bool | None = setting(None, "Lower-case input (default: the init checkpoint's casing).")
    max_seq_length: int | None = setting(None, "Longest packed sequence; longer inputs are truncated (tagging: "
                                               "chunked; squad: windowed). Default: the task's (128; squad 384).")
    train_batch_size: int = setting(32, "Global training batch size.")
    eval_batch_size: int = setting(64, "Evaluation/prediction batch size.")
    learning_rate: float = setting(2e-5, "Peak learning rate.")
    num_train_epochs: float = setting(3.0, "Epochs (may be fractional).")
    warmup_proportion: float = setting(0.1, "Fraction of steps of linear warmup.")
    weight_decay: float = setting(0.01, "Decoupled weight decay (LayerNorm and biases excluded).")
    adam_epsilon: float = setting(1e-6, "Adam's epsilon: 1e-6 as Google's BERT and the Model Garden; PyTorch's AdamW "
                                        "(Hugging Face's default) uses 1e-8, which makes the first updates of "
                                        "weights with tiny gradients up to ~20% larger.")
    optimizer: str = setting("adamw", "Optimizer.", choices=OPTIMIZERS)
    adam_bias_correction: bool = setting(
        True, "AdamW with Adam's bias correction, as PyTorch/Hugging Face, Keras and the Model Garden (the "
              "default). --noadam_bias_correction = Google's TF1 AdamWeightDecay exactly, whose uncorrected moments "
              "make the first few hundred updates 3-6x larger (it can collapse small models on rare labels to "
              "predicting one class).")
    strategy: str = setting("one_device", "Distribution.", choices=distribute.STRATEGIES)
    tpu: str | None = setting(None, "TPU name or address for --strategy=tpu.")
    num_gpus: int | None = setting(None, "GPUs for --strategy=mirrored (default all).")
    mixed_precision: str = setting("float32", "Precision policy.", choices=distribute.PRECISION_POLICIES)
    jit_compile: bool = setting(False, "XLA-compile the training step.")
    do_train: bool = setting(False, "Train.")
    do_eval: bool = setting(False, "Evaluate on the dev set(s); write eval_results.json.")
    do_predict: bool = setting(False, "Predict the test set(s); write submission/prediction files.")
    predict_dir: str | None = setting(None, "Where prediction files go (default <model_dir>/submission for GLUE/tsv, "
                                            "<model_dir> for tagging and squad).")
    export_dir: str | None = setting(None, "Export the trained model here (versioned serving SavedModel).")
    serving_dtype: str | None = setting(
        None, "Compute dtype of the serving export (default: the training precision). bfloat16/float16: the "
              "encoder's matmuls in that dtype (weights, LayerNorm, softmax and outputs stay float32).",
        choices=tuple(SERVING_DTYPES))
    dynamic_padding: bool = setting(True, "Pad each batch to its longest sequence.")
    bucket_window: int = setting(
        1, "Batches sorted together by length before they are cut (length bucketing). 1: none, batches are "
           "random draws as in Hugging Face's Trainer. More (e.g. 32) pads less and trains faster, but batches "
           "of similar length hold similar examples: on small data that cost up to 15 F1 points (README).")
    steps_per_loop: int = setting(50, "Steps per tf.function call / progress line.")
    keep_checkpoint_max: int = setting(2, "Training checkpoints kept.")
    max_train_examples: int | None = setting(None, "Use only the first N training examples (quick runs).")
    seed: int = setting(12345, "Seed of head init, dropout and shuffling.")
    dropout_rate: float | None = setting(None, "Dropout before the head (default: the encoder's hidden dropout).")
    litert_export_dir: str | None = setting(None, "Also write <dir>/model.tflite (tokenizer inside) + model.json.")
    litert_precision: str = setting("int8", "LiteRT weights.", choices=litert.PRECISIONS)
    representative_examples: int = setting(200, "Training texts that calibrate full int8 LiteRT.")


def _init_dir(path):
    """`--init_checkpoint` -> a directory for from_pretrained."""
    if os.path.isdir(path):
        return path
    if os.path.exists(path + ".index"):
        return os.path.dirname(path) or "."
    raise FileNotFoundError(f"--init_checkpoint={path!r}: neither a directory nor a checkpoint prefix")


def load_pretrained(config):
    """(encoder, preprocessor): pretrained weights (or a config for random init) and the vocabulary + casing
    of the checkpoint unless `vocab_file` / `do_lower_case` override them."""
    vocab_file, lower_case = config.vocab_file, config.do_lower_case
    if config.init_checkpoint:
        pretrained = from_pretrained(_init_dir(config.init_checkpoint))
        encoder, bert_config = pretrained.encoder, pretrained.config
        vocab_file = vocab_file or pretrained.vocab_file
        lower_case = pretrained.lower_case if lower_case is None else lower_case
    elif config.bert_config_file:
        bert_config = BertConfig.from_json_file(config.bert_config_file)
        encoder = BertEncoder(bert_config)
    else:
        raise ValueError("give --init_checkpoint (or --bert_config_file for random initialization)")
    if not vocab_file:
        raise ValueError("no vocab: give --vocab_file (the init checkpoint has none)")
    if config.max_seq_length > bert_config.max_position_embeddings:
        raise ValueError(f"--max_seq_length={config.max_seq_length} exceeds the model's "
                         f"max_position_embeddings={bert_config.max_position_embeddings}")
    preprocessor = BertPreprocessor(vocab_file, lower_case=True if lower_case is None else bool(lower_case),
                                    seq_length=config.max_seq_length, dynamic_padding=True)
    return encoder, preprocessor


def _saved_model_config(model_dir):
    path = os.path.join(model_dir, MODEL_CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def build_task_model(task, config, strategy):
    """The task model under `strategy`, checked against (and completed from) an earlier run's config."""
    saved = _saved_model_config(config.model_dir)
    with strategy.scope():
        encoder, preprocessor = task.pretrained_backbone(config) or load_pretrained(config)
        model = task.build_model(encoder, preprocessor, config.dropout_rate, saved_config=saved)
    if distribute.is_chief(strategy):
        atomic.write_json(os.path.join(config.model_dir, MODEL_CONFIG_FILE), model.get_config())
    return model


class _Evaluator:
    """Evaluation and prediction of one task model; labels of a split are read once."""

    def __init__(self, task, model, config, strategy):
        self.task, self.model, self.config, self.strategy = task, model, config, strategy
        self._examples = {}
        self.degenerate = {}  # {split: why its last predictions look like a model that learned nothing}

    def examples(self, split):
        if split not in self._examples:
            self._examples[split] = self.task.examples(split)
        return self._examples[split]

    def predict(self, split):
        return self.task.predict(self.model, self.examples(split), self.config.eval_batch_size, self.strategy)

    def evaluate(self, splits=None):
        """Metrics of every evaluation split (prefixed, e.g. MNLI's `mismatched_`)."""
        results, self.degenerate = {}, {}
        for split, prefix in (splits or self.task.eval_splits).items():
            if not self.task.has_split(split) or not self.examples(split):
                continue
            outputs = self.predict(split)
            reason = self.task.degenerate_predictions(self.examples(split), outputs)
            if reason:
                self.degenerate[split] = reason
            for name, value in self.task.metrics(self.examples(split), outputs).items():
                results[prefix + name] = value
        return self.task.aggregate_metrics(results)


def warn_if_learned_nothing(task, config, degenerate, step, warmup_steps):
    """Logs a warning when an evaluation past warm-up shows a model that learned nothing; returns the text."""
    if not degenerate or step <= warmup_steps:
        return None
    what = "; ".join(f"{split}: {why}" for split, why in degenerate.items())
    causes = [f"a learning rate too high for this model and data (--learning_rate={config.learning_rate:g}; "
              "try 2e-5 to 5e-5)", "too few steps (raise --num_train_epochs)",
              "labels too rare for the loss to notice (check the label counts of the training data)"]
    if not config.adam_bias_correction:
        causes.insert(0, "the large first updates of Google's uncorrected AdamWeightDecay "
                         "(--noadam_bias_correction: drop it)")
    text = (f"{task.name}: at step {step}, past the {warmup_steps} warm-up steps, the model looks like it learned "
            f"nothing ({what}). Likely causes: " + "; ".join(causes) + ".")
    logging.warning(text)
    print("WARNING: " + text, flush=True)
    return text


def _train(task, model, config, strategy, evaluator, exporter):
    examples = task.examples("train")
    if config.max_train_examples:
        examples = examples[:config.max_train_examples]
    if not examples:
        raise ValueError(f"no training examples for {task.name}")
    batch = config.train_batch_size
    steps_per_epoch = max(1, math.ceil(len(examples) / batch))
    num_train_steps = max(1, int(round(steps_per_epoch * config.num_train_epochs)))
    warmup = int(num_train_steps * config.warmup_proportion)
    with strategy.scope():
        optimizer = create_optimizer(config.optimizer, config.learning_rate, num_train_steps, warmup,
                                     weight_decay=config.weight_decay, epsilon=config.adam_epsilon,
                                     bias_correction=config.adam_bias_correction)
    has_dev = any(task.has_split(s) for s in task.eval_splits)

    def evaluate(trainer):
        results = evaluator.evaluate()
        warn_if_learned_nothing(task, config, evaluator.degenerate, int(trainer.global_step.numpy()), warmup)
        return results

    trainer = Trainer(
        model, optimizer, task.compute_loss, strategy=strategy, model_dir=config.model_dir,
        num_train_steps=num_train_steps, steps_per_loop=min(config.steps_per_loop, steps_per_epoch),
        save_checkpoints_steps=steps_per_epoch, keep_checkpoint_max=config.keep_checkpoint_max,
        jit_compile=config.jit_compile, global_batch_size=batch,
        eval_fn=evaluate if has_dev else None,
        eval_every_steps=steps_per_epoch if has_dev else None, best_exporter=exporter if has_dev else None)
    print(f"{task.name}: {len(examples)} training examples, {steps_per_epoch} steps/epoch, "
          f"{num_train_steps} steps, warmup {warmup}, batch {batch}", flush=True)

    def dataset_fn(ctx):
        return task.build_train_dataset(model, examples, ctx.get_per_replica_batch_size(batch), seed=config.seed,
                                        bucket_window=config.bucket_window,
                                        dynamic_padding=config.dynamic_padding, input_context=ctx)

    result = trainer.train(train_dataset_fn=dataset_fn)
    print(f"trained to step {result.global_step} (loss {result.loss})", flush=True)


def _load_final_weights(model, model_dir, exporter, trained):
    """The best checkpoint, else (without training in this run) the newest; returns its step or None."""
    if exporter.best_checkpoint:
        path = exporter.restore(model)
        print(f"loaded best checkpoint {path} ({exporter.metric_name}={exporter.best_value:.4f} at step "
              f"{exporter.best_step})", flush=True)
        return exporter.best_step
    step = latest_checkpoint_step(model_dir)
    if not trained and step is not None:
        path = tf.train.latest_checkpoint(model_dir)
        tf.train.Checkpoint(model=model).restore(path).expect_partial()
        print(f"loaded checkpoint {path}", flush=True)
    elif not trained:
        logging.warning("no fine-tuned checkpoint in %s: evaluating/predicting with the initial weights", model_dir)
    return step


def write_eval_results(directory, results, merge=False):
    """Writes `results` to `<directory>/eval_results.json` (the one writer of that file), atomically; `merge`
    keeps the keys already there that `results` does not have."""
    path = os.path.join(directory, "eval_results.json")
    merged = {}
    if merge and tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            merged = json.load(f)
    merged.update(results)
    atomic.write_json(path, merged)
    return path


def _final_evaluation(task, evaluator, config, step, is_chief, tuned):
    results = {k: float(v) for k, v in {**tuned, **evaluator.evaluate(task.final_eval_splits)}.items()}
    if step is not None:
        results["global_step"] = int(step)
    if is_chief:
        write_eval_results(config.model_dir, results)
    print("eval results: " + json.dumps(results, sort_keys=True), flush=True)
    return results


def _write_predictions(task, evaluator, config, is_chief):
    out_dir = config.predict_dir or os.path.join(config.model_dir, task.predictions_subdir)
    os.makedirs(out_dir, exist_ok=True)
    for split in task.test_splits:
        if not task.has_split(split):
            logging.warning("no %s file for %s; skipping its predictions", split, task.name)
            continue
        examples = evaluator.examples(split)
        if examples and is_chief:
            outputs = evaluator.predict(split)
            path = task.write_predictions(split, examples, outputs, out_dir)
            print(f"wrote {len(examples)} predictions to {path}", flush=True)
            scores = task.prediction_metrics(split, examples, outputs)
            if scores:
                write_eval_results(out_dir, scores, merge=True)


def save_keras_model(model, model_dir):
    """Writes the task model (weights, preprocessor with its vocabulary, labels) as `<model_dir>/model.keras`,
    atomically."""
    path = os.path.join(model_dir, KERAS_MODEL_FILE)
    tmp = os.path.join(model_dir, ".tmp-" + KERAS_MODEL_FILE)
    model.save(tmp)
    os.replace(tmp, path)
    return path


def check(task, config):
    """The run's settings checked before any work starts: `ConfigError` says what cannot work."""
    if not config.model_dir:
        raise ConfigError("--model_dir is required")
    if not (config.do_train or config.do_eval or config.do_predict):
        raise ConfigError("give at least one of --do_train, --do_eval, --do_predict")
    if config.litert_export_dir and not task.has_litert_export:
        raise ConfigError(f"--task={task.name} has no LiteRT export: drop --litert_export_dir "
                          "(--export_dir writes its serving SavedModel)")
    task.check(config)


def run(task, config):
    """Trains / evaluates / predicts / exports `task` as `config` says; returns the eval results (or {})."""
    check(task, config)
    if config.max_seq_length is None:
        config = dataclasses.replace(config, max_seq_length=task.default_max_seq_length)
    os.makedirs(config.model_dir, exist_ok=True)
    distribute.configure_mixed_precision(config.mixed_precision)
    strategy = distribute.get_strategy(config.strategy, num_gpus=config.num_gpus, tpu=config.tpu)
    keras.utils.set_random_seed(config.seed)
    model = build_task_model(task, config, strategy)
    evaluator = _Evaluator(task, model, config, strategy)
    exporter = BestCheckpointExporter(os.path.join(config.model_dir, "best"), task.main_metric,
                                      higher_is_better=task.higher_is_better)
    if config.do_train:
        _train(task, model, config, strategy, evaluator, exporter)
    step = _load_final_weights(model, config.model_dir, exporter, trained=config.do_train)
    is_chief = distribute.is_chief(strategy)
    tuned = task.tune_on_dev(model, evaluator)
    if tuned and is_chief and not config.do_eval:
        write_eval_results(config.model_dir, tuned, merge=True)
    results = _final_evaluation(task, evaluator, config, step, is_chief, tuned) if config.do_eval else {}
    if config.do_predict:
        _write_predictions(task, evaluator, config, is_chief)
    if is_chief and (config.do_train or config.export_dir):
        print(f"saved the task model to {save_keras_model(model, config.model_dir)}", flush=True)
    if config.export_dir and is_chief:
        served = model.with_compute_dtype(config.serving_dtype) if config.serving_dtype else model
        print(f"exported to {task.export(served, config.export_dir)}", flush=True)
    if config.litert_export_dir and is_chief:
        path = task.export_litert(model, config.litert_export_dir, precision=config.litert_precision,
                                  representative_examples=config.representative_examples)
        print(f"exported LiteRT model to {path}", flush=True)
    return results
