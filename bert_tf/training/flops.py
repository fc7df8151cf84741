"""Model FLOPs utilisation (MFU): the FLOPs a BERT training step needs, over what this machine's matrix unit
can do, measured.

`bert_training_flops_per_example` counts the matrix multiplications of one example's forward pass (2 FLOPs per
multiply-add: the Q/K/V/output projections, attention scores and context, the feed-forward layers, the pooler,
the MLM head on the masked positions only, and the NSP head; the last layer's queries, attention output and
feed-forward on the masked positions (and [CLS]) only, as `BertPretrainer` runs it) and triples it for the
backward pass (the usual convention, as in the PaLM paper's MFU); embedding look-ups, softmax, GELU and LayerNorm
are left out. So MFU is a lower bound on how busy the matrix unit is, comparable between implementations of the
same model.

`measure_peak_flops` times a large square matmul on the device in a `tf.function` and returns the best FLOP/s:
this machine's measured peak, not a datasheet number (which on CPUs depends on clocks and vector units).

>>> from bert_tf import BertConfig
>>> cfg = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
...                  intermediate_size=3072)
>>> round(bert_training_flops_per_example(cfg, 128, 20, whole_last_layer=True) / 1e9, 1)  # BERT-base, seq 128
69.9
>>> round(bert_training_flops_per_example(cfg, 128, 20) / 1e9, 1)   # its last layer on 20 + 1 rows
66.0
"""

import time

import tensorflow as tf


def _layer_macs(seq_length, rows, h, i):
    """Multiply-adds of one encoder layer whose queries run on `rows` of its `seq_length` tokens: k, v on all;
    q, attention output, scores + context and the feed-forward on `rows`."""
    return 2 * seq_length * h * h + 2 * rows * h * h + 2 * rows * seq_length * h + 2 * rows * h * i


def bert_encoder_forward_flops(config, seq_length):
    """FLOPs of the encoder's layers over one sequence of `seq_length` tokens, forward only (matmuls, as above;
    no pooler): what inference (embeddings, classification) needs at least, without padding."""
    h, i = config.hidden_size, config.intermediate_size
    return 2 * config.num_hidden_layers * _layer_macs(seq_length, seq_length, h, i)


def bert_training_flops_per_example(config, seq_length, num_predictions, next_sentence=True,
                                    whole_last_layer=False):
    """FLOPs of one training example (forward + backward) of `BertPretrainer` (see the module docstring),
    whose last layer runs on the masked positions (and [CLS] with NSP) only; `whole_last_layer=True` counts
    it over all `seq_length` tokens (Google's run_pretraining, keras-hub's BertMaskedLM)."""
    h, v, i = config.hidden_size, config.vocab_size, config.intermediate_size
    rows = seq_length if whole_last_layer else num_predictions + int(bool(next_sentence))
    forward_macs = (config.num_hidden_layers - 1) * _layer_macs(seq_length, seq_length, h, i)
    forward_macs += _layer_macs(seq_length, rows, h, i) + h * h  # + pooler
    forward_macs += num_predictions * (h * h + h * v)  # MLM transform + tied output projection
    if next_sentence:
        forward_macs += 2 * h
    return 3 * 2 * forward_macs


def measure_peak_flops(dtype="float32", size=None, device=None, seconds=1.0):
    """Best FLOP/s of an `n x n` matmul (n = 2048 on CPU, 8192 on accelerators) over about `seconds`."""
    device = device or ("/GPU:0" if tf.config.list_logical_devices("GPU") else "/CPU:0")
    n = size or (2048 if "CPU" in device.upper() else 8192)
    with tf.device(device):
        a = tf.random.normal([n, n], dtype=tf.float32)
        a = tf.cast(a, dtype)
        b = tf.identity(a)

        @tf.function
        def matmul(x, y):
            return tf.reduce_sum(tf.cast(tf.matmul(x, y)[:1, :1], tf.float32))

        matmul(a, b).numpy()  # trace and warm up
        best, start = float("inf"), time.perf_counter()
        while time.perf_counter() - start < seconds or best == float("inf"):
            t = time.perf_counter()
            matmul(a, b).numpy()
            best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best
