"""The student: a task model of the teacher's own class, built from the teacher.

* `layer_map(teacher_layers, student_layers)`: which teacher layer each student layer starts from — spread evenly
  with the first and the last kept (12 -> 6 gives 0, 2, 4, 7, 9, 11, the layers DistilBERT's initialisation takes;
  6 -> 3 gives 0, 2, 5).
* `layer_dropped_student(template, teacher, layer_map)`: the data's task model with fewer layers; embeddings, the mapped
  transformer layers, the pooler and the task head copied from the teacher (DistilBERT's initialisation).
* `layer_dropped_encoder(encoder, layer_map)`: the same for a bare pretrained encoder (a baseline student).
* `check_same_task(teacher, student)`: the two must be the same kind of task model (class, labels, inputs, head
  settings) and read the same vocabulary, or the teacher's outputs mean nothing to the student.
"""

import re

import numpy as np

from bert_tf.model.config import BertConfig
from bert_tf.model.encoder import BertEncoder
from bert_tf.training.settings import ConfigError

# Keys of a task model's get_config() that a student may change (everything else — labels, pair input, tag scheme,
# windows, pooling ... — must equal the teacher's).
_STUDENT_KEYS = {"name", "trainable", "dtype", "encoder", "preprocessor", "dropout_rate", "initializer_range"}
_LAYER = re.compile(r"(^|/)layer_(\d+)/")


def layer_map(teacher_layers, student_layers):
    """Teacher layer index for each student layer (see the module docstring)."""
    if not 1 <= student_layers <= teacher_layers:
        raise ConfigError(f"a student of {student_layers} layers cannot be taken from a teacher of {teacher_layers}: "
                          f"give 1..{teacher_layers}")
    if student_layers == 1:
        return [teacher_layers - 1]
    return [int(round(x)) for x in np.linspace(0, teacher_layers - 1, student_layers)]


def parse_layer_map(text, teacher_layers):
    """`--student_layer_map=0,2,5` -> [0, 2, 5], checked (increasing, within the teacher)."""
    try:
        layers = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--student_layer_map={text!r}: comma-separated teacher layer indices, e.g. 0,2,5") from None
    if not layers or layers != sorted(set(layers)) or layers[0] < 0 or layers[-1] >= teacher_layers:
        raise ConfigError(f"--student_layer_map={text!r}: increasing distinct indices of the teacher's "
                          f"{teacher_layers} layers (0..{teacher_layers - 1})")
    return layers


def encoder_config(model):
    """The `BertConfig` of a task model's encoder."""
    return model.encoder.config


def _with_layers(config, num_layers):
    config = dict(config)
    encoder = config["encoder"]
    bert = dict(encoder["config"]["config"])
    bert["num_hidden_layers"] = int(num_layers)
    config["encoder"] = {**encoder, "config": {**encoder["config"], "config": bert}}
    return config


def layer_dropped_student(template, teacher, layers):
    """A task model like `template` (the data's task model: labels, preprocessor, dropout) with `len(layers)`
    transformer layers, initialised from the teacher's embeddings, layers `layers`, pooler and head."""
    student = type(template).from_config(_with_layers(template.get_config(), len(layers)))
    student.build()
    teacher_weights = {}
    for v in teacher.weights:
        teacher_weights.setdefault(_own_path(v, teacher), v)

    def source_path(path):
        return _LAYER.sub(lambda m: f"{m.group(1)}layer_{layers[int(m.group(2))]}/", path, count=1)

    values = []
    for v in student.weights:
        source = teacher_weights.get(source_path(_own_path(v, student)))
        if source is None or tuple(source.shape) != tuple(v.shape):
            raise ValueError(f"student weight {v.path} {tuple(v.shape)} has no teacher weight to start from")
        values.append(source.numpy())
    student.set_weights(values)
    return student


def layer_dropped_encoder(encoder, layers):
    """A `BertEncoder` of `len(layers)` layers holding `encoder`'s embeddings, layers `layers` and pooler: the
    student's starting point without a fine-tuned teacher (e.g. the baseline fine-tuned directly on the labels;
    `bert_tf.save_pretrained` makes it an `--init_checkpoint`)."""
    config = BertConfig.from_dict({**encoder.config.to_dict(), "num_hidden_layers": len(layers)})
    student = BertEncoder(config)
    student.embeddings.set_weights(encoder.embeddings.get_weights())
    for i, j in enumerate(layers):
        student.transformer_layers[i].set_weights(encoder.transformer_layers[j].get_weights())
    student.pooler.set_weights(encoder.pooler.get_weights())
    return student


def _own_path(variable, model):
    """A variable's path without its model's (auto-numbered) name: the head's `bert_classifier_1/logits/kernel`
    and `bert_classifier/logits/kernel` are the same weight of two models."""
    prefix = model.name + "/"
    return variable.path[len(prefix):] if variable.path.startswith(prefix) else variable.path


def _task_settings(model):
    return {k: v for k, v in model.get_config().items() if k not in _STUDENT_KEYS}


def check_same_task(teacher, student):
    """Raises `ConfigError` unless `student` can learn from `teacher` (see the module docstring)."""
    if type(student) is not type(teacher):
        raise ConfigError(f"the teacher is a {type(teacher).__name__} but this task trains a "
                          f"{type(student).__name__}: distil a teacher fine-tuned on the same task")
    ours, theirs = _task_settings(student), _task_settings(teacher)
    if ours != theirs:
        differ = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        raise ConfigError("the teacher was fine-tuned for another task: "
                          + "; ".join(f"{k}: teacher {theirs.get(k)!r}, data {ours.get(k)!r}" for k in differ))
    t_vocab, s_vocab = teacher.preprocessor.vocabulary, student.preprocessor.vocabulary
    if list(t_vocab) != list(s_vocab) or teacher.preprocessor.lower_case != student.preprocessor.lower_case:
        raise ConfigError(f"the student reads another vocabulary than its teacher ({len(s_vocab)} vs "
                          f"{len(t_vocab)} tokens, lower_case {student.preprocessor.lower_case} vs "
                          f"{teacher.preprocessor.lower_case}): the teacher's outputs would be for other tokens; "
                          "drop --vocab_file/--do_lower_case, or give a student checkpoint with the teacher's vocab")
    if isinstance(student.encoder.config, BertConfig) and \
            student.encoder.config.vocab_size != teacher.encoder.config.vocab_size:
        raise ConfigError(f"student vocab_size {student.encoder.config.vocab_size} != teacher's "
                          f"{teacher.encoder.config.vocab_size}")
