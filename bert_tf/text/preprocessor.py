"""In-graph BERT preprocessing: raw strings -> `input_word_ids`, `input_mask`, `input_type_ids`.

`BertPreprocessor` composes a `bert_tf.text.tokenizer.BertTokenizer` (Google's
normalisation + WordPiece, tensorflow-text ops) and a `bert_tf.text.packer.BertPacker`
(`[CLS]`/`[SEP]`, segments, `_truncate_seq_pair`, dynamic padding, plain TF
ops). Both are Keras layers made only of TensorFlow and tensorflow-text ops, so
the preprocessor runs inside `tf.data`, `tf.function`s and exported
SavedModels (including TF Serving 2.12+, whose linked tensorflow-text lacks
`TFText>RoundRobinTrim`; this layer never emits that op).

The vocabulary travels with the layer (`get_config()` holds the tokens), so a
model saved with `model.save("m.keras")` loads with `keras.saving.load_model`
where the original `vocab.txt` no longer exists.
"""

import keras
import tensorflow as tf

from bert_tf.text.packer import INPUT_KEYS, BertPacker
from bert_tf.text.tokenizer import MAX_CHARS_PER_WORD, REQUIRED_TOKENS, BertTokenizer, load_vocab

__all__ = ["BertPreprocessor", "load_vocab", "MAX_CHARS_PER_WORD", "REQUIRED_TOKENS", "INPUT_KEYS"]


@keras.saving.register_keras_serializable(package="bert_tf")
class BertPreprocessor(keras.layers.Layer):
    """BERT text preprocessing as a Keras layer: tokenizer + packer.

    Args:
      vocab_file: path of a BERT `vocab.txt` (must contain `[CLS]`, `[SEP]`,
        `[UNK]`, `[PAD]`). Or give `vocabulary` instead.
      lower_case: `True` for uncased models (lower-case, strip accents).
      seq_length: packed length; outputs are `[B, seq_length]` int32.
      dynamic_padding: if `True`, pad only to the longest packed sequence in
        the batch, rounded up to a multiple of `pad_to_multiple_of` and capped
        at `seq_length` (output shape `[B, None]`). Default `False`: always
        `seq_length`.
      pad_to_multiple_of: rounding for `dynamic_padding` (default 8; `None` or
        1 = no rounding).
      vocabulary: the token list itself (what `get_config()` stores).
      tokenizer: an existing `BertTokenizer` to share (then `vocab_file`,
        `vocabulary` and `lower_case` are taken from it).

    Calling the layer:
      * on a `tf.string` tensor `[B]` -> dict of int32 `[B, seq_length]`:
        `input_word_ids` (`[CLS] a [SEP] 0...`), `input_mask` (1 over real
        tokens), `input_type_ids` (all 0). Single texts keep their first
        `seq_length - 2` wordpieces.
      * on a list/tuple of two `tf.string` tensors `[B]` -> the same dict for
        pairs `[CLS] a [SEP] b [SEP]`, `input_type_ids` 1 over `b` and its
        `[SEP]`. Truncation is Google's `_truncate_seq_pair`.

    Other methods: `tokenize(strings)` -> int32 `tf.RaggedTensor` `[B, None]`
    of wordpiece ids (no special tokens, not truncated);
    `bert_pack_inputs(segments, seq_length=None)` packs a list of one or two
    such ragged tensors; `with_padding(...)` is a copy with other padding
    settings that shares this tokenizer.

    `special_tokens` is a dict with keys `vocab_size`, `cls_id`, `sep_id`,
    `pad_id`, `unk_id`, `mask_id` and the same ids under `[CLS]`, `[SEP]`,
    `[PAD]`, `[UNK]`, `[MASK]` (`mask_id`/`[MASK]` is `None` if the vocab has
    no `[MASK]`).

    Example:

    >>> import os, tempfile
    >>> import tensorflow as tf
    >>> from bert_tf import BertPreprocessor
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world",
    ...          "!", "un", "##aff", "##able"]
    >>> path = os.path.join(tempfile.mkdtemp(), "vocab.txt")
    >>> _ = open(path, "w").write("\\n".join(vocab) + "\\n")
    >>> pre = BertPreprocessor(path, seq_length=8)
    >>> out = pre(tf.constant(["Hello, unaffable World!"]))
    >>> out["input_word_ids"].numpy().tolist()
    [[2, 5, 1, 8, 9, 10, 6, 3]]
    >>> pairs = pre([tf.constant(["hello"]), tf.constant(["world !"])])
    >>> pairs["input_word_ids"].numpy().tolist(), pairs["input_type_ids"].numpy().tolist()
    ([[2, 5, 3, 6, 7, 3, 0, 0]], [[0, 0, 0, 1, 1, 1, 0, 0]])
    >>> pre.tokenize(tf.constant(["unaffable"])).to_list()
    [[8, 9, 10]]
    >>> os.remove(path)  # the vocabulary lives in the layer's config
    >>> BertPreprocessor.from_config(pre.get_config())(tf.constant(["hello"]))["input_word_ids"].numpy()[0, :3]
    array([2, 5, 3], dtype=int32)
    """

    def __init__(self, vocab_file=None, lower_case=True, seq_length=128, dynamic_padding=False,
                 pad_to_multiple_of=8, vocabulary=None, tokenizer=None, **kwargs):
        super().__init__(**kwargs)
        # Strings pass through Keras untouched (no float conversion).
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        self.supports_masking = False
        if tokenizer is None:
            if (vocab_file is None) == (vocabulary is None):
                raise ValueError("BertPreprocessor needs exactly one of vocab_file= and vocabulary=")
            tokenizer = BertTokenizer(vocabulary if vocabulary is not None else vocab_file,
                                      lower_case=lower_case, name="tokenizer")
        self.tokenizer = tokenizer
        # Where the vocabulary was read from (None once loaded from a config): informational only.
        self.vocab_file = None if vocab_file is None else str(vocab_file)
        self.lower_case = tokenizer.lower_case
        ids = tokenizer.special_tokens
        self.packer = BertPacker(seq_length, cls_id=ids["cls_id"], sep_id=ids["sep_id"], pad_id=ids["pad_id"],
                                 dynamic_padding=dynamic_padding, pad_to_multiple_of=pad_to_multiple_of,
                                 name="packer")
        self.seq_length = self.packer.seq_length
        self.dynamic_padding = self.packer.dynamic_padding
        self.pad_to_multiple_of = self.packer.pad_to_multiple_of
        self.built = True

    @property
    def special_tokens(self):
        return dict(self.tokenizer.special_tokens)

    @property
    def vocab_size(self):
        return self.tokenizer.vocab_size

    @property
    def vocabulary(self):
        return self.tokenizer.vocabulary

    def get_config(self):
        config = super().get_config()
        config.update({
            "vocabulary": list(self.tokenizer.vocabulary),
            "lower_case": self.lower_case,
            "seq_length": self.seq_length,
            "dynamic_padding": self.dynamic_padding,
            "pad_to_multiple_of": self.pad_to_multiple_of,
        })
        return config

    def with_padding(self, dynamic_padding=None, pad_to_multiple_of=None, seq_length=None, name=None):
        """A preprocessor sharing this tokenizer with other packing settings (None: keep this one's)."""
        return BertPreprocessor(
            tokenizer=self.tokenizer,
            seq_length=self.seq_length if seq_length is None else seq_length,
            dynamic_padding=self.dynamic_padding if dynamic_padding is None else dynamic_padding,
            pad_to_multiple_of=self.pad_to_multiple_of if pad_to_multiple_of is None else pad_to_multiple_of,
            name=name)

    def save_vocabulary(self, path):
        """Writes the vocabulary as a BERT `vocab.txt` to `path`; returns `path`."""
        return self.tokenizer.save_vocabulary(path)

    # ------------------------------------------------------------------ steps
    def normalize_text(self, strings):
        """Google's BasicTokenizer as string ops (see `BertTokenizer.normalize_text`)."""
        return self.tokenizer.normalize_text(strings)

    def tokenize(self, strings):
        """tf.string [B] -> int32 RaggedTensor [B, None] of wordpiece ids
        (all words merged; no special tokens; no truncation)."""
        strings, squeeze = self._flatten_input(strings)
        out = self.tokenizer(strings)
        return out[0] if squeeze else out

    def bert_pack_inputs(self, segments, seq_length=None):
        """Packs a list of 1 or 2 int RaggedTensors [B, None] of wordpiece ids
        into `input_word_ids`/`input_mask`/`input_type_ids` int32 [B, seq_length]."""
        return self.packer(segments, seq_length=seq_length)

    @staticmethod
    def _flatten_input(strings):
        strings = tf.convert_to_tensor(strings, dtype=tf.string)
        rank = strings.shape.rank
        if rank == 0:
            return tf.reshape(strings, [1]), True
        if rank == 2 and strings.shape[1] == 1:
            return tf.squeeze(strings, 1), False
        if rank != 1:
            raise ValueError(f"BertPreprocessor expects strings of shape [batch] (or [batch, 1]), got {strings.shape}")
        return strings, False

    def call(self, inputs):
        L = self.seq_length
        if isinstance(inputs, dict):
            raise TypeError("BertPreprocessor takes a string tensor or a list of two, not a dict")
        if isinstance(inputs, (list, tuple)):
            if len(inputs) == 1:
                inputs = inputs[0]
            elif len(inputs) != 2:
                raise ValueError(f"BertPreprocessor packs 1 or 2 segments, got {len(inputs)}")
        if isinstance(inputs, (list, tuple)):
            a, squeeze = self._flatten_input(inputs[0])
            b, _ = self._flatten_input(inputs[1])
            a_ids, a_len = self.tokenizer.tokenize_dense(a, width=L)
            b_ids, b_len = self.tokenizer.tokenize_dense(b, width=L)
            out = self.packer.pack_dense(a_ids, a_len, b_ids, b_len, seq_length=L)
        else:
            a, squeeze = self._flatten_input(inputs)
            a_ids, a_len = self.tokenizer.tokenize_dense(a, width=L)
            out = self.packer.pack_dense(a_ids, a_len, seq_length=L)
        if squeeze:
            out = {k: v[0] for k, v in out.items()}
        return out

    def compute_output_spec(self, inputs):
        first = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        shape = tuple(first.shape)
        batch = shape[0] if len(shape) else None
        width = None if self.dynamic_padding else self.seq_length
        out_shape = (width,) if len(shape) == 0 else (batch, width)
        return {k: keras.KerasTensor(out_shape, dtype="int32") for k in INPUT_KEYS}
