"""The building blocks of `BertEncoder`: embeddings, a post-LayerNorm transformer
block with fused QKV attention, the pooler, and the attention-mask bias.

Written directly in TensorFlow ops (the project runs Keras 3 on the TensorFlow
backend) so that the graph stays lean on CPU:

* dense layers are 2-D ``MatMul + BiasAdd (+ Gelu)`` on ``[B*T, H]``, which
  TensorFlow's oneDNN remapper fuses into one kernel;
* query, key and value come from one ``[H, 3H]`` matmul, with the
  ``1/sqrt(head_size)`` scale folded into the query weights;
* the padding mask becomes an additive bias ``[B, 1, 1, T]`` once per batch
  (`AttentionMaskBias`) and is shared by all layers;
* under mixed precision (``mixed_float16``/``mixed_bfloat16``) variables stay
  float32, matmuls run in the compute dtype, and softmax and LayerNorm run in
  float32.

These layers keep ``autocast=False`` and cast variables themselves, so that
LayerNorm parameters are used in float32.
"""

import math

import keras
import tensorflow as tf

from bert_tf.model.config import ACTIVATIONS

# Added to attention scores at padded key positions (float32). exp() of it is 0.
MASK_BIAS = -1e9

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def activation_fn(name):
    """The activation function for a `BertConfig.hidden_act` name."""
    if name == "gelu":
        return lambda x: tf.nn.gelu(x, approximate=False)
    if name == "gelu_tanh":
        return lambda x: tf.nn.gelu(x, approximate=True)
    if name == "relu":
        return tf.nn.relu
    if name in ("silu", "swish"):
        return tf.nn.silu
    if name == "tanh":
        return tf.math.tanh
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


def layer_norm(x, gamma, beta, eps):
    """LayerNorm over the last axis, computed in float32; returns float32."""
    x = tf.cast(x, tf.float32)
    # Explicit centring (measured faster on CPU than tf.nn.moments' squared_difference).
    centred = x - tf.reduce_mean(x, axis=-1, keepdims=True)
    var = tf.reduce_mean(tf.square(centred), axis=-1, keepdims=True)
    return centred * (tf.math.rsqrt(var + eps) * gamma) + beta


def _init(stddev):
    return keras.initializers.TruncatedNormal(stddev=stddev)


class BertEmbeddings(keras.layers.Layer):
    """Word + position + token-type embeddings, LayerNorm, dropout.

    Call with ``(word_ids, type_ids)`` int32 ``[B, T]`` (any ``T <=
    max_position_embeddings``); returns ``[B, T, H]`` in the compute dtype.

    Example:

    >>> import numpy as np
    >>> from bert_tf.model.layers import BertEmbeddings
    >>> emb = BertEmbeddings(vocab_size=10, hidden_size=4, max_position_embeddings=8)
    >>> emb(np.array([[1, 2, 3]]), np.array([[0, 0, 1]])).shape
    TensorShape([1, 3, 4])
    """

    def __init__(self, vocab_size, hidden_size, max_position_embeddings, type_vocab_size=2,
                 initializer_range=0.02, layer_norm_eps=1e-12, dropout_rate=0.0, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.hidden_size = int(hidden_size)
        self.max_position_embeddings = int(max_position_embeddings)
        self.type_vocab_size = int(type_vocab_size)
        self.initializer_range = float(initializer_range)
        self.layer_norm_eps = float(layer_norm_eps)
        self.dropout_rate = float(dropout_rate)
        self.dropout = keras.layers.Dropout(self.dropout_rate, dtype=self.dtype_policy)
        self.build()

    def build(self, input_shape=None):
        if self.built:
            return
        init = _init(self.initializer_range)
        h = self.hidden_size
        self.word_embeddings = self.add_weight(
            name="word_embeddings", shape=(self.vocab_size, h), initializer=init, autocast=False)
        self.position_embeddings = self.add_weight(
            name="position_embeddings", shape=(self.max_position_embeddings, h), initializer=init, autocast=False)
        self.token_type_embeddings = self.add_weight(
            name="token_type_embeddings", shape=(self.type_vocab_size, h), initializer=init, autocast=False)
        self.gamma = self.add_weight(name="layer_norm_gamma", shape=(h,), initializer="ones", autocast=False)
        self.beta = self.add_weight(name="layer_norm_beta", shape=(h,), initializer="zeros", autocast=False)
        self.built = True

    def call(self, word_ids, type_ids, training=None):
        word_ids = tf.cast(word_ids, tf.int32)
        type_ids = tf.cast(type_ids, tf.int32)
        seq_len = tf.shape(word_ids)[1]
        x = tf.gather(self.word_embeddings, word_ids)
        x += tf.gather(self.token_type_embeddings, type_ids)
        x += self.position_embeddings[:seq_len]
        x = layer_norm(x, self.gamma, self.beta, self.layer_norm_eps)
        x = tf.cast(x, self.compute_dtype)
        return self.dropout(x, training=training)

    def compute_output_spec(self, word_ids, type_ids, training=None):
        return keras.KerasTensor(tuple(word_ids.shape) + (self.hidden_size,), dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                      max_position_embeddings=self.max_position_embeddings,
                      type_vocab_size=self.type_vocab_size, initializer_range=self.initializer_range,
                      layer_norm_eps=self.layer_norm_eps, dropout_rate=self.dropout_rate)
        return config


class AttentionMaskBias(keras.layers.Layer):
    """``input_mask`` int ``[B, T]`` (1 = real token) -> float32 bias ``[B, 1, 1, T]``
    that is 0 at real keys and `MASK_BIAS` at padding; added to attention scores.

    Example:

    >>> import numpy as np
    >>> from bert_tf.model.layers import AttentionMaskBias
    >>> AttentionMaskBias()(np.array([[1, 0]])).numpy().tolist()
    [[[[0.0, -1000000000.0]]]]
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.built = True

    def call(self, mask):
        mask = tf.cast(mask, tf.float32)
        return ((1.0 - mask) * MASK_BIAS)[:, None, None, :]

    def compute_output_spec(self, mask):
        return keras.KerasTensor((mask.shape[0], 1, 1, mask.shape[1]), dtype="float32")


class TransformerBlock(keras.layers.Layer):
    """One post-LayerNorm BERT layer: self-attention -> add & LayerNorm -> FFN -> add & LayerNorm.

    Call with ``(x [B, T, H], attention_bias [B, 1, 1, T] float32)``; returns ``[B, T, H]``. With
    ``query_positions [B, P]`` (int), returns ``[B, P, H]``: the same rows as gathering the full output at
    those positions, but only the keys and values are computed for all T tokens; the queries, attention
    output, feed-forward and LayerNorms run on the P rows (a last layer whose other rows no loss reads).

    Variables (float32): ``qkv_kernel [H, 3H]`` / ``qkv_bias [3H]`` (query, key,
    value side by side), ``attention_output_kernel/bias``, ``attention_norm_gamma/beta``,
    ``intermediate_kernel/bias``, ``output_kernel/bias``, ``output_norm_gamma/beta``.

    Example:

    >>> import numpy as np
    >>> from bert_tf.model.layers import TransformerBlock, AttentionMaskBias
    >>> block = TransformerBlock(hidden_size=8, num_heads=2, intermediate_size=16)
    >>> x = np.random.rand(2, 5, 8).astype("float32")
    >>> block(x, AttentionMaskBias()(np.ones((2, 5)))).shape
    TensorShape([2, 5, 8])
    """

    def __init__(self, hidden_size, num_heads, intermediate_size, activation="gelu",
                 hidden_dropout=0.0, attention_dropout=0.0, initializer_range=0.02,
                 layer_norm_eps=1e-12, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.hidden_size = int(hidden_size)
        self.num_heads = int(num_heads)
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_heads {num_heads}")
        self.head_size = self.hidden_size // self.num_heads
        self.intermediate_size = int(intermediate_size)
        self.activation = activation
        self._act = activation_fn(activation)
        self.hidden_dropout = float(hidden_dropout)
        self.attention_dropout = float(attention_dropout)
        self.initializer_range = float(initializer_range)
        self.layer_norm_eps = float(layer_norm_eps)
        self.attention_probs_dropout = keras.layers.Dropout(self.attention_dropout, dtype=self.dtype_policy)
        self.attention_output_dropout = keras.layers.Dropout(self.hidden_dropout, dtype=self.dtype_policy)
        self.output_dropout = keras.layers.Dropout(self.hidden_dropout, dtype=self.dtype_policy)
        self.build()

    def build(self, input_shape=None, bias_shape=None):
        if self.built:
            return
        h, i = self.hidden_size, self.intermediate_size
        init = _init(self.initializer_range)

        def w(name, shape, initializer):
            return self.add_weight(name=name, shape=shape, initializer=initializer, autocast=False)

        self.qkv_kernel = w("qkv_kernel", (h, 3 * h), init)
        self.qkv_bias = w("qkv_bias", (3 * h,), "zeros")
        self.attention_output_kernel = w("attention_output_kernel", (h, h), init)
        self.attention_output_bias = w("attention_output_bias", (h,), "zeros")
        self.attention_norm_gamma = w("attention_norm_gamma", (h,), "ones")
        self.attention_norm_beta = w("attention_norm_beta", (h,), "zeros")
        self.intermediate_kernel = w("intermediate_kernel", (h, i), init)
        self.intermediate_bias = w("intermediate_bias", (i,), "zeros")
        self.output_kernel = w("output_kernel", (i, h), init)
        self.output_bias = w("output_bias", (h,), "zeros")
        self.output_norm_gamma = w("output_norm_gamma", (h,), "ones")
        self.output_norm_beta = w("output_norm_beta", (h,), "zeros")
        self.built = True

    def _dense(self, x, kernel, bias):
        dt = self.compute_dtype
        return tf.nn.bias_add(tf.matmul(x, tf.cast(kernel, dt)), tf.cast(bias, dt))

    def call(self, x, attention_bias, training=None, query_positions=None):
        dt = self.compute_dtype
        h = self.hidden_size
        x = tf.cast(x, dt)
        shape = tf.shape(x)
        b, t = shape[0], shape[1]
        x2 = tf.reshape(x, [-1, h])  # [B*T, H]
        # 1/sqrt(d) folded into the query columns (in float32, before the cast to the compute dtype).
        q_scale = 1.0 / math.sqrt(self.head_size)
        kernel, bias = self.qkv_kernel, self.qkv_bias
        if query_positions is None:
            scale = tf.concat([tf.fill([h], q_scale), tf.ones([2 * h])], axis=0)
            qkv = self._dense(x2, kernel * scale, bias * scale)  # fused Q/K/V projection
            q, k, v = tf.unstack(self._heads(qkv, b, t, 3))  # one stack as gradient, not 3 scattered slices
            rows, residual = t, x2
        else:  # queries (and all that follows) at the given positions only; keys and values at all T
            rows = tf.shape(query_positions)[1]
            residual = tf.reshape(tf.gather(x, tf.cast(query_positions, tf.int32), batch_dims=1), [-1, h])
            q = self._heads(self._dense(residual, kernel[:, :h] * q_scale, bias[:h] * q_scale), b, rows, 1)[0]
            k, v = tf.unstack(self._heads(self._dense(x2, kernel[:, h:], bias[h:]), b, t, 2))
        scores = tf.matmul(q, k, transpose_b=True)  # [B, N, rows, T]
        scores = tf.cast(scores, tf.float32) + tf.cast(attention_bias, tf.float32)
        probs = tf.cast(tf.nn.softmax(scores, axis=-1), dt)
        probs = self.attention_probs_dropout(probs, training=training)
        ctx = tf.matmul(probs, v)  # [B, N, rows, D]
        ctx = tf.reshape(tf.transpose(ctx, [0, 2, 1, 3]), [-1, h])

        attn = self._dense(ctx, self.attention_output_kernel, self.attention_output_bias)
        attn = self.attention_output_dropout(attn, training=training)
        x2 = tf.cast(layer_norm(residual + attn, self.attention_norm_gamma, self.attention_norm_beta,
                                self.layer_norm_eps), dt)

        inter = self._act(self._dense(x2, self.intermediate_kernel, self.intermediate_bias))
        out = self._dense(inter, self.output_kernel, self.output_bias)
        out = self.output_dropout(out, training=training)
        x2 = tf.cast(layer_norm(x2 + out, self.output_norm_gamma, self.output_norm_beta,
                                self.layer_norm_eps), dt)
        return tf.reshape(x2, [b, rows, h])

    def _heads(self, projected, b, t, parts):
        """``[B*T, parts*H]`` -> ``[parts, B, N, T, D]``."""
        n, d = self.num_heads, self.head_size
        return tf.transpose(tf.reshape(projected, [b, t, parts, n, d]), [2, 0, 3, 1, 4])

    def compute_output_spec(self, x, attention_bias, training=None, query_positions=None):
        rows = x.shape[1] if query_positions is None else query_positions.shape[1]
        return keras.KerasTensor((x.shape[0], rows, x.shape[2]), dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_size=self.hidden_size, num_heads=self.num_heads,
                      intermediate_size=self.intermediate_size, activation=self.activation,
                      hidden_dropout=self.hidden_dropout, attention_dropout=self.attention_dropout,
                      initializer_range=self.initializer_range, layer_norm_eps=self.layer_norm_eps)
        return config


class BertPooler(keras.layers.Layer):
    """``tanh(dense(x[:, 0]))``: the pooled ``[CLS]`` representation ``[B, H]``.

    Example:

    >>> import numpy as np
    >>> from bert_tf.model.layers import BertPooler
    >>> BertPooler(hidden_size=4)(np.zeros((2, 3, 4), "float32")).shape
    TensorShape([2, 4])
    """

    def __init__(self, hidden_size, initializer_range=0.02, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.hidden_size = int(hidden_size)
        self.initializer_range = float(initializer_range)
        self.build()

    def build(self, input_shape=None):
        if self.built:
            return
        h = self.hidden_size
        self.kernel = self.add_weight(name="kernel", shape=(h, h), initializer=_init(self.initializer_range),
                                      autocast=False)
        self.bias = self.add_weight(name="bias", shape=(h,), initializer="zeros", autocast=False)
        self.built = True

    def call(self, x):
        dt = self.compute_dtype
        first = tf.cast(x[:, 0, :], dt)
        return tf.math.tanh(tf.nn.bias_add(tf.matmul(first, tf.cast(self.kernel, dt)),
                                           tf.cast(self.bias, dt)))

    def compute_output_spec(self, x):
        return keras.KerasTensor((x.shape[0], self.hidden_size), dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_size=self.hidden_size, initializer_range=self.initializer_range)
        return config


class CastToFloat32(keras.layers.Layer):
    """Casts to float32 (the model's output boundary under mixed precision)."""

    def __init__(self, **kwargs):
        kwargs["dtype"] = "float32"
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.built = True

    def call(self, x):
        return tf.cast(x, tf.float32)

    def compute_output_spec(self, x):
        return keras.KerasTensor(tuple(x.shape), dtype="float32")
