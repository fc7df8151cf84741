"""Losses whose TensorFlow defaults are slow for large class counts.

`sparse_softmax_cross_entropy` is `keras.losses.sparse_categorical_crossentropy(..., from_logits=True)` (TF's
fused `SparseSoftmaxCrossEntropyWithLogits`) computed from one softmax: over the MLM head's ``[B * P, 30522]``
logits it is half the time forward and backward on CPU (oneDNN's softmax is the fast kernel there), the same
values within float32 rounding.

>>> import numpy as np
>>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]], "float32")
>>> [round(float(x), 4) for x in sparse_softmax_cross_entropy(np.array([0, 2]), logits)]
[0.2413, 1.0986]
"""

import tensorflow as tf

# Smallest float32 normal: -log of it (87.3) caps a loss whose softmax probability underflows; its gradient
# (softmax - one-hot) is exact regardless.
_TINY = 1.1754944e-38


def sparse_softmax_cross_entropy(labels, logits):
    """Per-example ``-log softmax(logits)[label]``: int ``labels [...]``, ``logits [..., C]`` -> float32 ``[...]``."""
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int32)
    classes = tf.shape(logits)[-1]
    rows = tf.reshape(logits, [-1, classes])
    flat_labels = tf.reshape(labels, [-1])
    return tf.reshape(_softmax_nll(rows, flat_labels), tf.shape(labels))


@tf.custom_gradient
def _softmax_nll(rows, labels):
    probs = tf.nn.softmax(rows)
    nll = -tf.math.log(tf.maximum(tf.gather(probs, labels, batch_dims=1), _TINY))

    def grad(upstream):
        at_labels = tf.stack([tf.range(tf.shape(labels)[0]), labels], axis=1)
        return tf.tensor_scatter_nd_sub(probs * upstream[:, None], at_labels, upstream), None

    return nll, grad
