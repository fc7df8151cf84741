"""Distillation losses: a student's outputs against its teacher's, and hidden states against hidden states.

A task says what its student learns from the teacher as a list of `DistillTarget`s (`FinetuningTask.
distillation_targets`): logits, how they become a distribution (`kind`), which rows count (`row_weights`, e.g. the
first piece of each word in tagging) and which classes exist (`class_mask`, e.g. a window's real tokens for span
start/end). The loss for each kind, with temperature T (Hinton et al.; DistilBERT):

* ``softmax``: T^2 * KL(softmax(teacher / T) || softmax(student / T)), summed over classes, averaged over rows;
* ``sigmoid`` (multi-label): T^2 * binary cross-entropy of sigmoid(student / T) against sigmoid(teacher / T), minus
  the teacher's own entropy (so a perfect student scores 0, as with KL);
* ``mse`` (regression): mean squared difference of the raw outputs (no temperature).

T^2 keeps the gradient's scale independent of T, so the same weight suits any temperature.
"""

import collections

import tensorflow as tf

KINDS = ("softmax", "sigmoid", "mse")
_MASKED = -1e9

DistillTarget = collections.namedtuple("DistillTarget", ["logits", "kind", "row_weights", "class_mask"],
                                       defaults=[None, None])


def _weighted_mean(values, weights):
    if weights is None:
        return tf.reduce_mean(values)
    weights = tf.cast(weights, values.dtype)
    return tf.reduce_sum(values * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


def _softmax_kl(student, teacher, temperature, class_mask):
    if class_mask is not None:
        off = (1.0 - tf.cast(class_mask, student.dtype)) * _MASKED
        student, teacher = student + off, teacher + off
    log_p_student = tf.nn.log_softmax(student / temperature, axis=-1)
    log_p_teacher = tf.nn.log_softmax(teacher / temperature, axis=-1)
    return tf.reduce_sum(tf.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)


def _sigmoid_kl(student, teacher, temperature):
    p_teacher = tf.sigmoid(teacher / temperature)
    cross = tf.nn.sigmoid_cross_entropy_with_logits(labels=p_teacher, logits=student / temperature)
    own = tf.nn.sigmoid_cross_entropy_with_logits(labels=p_teacher, logits=teacher / temperature)
    return tf.reduce_mean(cross - own, axis=-1)


def target_loss(student, teacher, temperature):
    """The loss of one `DistillTarget` pair (the student's and the teacher's for the same output)."""
    if student.kind not in KINDS or student.kind != teacher.kind:
        raise ValueError(f"distillation target kinds {student.kind!r} / {teacher.kind!r}; expected one of {KINDS}")
    s, t = tf.cast(student.logits, tf.float32), tf.stop_gradient(tf.cast(teacher.logits, tf.float32))
    if student.kind == "mse":
        per_row = tf.reduce_mean(tf.square(s - t), axis=-1) if s.shape.rank > 1 else tf.square(s - t)
        return _weighted_mean(per_row, student.row_weights)
    if student.kind == "softmax":
        per_row = _softmax_kl(s, t, temperature, student.class_mask)
    else:
        per_row = _sigmoid_kl(s, t, temperature)
    return temperature ** 2 * _weighted_mean(per_row, student.row_weights)


def distillation_loss(student_targets, teacher_targets, temperature):
    """Mean over the targets of `target_loss` (QA's start and end count once each)."""
    if len(student_targets) != len(teacher_targets) or not student_targets:
        raise ValueError(f"{len(student_targets)} student targets for {len(teacher_targets)} teacher targets")
    losses = [target_loss(s, t, temperature) for s, t in zip(student_targets, teacher_targets)]
    return tf.add_n(losses) / float(len(losses))


def hidden_state_loss(student_outputs, teacher_outputs, layer_map):
    """TinyBERT-style transfer: mean squared error between student layer i's output and teacher layer
    `layer_map[i]`'s, over real tokens (the input mask), averaged over the mapped layers and the encoder calls.

    `student_outputs` / `teacher_outputs`: the captured encoder outputs of one forward pass each (lists of dicts with
    `encoder_outputs` and `input_mask`; a windowed or multiple-choice model encodes once per call)."""
    if len(student_outputs) != len(teacher_outputs) or not student_outputs:
        raise ValueError(f"{len(student_outputs)} student encoder calls for {len(teacher_outputs)} teacher calls")
    losses = []
    for s_call, t_call in zip(student_outputs, teacher_outputs):
        mask = tf.cast(s_call["input_mask"], tf.float32)[..., tf.newaxis]
        for i, j in enumerate(layer_map):
            s = tf.cast(s_call["encoder_outputs"][i], tf.float32)
            t = tf.stop_gradient(tf.cast(t_call["encoder_outputs"][j], tf.float32))
            squared = tf.reduce_sum(tf.square(s - t) * mask)
            losses.append(squared / tf.maximum(tf.reduce_sum(mask) * tf.cast(tf.shape(s)[-1], tf.float32), 1.0))
    return tf.add_n(losses) / float(len(losses))
