"""`BertPacker`: wordpiece segments -> `input_word_ids`, `input_mask`, `input_type_ids` (plain TF ops).

One or two segments are packed as `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`.
Pairs are truncated by Google's `_truncate_seq_pair` rule (drop the last piece
of the longer segment, of `b` on ties, until `len(a) + len(b) <= seq_length - 3`),
computed in closed form. Packing uses only core TF ops: no
`TFText>RoundRobinTrim` (missing from TF Serving <= 2.19) and no `RaggedGather`
(no LiteRT kernel).
"""

import keras
import tensorflow as tf

INPUT_KEYS = ("input_word_ids", "input_mask", "input_type_ids")


@keras.saving.register_keras_serializable(package="bert_tf")
class BertPacker(keras.layers.Layer):
    """Packs 1 or 2 segments of wordpiece ids into BERT's three input tensors.

    Args:
      seq_length: packed length; outputs are int32 `[B, seq_length]`.
      cls_id, sep_id, pad_id: ids of `[CLS]`, `[SEP]` and `[PAD]`.
      dynamic_padding: pad only to the batch's longest packed sequence, rounded
        up to a multiple of `pad_to_multiple_of` and capped at `seq_length`
        (output shape `[B, None]`).
      pad_to_multiple_of: rounding for `dynamic_padding` (`None` or 1: none).

    Call: `packer(segments, seq_length=None)` with an int `tf.RaggedTensor`
    `[B, None]` or a list of one or two of them (`seq_length` may be a scalar
    tensor, e.g. a SavedModel argument). `pack_dense(a, a_lengths, b, b_lengths)`
    does the same on zero-padded dense ids plus their true lengths.

    Example:

    >>> import tensorflow as tf
    >>> from bert_tf.text.packer import BertPacker
    >>> packer = BertPacker(seq_length=8, cls_id=2, sep_id=3, pad_id=0)
    >>> out = packer([tf.ragged.constant([[5, 6, 7]]), tf.ragged.constant([[8, 9, 10, 11]])])
    >>> out["input_word_ids"].numpy().tolist(), out["input_type_ids"].numpy().tolist()
    ([[2, 5, 6, 7, 3, 8, 9, 3]], [[0, 0, 0, 0, 0, 1, 1, 1]])
    """

    def __init__(self, seq_length=128, cls_id=101, sep_id=102, pad_id=0, dynamic_padding=False,
                 pad_to_multiple_of=8, **kwargs):
        super().__init__(**kwargs)
        self._allow_non_tensor_positional_args = True
        seq_length = int(seq_length)
        if seq_length < 2:
            raise ValueError(f"seq_length must be >= 2 (room for [CLS] and [SEP]), got {seq_length}")
        if pad_to_multiple_of is not None and int(pad_to_multiple_of) < 1:
            raise ValueError(f"pad_to_multiple_of must be >= 1 or None, got {pad_to_multiple_of}")
        self.seq_length = seq_length
        self.cls_id, self.sep_id, self.pad_id = int(cls_id), int(sep_id), int(pad_id)
        self.dynamic_padding = bool(dynamic_padding)
        self.pad_to_multiple_of = None if pad_to_multiple_of is None else int(pad_to_multiple_of)
        self.built = True

    def get_config(self):
        config = super().get_config()
        config.update({"seq_length": self.seq_length, "cls_id": self.cls_id, "sep_id": self.sep_id,
                       "pad_id": self.pad_id, "dynamic_padding": self.dynamic_padding,
                       "pad_to_multiple_of": self.pad_to_multiple_of})
        return config

    def resolve_seq_length(self, seq_length=None):
        """Python int (static shapes) or a scalar int32 tensor (e.g. a SavedModel argument)."""
        if seq_length is None:
            return self.seq_length
        if isinstance(seq_length, (tf.Tensor, tf.Variable)) and tf.get_static_value(seq_length) is None:
            return tf.cast(seq_length, tf.int32)
        value = int(tf.get_static_value(seq_length) if isinstance(seq_length, tf.Tensor) else seq_length)
        if value < 2:
            raise ValueError(f"seq_length must be >= 2 (room for [CLS] and [SEP]), got {value}")
        return value

    def _pad_width(self, total_lengths, seq_length):
        longest = tf.reduce_max(tf.concat([total_lengths, [1]], 0))
        m = self.pad_to_multiple_of or 1
        return tf.minimum((longest + m - 1) // m * m, seq_length)

    @staticmethod
    def _pair_lengths(la, lb, budget):
        """Closed form of Google's _truncate_seq_pair: kept lengths of a and b."""
        fits = la + lb <= budget
        fa_cut = tf.minimum(la, tf.maximum(budget - lb, (budget + 1) // 2))
        return tf.where(fits, la, fa_cut), tf.where(fits, lb, budget - fa_cut)

    def pack_dense(self, a, la, b=None, lb=None, seq_length=None):
        """Packs dense segment ids (zero padded) with their true lengths."""
        L = self.resolve_seq_length(seq_length)
        static = isinstance(L, int)
        j = tf.range(L, dtype=tf.int32)[tf.newaxis, :]
        la = tf.cast(la, tf.int32)
        cls_id, sep_id, pad_id = (tf.constant(x, tf.int32) for x in (self.cls_id, self.sep_id, self.pad_id))
        a = a[:, : L - 1]
        a = tf.pad(a, [[0, 0], [1, L - 1 - tf.shape(a)[1]]])  # a[:, j-1] at column j
        if b is None:
            fa = tf.minimum(la, L - 2)[:, tf.newaxis]
            total = fa + 2
            ids = tf.where(j == 0, cls_id, tf.where(j <= fa, a, tf.where(j == fa + 1, sep_id, pad_id)))
            types = tf.zeros_like(ids)
        else:
            if static and L < 3:
                raise ValueError(f"seq_length must be >= 3 to pack pairs, got {L}")
            fa, fb = self._pair_lengths(la, tf.cast(lb, tf.int32), L - 3)
            fa, fb = fa[:, tf.newaxis], fb[:, tf.newaxis]
            total = fa + fb + 3
            b = b[:, : L - 3]
            b = tf.pad(b, [[0, 0], [0, L - tf.shape(b)[1]]])
            b_at = tf.gather(b, tf.clip_by_value(j - fa - 2, 0, L - 1), batch_dims=1)
            in_b = (j >= fa + 2) & (j < fa + 2 + fb)
            tail = tf.where(in_b, b_at, tf.where(j == total - 1, sep_id, pad_id))
            ids = tf.where(j == 0, cls_id, tf.where(j <= fa, a, tf.where(j == fa + 1, sep_id, tail)))
            types = tf.cast((j >= fa + 2) & (j < total), tf.int32)
        mask = tf.cast(j < total, tf.int32)
        outputs = {"input_word_ids": tf.cast(ids, tf.int32), "input_mask": mask, "input_type_ids": types}
        if self.dynamic_padding:
            width = self._pad_width(total[:, 0], L)
            outputs = {k: v[:, :width] for k, v in outputs.items()}
        elif static:
            outputs = {k: tf.ensure_shape(v, [None, L]) for k, v in outputs.items()}
        return outputs

    def call(self, segments, seq_length=None):
        if isinstance(segments, (tf.RaggedTensor, tf.Tensor)):
            segments = [segments]
        segments = list(segments)
        if len(segments) not in (1, 2):
            raise ValueError(f"BertPacker packs 1 or 2 segments, got {len(segments)}")
        L = self.resolve_seq_length(seq_length)
        dense, lengths = [], []
        for seg in segments:
            if not isinstance(seg, tf.RaggedTensor):
                seg = tf.RaggedTensor.from_tensor(tf.convert_to_tensor(seg))
            if seg.ragged_rank > 1:
                seg = seg.merge_dims(-2, -1)
            seg = tf.cast(seg, tf.int32)
            lengths.append(tf.cast(seg.row_lengths(), tf.int32))
            dense.append(seg.to_tensor(default_value=0, shape=tf.stack([seg.nrows(out_type=tf.int32), L])))
        if len(segments) == 1:
            return self.pack_dense(dense[0], lengths[0], seq_length=L)
        return self.pack_dense(dense[0], lengths[0], dense[1], lengths[1], seq_length=L)
