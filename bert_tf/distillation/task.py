"""`DistillationTask`: a fine-tuning task whose model learns from a fine-tuned teacher as well as from the labels.

It wraps the task of the data (`SentencePredictionTask`, `TaggingTask`, `QuestionAnsweringTask`, ...) and hands the
shared fine-tuning driver (`bert_tf.training.finetuning.run`) a student instead of a model from `--init_checkpoint`:
so resume, SIGTERM, progress, TensorBoard, evaluation with the task's official metrics, `--do_predict`,
`model.keras`, the serving SavedModel and LiteRT are the fine-tuning ones, and the student is an ordinary task model.

The student is, by default, the teacher with fewer layers (`--student_num_layers` or `--student_layer_map`,
initialised from the teacher as DistilBERT is); with `--init_checkpoint` (a smaller pretrained BERT with the
teacher's vocabulary) or `--bert_config_file` (random init) it is a new model of the task. Each training step runs
the teacher (inference mode) on the same batch and minimises

    alpha * distillation(student, teacher; T) + (1 - alpha) * task loss + hidden_state_weight * hidden-state MSE

(`bert_tf.distillation.losses`; the hidden-state term needs the teacher's width and maps student layer i to teacher
layer `layer_map[i]`). `--unlabelled_text_file` adds in-domain text that the teacher labels: its batches carry the
distillation (and hidden-state) terms only.
"""

import dataclasses

import keras
import tensorflow as tf
from absl import logging

from bert_tf.distillation import losses
from bert_tf.distillation.student import (check_same_task, layer_dropped_student, layer_map as spread_layers,
                                          parse_layer_map)
from bert_tf.model.task_model import captured_encoder_outputs
from bert_tf.tasks.base import FinetuningTask
from bert_tf.training.settings import ConfigError, setting


@dataclasses.dataclass
class DistillConfig:
    """Settings of distillation; `trainers/distill.py`'s flags beside the fine-tuning ones."""

    teacher: str | None = setting(None, "The fine-tuned teacher: its model.keras, or the fine-tuning run's "
                                        "--model_dir that holds one (required).")
    student_num_layers: int | None = setting(None, "Student = the teacher with this many layers, spread evenly "
                                                   "(first and last kept; DistilBERT's initialisation). Default: "
                                                   "half the teacher's.")
    student_layer_map: str | None = setting(None, "Teacher layers the student starts from, e.g. 0,2,5 (instead "
                                                  "of --student_num_layers).")
    temperature: float = setting(2.0, "Softmax temperature of the distillation term.")
    alpha: float = setting(0.5, "Weight of the distillation term; 1 - alpha weighs the task loss on the labels.")
    hidden_state_weight: float = setting(0.0, "Weight of TinyBERT-style hidden-state transfer (MSE of student "
                                              "layer i to teacher layer map[i]; same width only). 0: off.")
    unlabelled_text_file: str | None = setting(None, "In-domain text, one example per line (tagging: words "
                                                     "separated by spaces), labelled by the teacher.")


def load_teacher(path):
    """The teacher task model from `model.keras` or a directory holding one."""
    candidate = path
    if tf.io.gfile.isdir(path):
        candidate = path.rstrip("/") + "/model.keras"
        if not tf.io.gfile.exists(candidate):
            saved = tf.io.gfile.exists(path.rstrip("/") + "/saved_model.pb")
            raise ConfigError(f"--teacher={path}: no model.keras in it" + (
                " (a serving SavedModel holds only its raw-text signatures, not the task model: give the "
                "fine-tuning run's model.keras, which trainers/finetune.py writes to its --model_dir)" if saved
                else "; give the fine-tuning run's --model_dir or its model.keras"))
    elif not tf.io.gfile.exists(path):
        raise ConfigError(f"--teacher={path}: no such file or directory")
    try:
        teacher = keras.saving.load_model(candidate)
    except Exception as e:  # a truncated or foreign file: say which, keep the cause
        raise ConfigError(f"--teacher={candidate}: cannot load it as a task model ({type(e).__name__}: {e})") from e
    if teacher.preprocessor is None:
        raise ConfigError(f"--teacher={candidate}: the model holds no preprocessor (vocabulary)")
    return teacher


class DistillationTask(FinetuningTask):
    """`task` trained as a student of `teacher` (see the module docstring)."""

    def __init__(self, task, teacher, config):
        self.task, self.teacher, self.config = task, teacher, config
        self.name, self.main_metric, self.higher_is_better = task.name, task.main_metric, task.higher_is_better
        self.default_max_seq_length = task.default_max_seq_length
        self.predictions_subdir, self.model_class = task.predictions_subdir, task.model_class
        self.layer_map = None
        self._unlabelled = None

    # ------------------------------------------------------------ checks
    def check(self, run_config):
        self.task.check(run_config)
        c = self.config
        if not 0.0 <= c.alpha <= 1.0 or c.temperature <= 0 or c.hidden_state_weight < 0:
            raise ConfigError(f"--alpha={c.alpha} (0..1), --temperature={c.temperature} (> 0), "
                              f"--hidden_state_weight={c.hidden_state_weight} (>= 0)")
        if c.student_num_layers and c.student_layer_map:
            raise ConfigError("give --student_num_layers or --student_layer_map, not both")
        own_student = run_config.init_checkpoint or run_config.bert_config_file
        if own_student and (c.student_num_layers or c.student_layer_map):
            raise ConfigError("--student_num_layers/--student_layer_map take the student from the teacher; "
                              "--init_checkpoint/--bert_config_file give another one: choose one")
        if not own_student and (run_config.vocab_file or run_config.do_lower_case is not None):
            raise ConfigError("--vocab_file/--do_lower_case: a student taken from its teacher reads the teacher's "
                              "vocabulary and casing; drop them")
        if type(self.task).distillation_targets is FinetuningTask.distillation_targets:
            raise ConfigError(f"--task={self.task.name} cannot be distilled yet")
        if c.unlabelled_text_file and not tf.io.gfile.exists(c.unlabelled_text_file):
            raise ConfigError(f"--unlabelled_text_file={c.unlabelled_text_file}: no such file")
        self.unlabelled_examples()  # read now: a task that takes no unlabelled text says so before training

    # ----------------------------------------------------------- the student
    def pretrained_backbone(self, run_config):
        """None (the driver loads --init_checkpoint / --bert_config_file) or, by default, the teacher's encoder and
        preprocessor: `build_model` then drops layers from a copy of the teacher."""
        if run_config.init_checkpoint or run_config.bert_config_file:
            return None
        seq_length = run_config.max_seq_length or self.teacher.preprocessor.seq_length
        return self.teacher.encoder, self.teacher.preprocessor.with_padding(seq_length=seq_length)

    def _teacher_layers(self):
        teacher_layers = self.teacher.encoder.config.num_hidden_layers
        if self.config.student_layer_map:
            return parse_layer_map(self.config.student_layer_map, teacher_layers)
        return spread_layers(teacher_layers, self.config.student_num_layers or max(1, teacher_layers // 2))

    def build_model(self, encoder, preprocessor, dropout_rate=None, saved_config=None):
        from_teacher = encoder is self.teacher.encoder
        model = self.task.build_model(encoder, preprocessor, dropout_rate, saved_config=saved_config)
        check_same_task(self.teacher, model)
        if from_teacher:
            self.layer_map = self._teacher_layers()
            model = layer_dropped_student(model, self.teacher, self.layer_map)
        else:
            s, t = model.encoder.config, self.teacher.encoder.config
            self.layer_map = spread_layers(t.num_hidden_layers, s.num_hidden_layers) \
                if s.num_hidden_layers <= t.num_hidden_layers else None
        if saved_config is not None and model.encoder.config.num_hidden_layers != \
                saved_config["encoder"]["config"]["config"]["num_hidden_layers"]:
            raise ValueError("the model directory holds a student of another depth; use a fresh --model_dir")
        self._check_hidden_transfer(model)
        print(f"{self.name}: student {model.encoder.config.num_hidden_layers} layers x "
              f"{model.encoder.config.hidden_size} from teacher {self.teacher.encoder.config.num_hidden_layers} x "
              f"{self.teacher.encoder.config.hidden_size}" + (f", teacher layers {self.layer_map}"
                                                              if from_teacher else ""), flush=True)
        return model

    def _check_hidden_transfer(self, model):
        if self.config.hidden_state_weight <= 0:
            return
        s, t = model.encoder.config, self.teacher.encoder.config
        if s.hidden_size != t.hidden_size or self.layer_map is None:
            raise ConfigError(f"--hidden_state_weight needs the student's width and no more layers than the "
                              f"teacher (student {s.num_hidden_layers} x {s.hidden_size}, teacher "
                              f"{t.num_hidden_layers} x {t.hidden_size})")

    # --------------------------------------------------------------- data
    @property
    def eval_splits(self):
        return self.task.eval_splits

    @property
    def test_splits(self):
        return self.task.test_splits

    @property
    def final_eval_splits(self):
        return self.task.final_eval_splits

    def has_split(self, split):
        return self.task.has_split(split)

    def unlabelled_examples(self):
        """The examples the teacher labels (`--unlabelled_text_file`), read once; [] without it."""
        if self._unlabelled is None:
            self._unlabelled = []
            if self.config.unlabelled_text_file:
                self._unlabelled = self.task.examples_from_texts(_read_lines(self.config.unlabelled_text_file))
                print(f"{self.name}: {len(self._unlabelled)} unlabelled examples from "
                      f"{self.config.unlabelled_text_file}", flush=True)
        return self._unlabelled

    def examples(self, split):
        if split == "train":
            return self.task.examples(split) + self.unlabelled_examples()
        return self.task.examples(split)

    def build_train_dataset(self, model, examples, batch_size, seed=0, bucket_window=1, dynamic_padding=True,
                            input_context=None):
        """The task's batches, each as `(batch, labelled)`; unlabelled examples in batches of their own, drawn in
        proportion to their number."""
        unlabelled_ids = {id(e) for e in self.unlabelled_examples()}
        parts = [[e for e in examples if id(e) not in unlabelled_ids], [e for e in examples if id(e) in unlabelled_ids]]
        datasets, weights = [], []
        for flag, part in zip((1.0, 0.0), parts):
            if part:
                ds = self.task.build_train_dataset(model, part, batch_size, seed=seed, bucket_window=bucket_window,
                                                   dynamic_padding=dynamic_padding, input_context=input_context)
                datasets.append(ds.map(lambda *batch, f=flag: (batch, tf.constant(f))))
                weights.append(float(len(part)))
        if len(datasets) == 1:
            return datasets[0]
        return tf.data.Dataset.sample_from_datasets(datasets, weights=[w / sum(weights) for w in weights], seed=seed)

    def build_eval_dataset(self, model, examples, batch_size):
        return self.task.build_eval_dataset(model, examples, batch_size)

    # -------------------------------------------------------------- steps
    def compute_loss(self, model, batch, training):
        (features, labels), labelled = batch
        hidden = self.config.hidden_state_weight > 0
        with captured_encoder_outputs(model) as student_hidden, captured_encoder_outputs(self.teacher) as teacher_hidden:
            logits = model(features, training=training)
            teacher_logits = self.teacher(features, training=False)
        task_loss, metrics = self.task.logits_loss(model, logits, labels)
        distill = losses.distillation_loss(self.task.distillation_targets(model, features, labels, logits),
                                           self.task.distillation_targets(self.teacher, features, labels,
                                                                          teacher_logits),
                                           self.config.temperature)
        labelled = tf.cast(labelled, tf.float32)
        loss = self.config.alpha * distill + (1.0 - self.config.alpha) * labelled * task_loss
        metrics = {**metrics, "distillation_loss": distill, "task_loss": task_loss}
        if hidden:
            hidden_loss = losses.hidden_state_loss(student_hidden, teacher_hidden, self.layer_map)
            loss += self.config.hidden_state_weight * hidden_loss
            metrics["hidden_state_loss"] = hidden_loss
        return loss, metrics

    def predict(self, model, examples, batch_size, strategy=None):
        return self.task.predict(model, examples, batch_size, strategy)

    def metrics(self, examples, outputs):
        return self.task.metrics(examples, outputs)

    def tune_on_dev(self, model, evaluator):
        return self.task.tune_on_dev(model, evaluator)

    def aggregate_metrics(self, results):
        return self.task.aggregate_metrics(results)

    def degenerate_predictions(self, examples, outputs):
        return self.task.degenerate_predictions(examples, outputs)

    def write_predictions(self, split, examples, outputs, out_dir):
        return self.task.write_predictions(split, examples, outputs, out_dir)

    def prediction_metrics(self, split, examples, outputs):
        return self.task.prediction_metrics(split, examples, outputs)

    # ------------------------------------------------------------- export
    @property
    def has_litert_export(self):
        return self.task.has_litert_export

    def export(self, model, export_dir):
        return self.task.export(model, export_dir)

    def representative_texts(self, n, seed=0):
        return self.task.representative_texts(n, seed=seed)

    def export_litert(self, model, export_dir, precision="int8", representative_examples=200):
        return self.task.export_litert(model, export_dir, precision, representative_examples)


def _read_lines(path):
    """Non-blank lines of a UTF-8 file as (text, "file:line"); a line that is not UTF-8 is skipped and logged."""
    lines, skipped = [], 0
    with tf.io.gfile.GFile(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                skipped += 1
                logging.warning("%s:%d: not UTF-8; skipped", path, number)
                continue
            if text:
                lines.append((text, f"{path}:{number}"))
    if not lines:
        raise ConfigError(f"--unlabelled_text_file={path}: no text in it ({skipped} lines not UTF-8)")
    return lines
