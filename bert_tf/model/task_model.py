"""`BertTaskModel`: what every task model shares — an encoder, its preprocessor, a dense head.

A task model (`BertClassifier`, `BertTokenTagger`, `BertQuestionAnswerer`) holds
the encoder, the preprocessor (tokenizer + packer with the vocabulary inside)
and a head initialised like Google's (truncated normal, `initializer_range`),
and serialises all of it in its Keras config, so `model.save("m.keras")` and
`keras.saving.load_model` round-trip it. Subclasses add their own head inputs,
settings (`get_config`) and outputs, and know their exports: `export(export_base)` writes the serving SavedModel
(raw text in), `export_litert(export_dir, ...)` the .tflite where the task has one (`has_litert_export`). Every
program exports through these two methods.

Example (a subclass needs only its call):

>>> import numpy as np
>>> import bert_tf
>>> from bert_tf.model.task_model import BertTaskModel
>>> class PooledScore(BertTaskModel):
...     def call(self, inputs, training=None):
...         return self.head(self.encoder(inputs, training=training)["pooled_output"])
>>> enc = bert_tf.BertEncoder(bert_tf.BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
...                                              num_attention_heads=2, intermediate_size=16))
>>> model = PooledScore(enc, head_units=1)
>>> model.build(); model.dropout_rate, tuple(model.head.kernel.shape)
(0.1, (8, 1))
"""

import contextlib

import keras
import tensorflow as tf

from bert_tf.model.encoder import BertEncoder
from bert_tf.text.packer import INPUT_KEYS
from bert_tf.text.preprocessor import BertPreprocessor

# with_compute_dtype's dtypes -> the Keras policy the encoder computes under (weights stay float32)
SERVING_DTYPES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}

# id(task model) -> the list its `encode` calls append their encoder outputs to (see `captured_encoder_outputs`).
_CAPTURES = {}


@contextlib.contextmanager
def captured_encoder_outputs(model):
    """Collects the encoder outputs (`sequence_output`, `encoder_outputs`, ...) of every `model.encode` call made
    inside the block, in call order: a distillation step reads the hidden states of the same forward pass that gave
    the logits instead of running the encoder twice. Kept outside the Keras object so nothing is tracked or saved."""
    captured = []
    _CAPTURES[id(model)] = captured
    try:
        yield captured
    finally:
        del _CAPTURES[id(model)]


class BertTaskModel(keras.Model):
    """Base of the task models: `encoder`, `preprocessor`, `dropout`, `head` (see the module docstring).

    Subclasses set `task_kind` (the task name recorded in exports when none is given) and `has_litert_export`.

    Args:
      encoder: a :class:`bert_tf.BertEncoder` (any Keras layer taking the input
        dict and returning `sequence_output`/`pooled_output` works).
      preprocessor: a :class:`bert_tf.BertPreprocessor`, or None for a model fed token ids only.
      head_units: outputs of the dense head.
      dropout_rate: dropout before the head (None: the encoder's `hidden_dropout_prob`, else 0.1).
      initializer_range: stddev of the head's truncated-normal kernel (None: the encoder's, else 0.02).
      head_name: the head layer's name (kept stable: checkpoints name it).
    """

    task_kind = None
    has_litert_export = False

    def __init__(self, encoder, preprocessor=None, head_units=1, dropout_rate=None, initializer_range=None,
                 head_name="logits", **kwargs):
        super().__init__(**kwargs)
        # Raw strings pass through Keras untouched (no float conversion).
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        if preprocessor is not None and not isinstance(preprocessor, BertPreprocessor):
            raise TypeError(f"preprocessor must be a bert_tf.BertPreprocessor, got {type(preprocessor).__name__}")
        encoder_config = encoder.config if isinstance(encoder, BertEncoder) else None
        if dropout_rate is None:
            dropout_rate = encoder_config.hidden_dropout_prob if encoder_config else 0.1
        if initializer_range is None:
            initializer_range = encoder_config.initializer_range if encoder_config else 0.02
        self.encoder = encoder
        self.preprocessor = preprocessor
        self.dropout_rate = float(dropout_rate)
        self.initializer_range = float(initializer_range)
        self.dropout = keras.layers.Dropout(self.dropout_rate, name="dropout")
        self.head = keras.layers.Dense(
            int(head_units), kernel_initializer=keras.initializers.TruncatedNormal(stddev=self.initializer_range),
            name=head_name)

    def encode(self, inputs, training=None):
        """The encoder on the input dict (checked for the three BERT inputs)."""
        missing = [k for k in INPUT_KEYS if k not in inputs]
        if missing:
            raise ValueError(f"{type(self).__name__} inputs lack {missing}; got {sorted(inputs)}")
        outputs = self.encoder({k: inputs[k] for k in INPUT_KEYS}, training=training)
        if id(self) in _CAPTURES:
            _CAPTURES[id(self)].append({**outputs, "input_mask": inputs["input_mask"]})
        return outputs

    def build(self, input_shape=None):
        """Builds the encoder and the head, so weights can be restored before the first real call."""
        if self.built:
            return
        dummy = {k: tf.zeros([1, 2], tf.int32) for k in INPUT_KEYS}
        hidden = int(self.encoder(dummy, training=False)["pooled_output"].shape[-1])
        if not self.head.built:
            self.head.build((None, hidden))
        self.built = True

    def with_compute_dtype(self, dtype):
        """A copy of this model whose encoder computes in `dtype`, with the same weights and settings.

        For a serving export at a lower precision than training: "bfloat16" (or
        "float16", for GPUs) runs the encoder under Keras' mixed policy — matmuls in that
        dtype; variables, LayerNorm, softmax and the encoder's outputs stay float32 — and
        "float32" undoes it. bfloat16 matmuls run about twice as fast on CPUs with
        AVX512-BF16 or AMX, and natively on TPUs and recent GPUs; logits move by
        bfloat16's rounding (8 significant bits), which changes few argmaxes.

        >>> import bert_tf
        >>> enc = bert_tf.BertEncoder(bert_tf.BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
        ...                                              num_attention_heads=2, intermediate_size=16))
        >>> model = bert_tf.BertClassifier(enc, num_classes=2); model.build()
        >>> fast = model.with_compute_dtype("bfloat16")
        >>> fast.encoder.transformer_layers[0].compute_dtype, fast.head.kernel.dtype
        ('bfloat16', 'float32')
        """
        if not isinstance(self.encoder, BertEncoder):
            raise TypeError(f"with_compute_dtype needs a BertEncoder, got {type(self.encoder).__name__}")
        if dtype not in SERVING_DTYPES and dtype not in SERVING_DTYPES.values():
            raise ValueError(f"dtype {dtype!r}: one of float32, bfloat16, float16 (the weights stay float32)")
        policy = keras.dtype_policies.get(SERVING_DTYPES.get(dtype, dtype))
        config = self.get_config()
        encoder = config["encoder"]
        config["encoder"] = {**encoder, "config": {**encoder["config"], "dtype": policy.name}}
        copy = type(self).from_config(config)
        copy.build()
        copy.set_weights(self.get_weights())
        return copy

    # ---------------------------------------------------------------- exports
    def export(self, export_base, version=None, task=None, overwrite=False, **options):
        """Writes the serving SavedModel ``<export_base>/<version>/`` (raw text in); returns its path."""
        raise NotImplementedError(f"{type(self).__name__} has no serving export")

    def export_litert(self, export_dir, precision="int8", representative_texts=None, task=None):
        """Writes ``<export_dir>/model.tflite`` + ``model.json`` (tokenizer inside); returns the .tflite path.
        `representative_texts`: real inputs of the task that calibrate full ``int8``."""
        raise ValueError(f"{type(self).__name__} has no LiteRT export (its SavedModel export serves it)")

    def get_config(self):
        config = super().get_config()
        config.update({
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "preprocessor": (keras.saving.serialize_keras_object(self.preprocessor)
                             if self.preprocessor is not None else None),
            "dropout_rate": self.dropout_rate,
            "initializer_range": self.initializer_range,
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        if config.get("preprocessor") is not None:
            config["preprocessor"] = keras.saving.deserialize_keras_object(config["preprocessor"])
        return cls(**config)
