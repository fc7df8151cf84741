"""Embedding math shared by the model, its loss and its export."""

import tensorflow as tf


def l2_normalize(x):
    """Rows scaled to unit L2 norm as `torch.nn.functional.normalize` does (norm floored at 1e-12)."""
    return tf.math.l2_normalize(tf.cast(x, tf.float32), axis=-1, epsilon=1e-24)


def cosine_similarity(a, b):
    """Row-wise cosine similarity of two `[B, H]` tensors -> `[B]`."""
    return tf.reduce_sum(l2_normalize(a) * l2_normalize(b), axis=-1)


def cosine_matrix(a, b):
    """Cosine similarity of every row of `a` `[B, H]` with every row of `b` `[C, H]` -> `[B, C]`."""
    return tf.matmul(l2_normalize(a), l2_normalize(b), transpose_b=True)
