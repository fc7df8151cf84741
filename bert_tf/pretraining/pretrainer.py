"""BERT pretraining: masked-LM and next-sentence heads, Google's losses and metrics,
the input pipeline over Google-format records, and head weights under Google names.

* :class:`BertPretrainer` -- a Keras model: a `bert_tf.BertEncoder` plus
  - the MLM head: `dense(H->H) + activation + LayerNorm` on the sequence output
    gathered at `masked_lm_positions`, then logits = `x @ embedding_table^T + output_bias`
    (the output projection is tied to the encoder's word embeddings);
  - the NSP head: `pooled_output @ output_weights^T + output_bias` (2 classes,
    label 0 = "B follows A", 1 = "B is random").
* :func:`pretraining_loss` -- Google's losses: MLM = weighted mean of the
  per-position cross-entropy (`sum(w * nll) / (sum(w) + 1e-5)`), NSP = mean
  cross-entropy; total = MLM + NSP. Metrics: MLM accuracy (weighted), NSP
  accuracy, and the two losses.
* :func:`pretraining_dataset` -- `tf.data` over Google-format TFRecords
  (`bert_tf.pretraining.data.google_feature_spec`), optionally re-masked on
  the fly (`bert_tf.pretraining.masking.DynamicMasker`), or raw text with dynamic masking.
* Weights: :meth:`BertPretrainer.head_weights` returns the heads under Google's
  checkpoint names (`cls/predictions/transform/dense/kernel`, ...,
  `cls/seq_relationship/output_weights`), ready for
  `save_pretrained(..., extra_weights=...)` / `save_tf1_checkpoint`;
  :meth:`BertPretrainer.load_head_weights` loads them from
  `from_pretrained(path).extra_weights` (Google or Hugging Face names).

Example (tiny random encoder):

>>> import numpy as np
>>> from bert_tf import BertConfig, BertEncoder
>>> from bert_tf.pretraining.pretrainer import BertPretrainer, pretraining_loss
>>> cfg = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1,
...                  num_attention_heads=2, intermediate_size=32,
...                  max_position_embeddings=32, type_vocab_size=2)
>>> model = BertPretrainer(BertEncoder(cfg))
>>> x = {"input_word_ids": np.ones((2, 8), "int32"), "input_mask": np.ones((2, 8), "int32"),
...      "input_type_ids": np.zeros((2, 8), "int32"),
...      "masked_lm_positions": np.array([[1, 2], [3, 0]], "int32")}
>>> out = model(x)
>>> tuple(out["mlm_logits"].shape), tuple(out["nsp_logits"].shape)
((2, 2, 100), (2, 2))
>>> labels = {"masked_lm_ids": np.array([[5, 6], [7, 0]]),
...           "masked_lm_weights": np.array([[1., 1.], [1., 0.]], "float32"),
...           "next_sentence_labels": np.array([0, 1])}
>>> loss, metrics = pretraining_loss(labels, out)
>>> sorted(metrics)
['mlm_accuracy', 'mlm_loss', 'nsp_accuracy', 'nsp_loss']
>>> sorted(model.head_weights())[0]
'cls/predictions/output_bias'
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

from bert_tf.model.checkpoints import HF_HEAD_NAMES  # noqa: E402
from bert_tf.model.layers import activation_fn  # noqa: E402
from bert_tf.pretraining import data as pdata  # noqa: E402
from bert_tf.pretraining import masking  # noqa: E402
from bert_tf.training.losses import sparse_softmax_cross_entropy  # noqa: E402

MLM_PREFIX = "cls/predictions/"
NSP_PREFIX = "cls/seq_relationship/"
HEAD_NAMES = (
    "cls/predictions/transform/dense/kernel",
    "cls/predictions/transform/dense/bias",
    "cls/predictions/transform/LayerNorm/gamma",
    "cls/predictions/transform/LayerNorm/beta",
    "cls/predictions/output_bias",
    "cls/seq_relationship/output_weights",
    "cls/seq_relationship/output_bias",
)

@keras.saving.register_keras_serializable(package="bert_tf")
class MaskedLMHead(keras.layers.Layer):
    """Google's `cls/predictions` head.

    `call(masked_output [B,P,H], embedding_table [V,H])` (the encoder's output
    at the masked positions) -> logits `[B, P, V]`: `dense + activation +
    LayerNorm`, then `x @ embedding_table^T + output_bias`.

    >>> import numpy as np
    >>> head = MaskedLMHead(vocab_size=5, hidden_size=4)
    >>> tuple(head(np.ones((1, 2, 4), "float32"), np.ones((5, 4), "float32")).shape)
    (1, 2, 5)
    """

    def __init__(self, vocab_size, hidden_size, activation="gelu", layer_norm_eps=1e-12,
                 initializer_range=0.02, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.hidden_size = int(hidden_size)
        self.activation_name = activation
        self.layer_norm_eps = float(layer_norm_eps)
        self.initializer_range = float(initializer_range)
        self._act = activation_fn(activation)
        init = keras.initializers.TruncatedNormal(stddev=self.initializer_range)
        self.dense = keras.layers.Dense(self.hidden_size, kernel_initializer=init,
                                        name="transform_dense")
        self.layer_norm = keras.layers.LayerNormalization(epsilon=self.layer_norm_eps,
                                                          name="transform_LayerNorm")

    def build(self, *args, **kwargs):
        self.dense.build((None, self.hidden_size))
        self.layer_norm.build((None, self.hidden_size))
        self.output_bias = self.add_weight(shape=(self.vocab_size,), initializer="zeros",
                                           name="output_bias")
        self.built = True

    def call(self, masked_output, embedding_table):
        x = self.layer_norm(self._act(self.dense(masked_output)))
        table = ops.cast(embedding_table, x.dtype)
        logits = ops.matmul(x, ops.transpose(table))
        return logits + ops.cast(self.output_bias, logits.dtype)

    def get_config(self):
        c = super().get_config()
        c.update(vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                 activation=self.activation_name if isinstance(self.activation_name, str) else "gelu",
                 layer_norm_eps=self.layer_norm_eps, initializer_range=self.initializer_range)
        return c


@keras.saving.register_keras_serializable(package="bert_tf")
class NextSentenceHead(keras.layers.Layer):
    """Google's `cls/seq_relationship` head: `pooled @ output_weights^T + output_bias`,
    `output_weights` stored `[2, H]` as in Google's checkpoints.

    >>> import numpy as np
    >>> tuple(NextSentenceHead(hidden_size=4)(np.ones((3, 4), "float32")).shape)
    (3, 2)
    """

    def __init__(self, hidden_size, initializer_range=0.02, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size = int(hidden_size)
        self.initializer_range = float(initializer_range)

    def build(self, *args, **kwargs):
        self.output_weights = self.add_weight(
            shape=(2, self.hidden_size), name="output_weights",
            initializer=keras.initializers.TruncatedNormal(stddev=self.initializer_range))
        self.output_bias = self.add_weight(shape=(2,), initializer="zeros", name="output_bias")
        self.built = True

    def call(self, pooled):
        w = ops.cast(self.output_weights, pooled.dtype)
        return ops.matmul(pooled, ops.transpose(w)) + ops.cast(self.output_bias, pooled.dtype)

    def get_config(self):
        c = super().get_config()
        c.update(hidden_size=self.hidden_size, initializer_range=self.initializer_range)
        return c


@keras.saving.register_keras_serializable(package="bert_tf")
class BertPretrainer(keras.Model):
    """`BertEncoder` + MLM head (tied to the word embeddings) + NSP head.

    Inputs: dict of int `input_word_ids`, `input_mask`, `input_type_ids` `[B, T]`
    and `masked_lm_positions` `[B, P]` (Google's record names `input_ids` /
    `segment_ids` are accepted too). Outputs: dict `mlm_logits` `[B, P, V]`,
    and with NSP `nsp_logits` `[B, 2]` and `pooled_output` `[B, H]` (float32
    even under mixed precision). The encoder's last layer runs on the masked
    positions (and `[CLS]`) only (`BertEncoder.last_layer_at`): the same
    logits as the whole sequence output gathered, ~(1 - P/T)/L of the
    encoder's work less.

    Args:
      encoder: a `bert_tf.BertEncoder` (must expose `embedding_table`).
      activation / layer_norm_eps / initializer_range: of the MLM transform;
        default from `encoder.config` (`hidden_act`, `layer_norm_eps`,
        `initializer_range`).
      next_sentence: False for MLM only (RoBERTa and later recipes): no NSP
        head, no `nsp_logits`, and :func:`pretraining_loss` is the MLM loss.

    See the module docstring for an example.
    """

    def __init__(self, encoder, activation=None, layer_norm_eps=None, initializer_range=None,
                 next_sentence=True, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        config = encoder.config
        hidden, vocab = config.hidden_size, config.vocab_size
        self.activation = activation or config.hidden_act
        self.layer_norm_eps = float(layer_norm_eps or config.layer_norm_eps)
        self.initializer_range = float(initializer_range or config.initializer_range)
        self.mlm_head = MaskedLMHead(vocab, hidden, self.activation, self.layer_norm_eps,
                                     self.initializer_range, name="predictions")
        self.next_sentence = bool(next_sentence)
        self.mlm_head.build()
        self.nsp_head = None
        if self.next_sentence:
            self.nsp_head = NextSentenceHead(hidden, self.initializer_range, name="seq_relationship")
            self.nsp_head.build()

    @staticmethod
    def encoder_inputs(features):
        """Google record names -> encoder input names (int32)."""
        def pick(*names):
            for n in names:
                if n in features:
                    return ops.cast(features[n], "int32")
            raise KeyError(f"pretraining inputs need one of {names}; got {sorted(features)}")
        return {"input_word_ids": pick("input_word_ids", "input_ids"),
                "input_mask": pick("input_mask"),
                "input_type_ids": pick("input_type_ids", "segment_ids")}

    def call(self, inputs, training=False):
        # No loss reads the last layer's other rows: it runs on the masked positions (and [CLS] for NSP) only.
        positions = ops.cast(inputs["masked_lm_positions"], "int32")
        if self.nsp_head is not None:
            positions = ops.concatenate([ops.zeros_like(positions[:, :1]), positions], axis=1)
        rows = self.encoder.last_layer_at(self.encoder_inputs(inputs), positions, training=training)
        if self.nsp_head is None:
            return {"mlm_logits": self._mlm_logits(rows)}
        pooled = self.encoder.pooler(rows)  # the pooler reads row 0: [CLS]
        return {"mlm_logits": self._mlm_logits(rows[:, 1:]),
                "nsp_logits": ops.cast(self.nsp_head(pooled), "float32"),
                "pooled_output": ops.cast(pooled, "float32")}

    def _mlm_logits(self, masked_output):
        return ops.cast(self.mlm_head(masked_output, self.encoder.embedding_table), "float32")

    def get_config(self):
        return {"encoder": keras.saving.serialize_keras_object(self.encoder),
                "activation": self.activation if isinstance(self.activation, str) else None,
                "layer_norm_eps": self.layer_norm_eps, "initializer_range": self.initializer_range,
                "next_sentence": self.next_sentence, "name": self.name}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)

    # ------------------------------------------------------------ weights
    def _head_variables(self):
        heads = {
            "cls/predictions/transform/dense/kernel": self.mlm_head.dense.kernel,
            "cls/predictions/transform/dense/bias": self.mlm_head.dense.bias,
            "cls/predictions/transform/LayerNorm/gamma": self.mlm_head.layer_norm.gamma,
            "cls/predictions/transform/LayerNorm/beta": self.mlm_head.layer_norm.beta,
            "cls/predictions/output_bias": self.mlm_head.output_bias,
        }
        if self.nsp_head is not None:
            heads["cls/seq_relationship/output_weights"] = self.nsp_head.output_weights
            heads["cls/seq_relationship/output_bias"] = self.nsp_head.output_bias
        return heads

    def head_weights(self):
        """Heads as `{google_name: np.ndarray}` (for `save_pretrained(extra_weights=...)`)."""
        return {k: np.asarray(keras.ops.convert_to_numpy(v)) for k, v in self._head_variables().items()}

    def load_head_weights(self, extra_weights, strict=False, source="extra_weights"):
        """Loads heads from `{name: array}` with Google (`cls/...`) or Hugging Face
        (`cls.predictions...`) names. Returns the list of Google names loaded.
        Shape mismatches raise `ValueError` naming the variable; with `strict`,
        missing heads raise too. `cls.predictions.decoder.*` (tied) is ignored."""
        weights = normalize_head_weights(extra_weights)
        variables = self._head_variables()
        loaded = []
        for name, var in variables.items():
            if name not in weights:
                continue
            value = np.asarray(weights[name])
            if tuple(value.shape) != tuple(var.shape):
                raise ValueError(f"{source}: {name} has shape {tuple(value.shape)}, "
                                 f"the model expects {tuple(var.shape)}")
            var.assign(value.astype(var.dtype))
            loaded.append(name)
        missing = [n for n in variables if n not in loaded]
        if strict and missing:
            raise ValueError(f"{source}: missing pretraining head weights {missing}")
        return loaded


def normalize_head_weights(extra_weights):
    """`{name: array}` with Google or HF names -> only the heads, under Google names."""
    out = {}
    for name, value in (extra_weights or {}).items():
        if name.startswith(MLM_PREFIX) or name.startswith(NSP_PREFIX):
            if name in HEAD_NAMES:
                out[name] = np.asarray(value)
            continue
        key = name[len("bert."):] if name.startswith("bert.") else name
        if key in HF_HEAD_NAMES:
            gname, transpose = HF_HEAD_NAMES[key]
            v = np.asarray(value)
            out[gname] = v.T if transpose else v
    return out


# ----------------------------------------------------------- loss/metrics
def pretraining_loss(labels, outputs):
    """Google's pretraining losses and metrics on one replica's batch.

    `labels`: `masked_lm_ids` `[B, P]`, `masked_lm_weights` `[B, P]`,
    `next_sentence_labels` `[B]` or `[B, 1]`. `outputs`: the model's dict.
    Returns `(total_loss, {"mlm_loss", "nsp_loss", "mlm_accuracy", "nsp_accuracy"})`;
    for a model without the NSP head (`next_sentence=False`), the MLM loss and
    `{"mlm_loss", "mlm_accuracy"}`.
    """
    mlm_logits = ops.cast(outputs["mlm_logits"], "float32")
    ids = ops.cast(labels["masked_lm_ids"], "int32")
    w = ops.cast(labels["masked_lm_weights"], "float32")
    nll = sparse_softmax_cross_entropy(ids, mlm_logits)
    denom = ops.sum(w) + 1e-5
    mlm_loss = ops.sum(w * nll) / denom
    mlm_acc = ops.sum(w * ops.cast(ops.equal(ops.cast(ops.argmax(mlm_logits, -1), "int32"), ids),
                                   "float32")) / denom
    if "nsp_logits" not in outputs:
        return mlm_loss, {"mlm_loss": mlm_loss, "mlm_accuracy": mlm_acc}
    nsp_logits = ops.cast(outputs["nsp_logits"], "float32")
    nsl = ops.reshape(ops.cast(labels["next_sentence_labels"], "int32"), (-1,))
    nsp_loss = ops.mean(keras.losses.sparse_categorical_crossentropy(nsl, nsp_logits, from_logits=True))
    nsp_acc = ops.mean(ops.cast(ops.equal(ops.cast(ops.argmax(nsp_logits, -1), "int32"), nsl),
                                "float32"))
    return mlm_loss + nsp_loss, {"mlm_loss": mlm_loss, "nsp_loss": nsp_loss,
                                 "mlm_accuracy": mlm_acc, "nsp_accuracy": nsp_acc}


def compute_loss(model, batch, training):
    """`bert_tf.training.Trainer` loss function: `batch` is a feature dict."""
    outputs = model(batch, training=training)
    return pretraining_loss(batch, outputs)


# ------------------------------------------------------------------ data
def _to_int32(features):
    return {k: (tf.cast(v, tf.int32) if v.dtype == tf.int64 else v) for k, v in features.items()}


def pretraining_dataset(input_files, batch_size, max_seq_length=128, max_predictions_per_seq=20,
                        is_training=True, masker=None, raw_text=False, vocab_file=None,
                        do_lower_case=True, short_seq_prob=0.1, seed=12345,
                        shuffle_buffer=1000, input_context=None, num_parallel_reads=None, nsp=True,
                        word_segmenter=None):
    """Batched feature dicts for :class:`BertPretrainer` / :func:`compute_loss`.

    Args:
      input_files: TFRecord files (list or comma list with globs) in Google's
        format, or with `raw_text=True` text files (one sentence per line,
        blank line between documents; needs `vocab_file` and `masker`).
      batch_size: batch size of this input pipeline (per-replica batch under
        `input_context`, see `Trainer`'s `train_dataset_fn`).
      masker: a `bert_tf.pretraining.masking.DynamicMasker` for dynamic masking: record
        masks are undone (`unmask_features`) and fresh ones drawn per batch.
      is_training: repeat, shuffle files and examples (Google's input_fn:
        interleaved file readers, a small example shuffle buffer), drop the
        remainder; evaluation reads once, in order.
      input_context: `tf.distribute.InputContext`: files are sharded per input
        pipeline when there are enough of them, else examples are.
      nsp, word_segmenter: raw text only: `nsp=False` packs one-segment chunks
        to the full length; `word_segmenter` groups its words for whole-word
        masking (see `masking.raw_text_pairs_dataset`).

    Output dict (int32/float32): `input_ids`, `input_mask`, `segment_ids`,
    `masked_lm_positions`, `masked_lm_ids`, `masked_lm_weights`,
    `next_sentence_labels` `[B, 1]`.
    """
    files = pdata.expand_input_files(input_files)
    n_pipes = input_context.num_input_pipelines if input_context else 1
    pipe_id = input_context.input_pipeline_id if input_context else 0
    if raw_text:
        if masker is None or vocab_file is None:
            raise ValueError("raw text input needs dynamic masking (a masker) and a vocab_file")
        ds = masking.raw_text_pairs_dataset(files, vocab_file, do_lower_case, max_seq_length,
                                            short_seq_prob, seed=f"{seed}:{pipe_id}", nsp=nsp,
                                            word_segmenter=word_segmenter)
        if n_pipes > 1:
            ds = ds.shard(n_pipes, pipe_id)
        if not is_training:
            raise ValueError("raw text input is for training (it is infinite)")
    else:
        spec = pdata.google_feature_spec(max_seq_length, max_predictions_per_seq)
        if is_training:
            fds = tf.data.Dataset.from_tensor_slices(files)
            if n_pipes > 1 and len(files) >= n_pipes:
                fds = fds.shard(n_pipes, pipe_id)
                example_shard = False
            else:
                example_shard = n_pipes > 1
            fds = fds.repeat().shuffle(len(files), seed=seed)
            cycle = min(num_parallel_reads or 4, len(files))
            ds = fds.interleave(tf.data.TFRecordDataset, cycle_length=cycle,
                                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            if example_shard:
                ds = ds.shard(n_pipes, pipe_id)
            if shuffle_buffer:
                ds = ds.shuffle(shuffle_buffer, seed=seed)
        else:
            ds = tf.data.TFRecordDataset(files)
            if n_pipes > 1:
                ds = ds.shard(n_pipes, pipe_id)
        ds = ds.map(lambda r: tf.io.parse_single_example(r, spec),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if masker is not None:
            ds = ds.map(masking.unmask_features, num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=is_training)
    ds = ds.map(_to_int32)
    if masker is not None:
        ds = ds.enumerate().map(
            lambda i, f: masker(f, i * n_pipes + pipe_id),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
