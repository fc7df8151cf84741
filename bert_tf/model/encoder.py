"""`BertEncoder`: the BERT transformer encoder as a Keras 3 functional model."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bert_tf.model.config import BertConfig  # noqa: E402
from bert_tf.model.layers import AttentionMaskBias, BertEmbeddings, BertPooler, CastToFloat32, TransformerBlock  # noqa: E402

INPUT_NAMES = ("input_word_ids", "input_mask", "input_type_ids")


@keras.saving.register_keras_serializable(package="bert_tf")
class BertEncoder(keras.Model):
    """BERT encoder (post-LayerNorm transformer) built from a `BertConfig`.

    Inputs: a dict of int32 ``[B, T]`` tensors ``input_word_ids``, ``input_mask``
    (1 = real token, 0 = padding; padded keys are masked out of attention) and
    ``input_type_ids``; any ``T <= max_position_embeddings``.

    Outputs: a dict with ``sequence_output`` ``[B, T, H]`` (last layer),
    ``pooled_output`` ``[B, H]`` (``tanh(dense(sequence_output[:, 0]))``) and
    ``encoder_outputs`` (list of ``[B, T, H]``, one per layer). Outputs are
    float32 also under the ``mixed_float16``/``mixed_bfloat16`` policies.

    Dropout is active only with ``training=True``. Weights are initialised
    from a truncated normal with stddev ``config.initializer_range`` (biases 0,
    LayerNorm 1/0). ``embedding_table`` is the word-embedding variable
    ``[vocab_size, H]`` (for a tied MLM output layer). Works under
    ``tf.function(jit_compile=True)``.

    Load published weights with `bert_tf.from_pretrained`.

    Example:

    >>> import numpy as np
    >>> from bert_tf import BertConfig, BertEncoder
    >>> cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
    ...                  num_attention_heads=4, intermediate_size=64)
    >>> enc = BertEncoder(cfg)
    >>> ids = np.array([[2, 7, 9, 3, 0]], "int32")
    >>> out = enc({"input_word_ids": ids, "input_mask": (ids > 0).astype("int32"),
    ...            "input_type_ids": np.zeros_like(ids)})
    >>> out["sequence_output"].shape, out["pooled_output"].shape, len(out["encoder_outputs"])
    (TensorShape([1, 5, 32]), TensorShape([1, 32]), 2)
    >>> tuple(enc.embedding_table.shape)
    (100, 32)
    """

    def __init__(self, config, name="bert_encoder", dtype=None, **kwargs):
        if isinstance(config, dict):
            config = BertConfig.from_dict(config)
        if not isinstance(config, BertConfig):
            raise TypeError(f"config must be a BertConfig or dict, got {type(config).__name__}")
        policy = keras.dtype_policies.get(dtype) if dtype is not None else keras.config.dtype_policy()

        inputs = {n: keras.Input(shape=(None,), dtype="int32", name=n) for n in INPUT_NAMES}
        embeddings = BertEmbeddings(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            max_position_embeddings=config.max_position_embeddings,
            type_vocab_size=config.type_vocab_size,
            initializer_range=config.initializer_range,
            layer_norm_eps=config.layer_norm_eps,
            dropout_rate=config.hidden_dropout_prob,
            dtype=policy,
            name="embeddings",
        )
        mask_bias = AttentionMaskBias(name="attention_mask_bias")
        blocks = [
            TransformerBlock(
                hidden_size=config.hidden_size,
                num_heads=config.num_attention_heads,
                intermediate_size=config.intermediate_size,
                activation=config.hidden_act,
                hidden_dropout=config.hidden_dropout_prob,
                attention_dropout=config.attention_probs_dropout_prob,
                initializer_range=config.initializer_range,
                layer_norm_eps=config.layer_norm_eps,
                dtype=policy,
                name=f"layer_{i}",
            )
            for i in range(config.num_hidden_layers)
        ]
        pooler = BertPooler(config.hidden_size, config.initializer_range, dtype=policy, name="pooler")

        x = embeddings(inputs["input_word_ids"], inputs["input_type_ids"])
        bias = mask_bias(inputs["input_mask"])
        layer_outputs = []
        for block in blocks:
            x = block(x, bias)
            layer_outputs.append(x)
        pooled = pooler(x)
        to_f32 = [CastToFloat32(name=f"encoder_output_{i}") for i in range(len(layer_outputs))]
        encoder_outputs = [c(y) for c, y in zip(to_f32, layer_outputs)]
        outputs = {
            "sequence_output": encoder_outputs[-1],
            "pooled_output": CastToFloat32(name="pooled_output")(pooled),
            "encoder_outputs": encoder_outputs,
        }
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self.config = config
        # The layers' policy (a Functional model keeps none of its own); saved in the config.
        self.layers_dtype_policy = policy
        self.embeddings = embeddings
        self.attention_mask_bias = mask_bias
        self.transformer_layers = blocks
        self.pooler = pooler

    @property
    def embedding_table(self):
        """The word-embedding variable ``[vocab_size, hidden_size]``."""
        return self.embeddings.word_embeddings

    def last_layer_at(self, inputs, positions, training=False):
        """The last layer's output at ``positions`` ``[B, P]`` (int) only -> ``[B, P, H]`` float32.

        The rows of ``sequence_output`` gathered at ``positions``, but the last layer computes only its keys
        and values for all T tokens; its queries, attention output, feed-forward and LayerNorms run on the P
        rows (TF Model Garden's ``output_range`` for any positions). For MLM pretraining (P = the masked
        positions, ~15% of T) that saves ~(1 - P/T) of one layer of L, forward and backward.

        >>> import numpy as np
        >>> from bert_tf import BertConfig
        >>> enc = BertEncoder(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
        ...                              num_attention_heads=4, intermediate_size=64))
        >>> ids = np.array([[2, 7, 9, 3, 0]], "int32")
        >>> inputs = {"input_word_ids": ids, "input_mask": (ids > 0).astype("int32"),
        ...           "input_type_ids": np.zeros_like(ids)}
        >>> rows = enc.last_layer_at(inputs, np.array([[2, 0]]))
        >>> bool(np.allclose(rows, enc(inputs)["sequence_output"].numpy()[:, [2, 0]], atol=1e-5))
        True
        """
        x = self.embeddings(inputs["input_word_ids"], inputs["input_type_ids"], training=training)
        bias = self.attention_mask_bias(inputs["input_mask"])
        for block in self.transformer_layers[:-1]:
            x = block(x, bias, training=training)
        rows = self.transformer_layers[-1](x, bias, training=training, query_positions=positions)
        return tf.cast(rows, tf.float32)

    def get_config(self):
        return {"config": self.config.to_dict(), "name": self.name, "trainable": self.trainable,
                "dtype": self.layers_dtype_policy.name}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def mean_pool(sequence_output, input_mask):
    """Mean of ``sequence_output`` ``[B, T, H]`` over real tokens (``input_mask`` 1) -> ``[B, H]``.

    The sentence embedding of sentence-transformers models such as all-MiniLM-L6-v2
    (mask-weighted mean of the last layer; L2-normalise it for cosine similarity).

    >>> import numpy as np
    >>> seq = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]], "float32")
    >>> mean_pool(seq, np.array([[1, 1, 0]])).numpy().tolist()
    [[2.0, 3.0]]
    """
    seq = tf.convert_to_tensor(sequence_output)
    mask = tf.cast(tf.convert_to_tensor(input_mask), seq.dtype)[:, :, None]
    total = tf.reduce_sum(seq * mask, axis=1)
    count = tf.maximum(tf.reduce_sum(mask, axis=1), 1e-9)
    return total / count
