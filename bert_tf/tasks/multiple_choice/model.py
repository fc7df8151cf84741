"""`BertMultipleChoice`: one score per option, softmax over the options (SWAG / ARC-style multiple choice).

Each of an item's N options is packed with its context as one BERT pair, ``[CLS] context [SEP] question option
[SEP]`` (the question, when there is one, goes before every option, as SWAG's ``sent2`` + ending); an item with
an empty context packs ``[CLS] question [SEP] option [SEP]`` instead. Google's ``_truncate_seq_pair`` shortens
the longer segment first. The encoder reads the B x N pairs as one batch; the head is dropout on
``pooled_output`` and a dense layer to one score (Google's fine-tuning head, ``initializer_range``), and the N
scores of an item are its logits ``[B, N]``: the loss is softmax cross-entropy over the options.

Inputs: the dict of int32 ``[B, N, T]`` tensors ``input_word_ids``, ``input_mask``, ``input_type_ids`` that
`pack_choices(context, question, options)` makes from strings in the graph. `choose(context, question, options)`
maps raw text to the outputs the serving export returns (`outputs_from_logits`): an option that is empty or
only whitespace (padding of a shorter option list) is no choice: its probability is 0; an item with no such
option left gets ``choice`` -1 and probabilities all 0.

>>> import numpy as np
>>> import bert_tf
>>> from bert_tf.tasks.multiple_choice.model import BertMultipleChoice
>>> enc = bert_tf.BertEncoder(bert_tf.BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1,
...                                              num_attention_heads=2, intermediate_size=32))
>>> ids = {k: np.ones([2, 4, 8], "int32") for k in ("input_word_ids", "input_mask", "input_type_ids")}
>>> tuple(BertMultipleChoice(enc)(ids).shape)
(2, 4)
"""

import keras
import tensorflow as tf

from bert_tf.model.task_model import BertTaskModel
from bert_tf.tasks.multiple_choice import export as export_lib
from bert_tf.tasks.multiple_choice import litert
from bert_tf.text.packer import INPUT_KEYS


def option_is_given(options):
    """bool [B, N]: the options that are not empty or only whitespace (the others are padding)."""
    return tf.strings.length(tf.strings.strip(options)) > 0


@keras.saving.register_keras_serializable(package="bert_tf")
class BertMultipleChoice(BertTaskModel):
    """BERT encoder + dropout + a one-unit dense head on ``pooled_output``, scored per option.

    Args:
      encoder: a :class:`bert_tf.BertEncoder`.
      preprocessor: a :class:`bert_tf.BertPreprocessor` (needed for `pack_choices`, `choose` and the export).
      num_choices: the options per item in the training data (recorded; the model itself takes any N).
      dropout_rate, initializer_range: of the head (default: the encoder's).
    """

    task_kind = "multiple_choice"
    has_litert_export = True

    def __init__(self, encoder, preprocessor=None, num_choices=None, dropout_rate=None, initializer_range=None,
                 **kwargs):
        super().__init__(encoder, preprocessor, head_units=1, dropout_rate=dropout_rate,
                         initializer_range=initializer_range, **kwargs)
        self.num_choices = None if num_choices is None else int(num_choices)

    # ------------------------------------------------------------------ text
    def pack_choices(self, context, question, options, preprocessor=None):
        """Strings -> the input dict of int32 ``[B, N, T]``: `context` [B], `question` [B] (may be ""), `options`
        [B, N]. `preprocessor` (default the model's) sets the padding."""
        pre = preprocessor or self.preprocessor
        if pre is None:
            raise ValueError("BertMultipleChoice got text but has no preprocessor; pass preprocessor=")
        context, question = tf.convert_to_tensor(context, tf.string), tf.convert_to_tensor(question, tf.string)
        options = tf.convert_to_tensor(options, tf.string)
        shape = tf.shape(options)
        num_options = shape[1]
        no_context = tf.strings.length(tf.strings.strip(context)) == 0
        first = tf.where(no_context, question, context)
        second_prefix = tf.where(no_context, tf.zeros_like(question), question)
        first = tf.repeat(first, num_options)
        second = tf.strings.strip(tf.strings.join([tf.repeat(second_prefix, num_options),
                                                   tf.reshape(options, [-1])], separator=" "))
        features = pre([first, second])
        width = tf.shape(features["input_word_ids"])[1]
        return {k: tf.reshape(v, [shape[0], num_options, width]) for k, v in features.items()}

    # ------------------------------------------------------------------ call
    def call(self, inputs, training=None):
        missing = [k for k in INPUT_KEYS if k not in inputs]
        if missing:
            raise ValueError(f"BertMultipleChoice takes the dict of [B, N, T] {list(INPUT_KEYS)}; lacks {missing}")
        ids = inputs["input_word_ids"]
        shape = keras.ops.shape(ids)
        flat = {k: keras.ops.reshape(inputs[k], (-1, shape[2])) for k in INPUT_KEYS}
        pooled = self.encode(flat, training=training)["pooled_output"]
        scores = keras.ops.cast(self.head(self.dropout(pooled, training=training)), "float32")
        return keras.ops.reshape(scores, (shape[0], shape[1]))

    # --------------------------------------------------------------- outputs
    @staticmethod
    def outputs_from_logits(logits, given=None):
        """Logits [B, N] (and `given`, bool [B, N]: the options that are real) -> ``choice`` [B] int64 (-1 when
        no option is given) and ``probabilities`` [B, N] (softmax over the given options, 0 elsewhere)."""
        logits = tf.cast(logits, tf.float32)
        if given is None:
            given = tf.ones_like(logits, tf.bool)
        # Blank options sit 1 below the item's lowest logit rather than at float32's minimum: the same softmax and
        # argmax over the given options, and a range a full-int8 LiteRT export can quantize (with the minimum in
        # the tensor, every logit rounded to one value and the choice was always option 0).
        masked = tf.where(given, logits, tf.reduce_min(logits, axis=-1, keepdims=True) - 1.0)
        weights = tf.exp(masked - tf.reduce_max(masked, axis=-1, keepdims=True)) * tf.cast(given, tf.float32)
        total = tf.reduce_sum(weights, axis=-1, keepdims=True)
        probabilities = weights / tf.maximum(total, 1e-30)  # 0 / 1e-30 = 0 for an item with no option given
        any_given = tf.reduce_any(given, axis=-1)
        choice = tf.where(any_given, tf.argmax(masked, axis=-1), tf.constant(-1, tf.int64))
        return {"choice": choice, "probabilities": probabilities}

    def choose(self, context, question, options, preprocessor=None):
        """Raw text -> {"choice", "probabilities"} (see `outputs_from_logits`)."""
        options = tf.convert_to_tensor(options, tf.string)
        logits = self(self.pack_choices(context, question, options, preprocessor), training=False)
        return self.outputs_from_logits(logits, option_is_given(options))

    # --------------------------------------------------------------- exports
    def export(self, export_base, version=None, task=None, overwrite=False, **options):
        """The serving SavedModel (`bert_tf.tasks.multiple_choice.export`; option: `pad_to_multiple_of`)."""
        return export_lib.export_multiple_choice(self, export_base, version=version, task=task,
                                                 overwrite=overwrite, **options)

    def export_litert(self, export_dir, precision="int8", representative_texts=None, task=None):
        """The .tflite (`bert_tf.tasks.multiple_choice.litert`): context, question, options [B, N] in, the choice
        out; `representative_texts` are real (context, question, options) items."""
        return litert.export_litert(self, export_dir, precision=precision, representative_texts=representative_texts,
                                    task=task)

    def get_config(self):
        config = super().get_config()
        config.update({"num_choices": self.num_choices})
        return config
