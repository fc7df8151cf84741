"""`BertSentenceEmbedder`: the sentence-embedding task model — raw text in, one vector per text out.

The encoder's last layer is pooled over the real tokens of each text (`pooling`: "mean" — the mask-weighted
mean, what sentence-transformers models such as all-MiniLM-L6-v2 use — "cls" or "max") and, with `normalize`,
scaled to unit L2 norm, so that a dot product is the cosine similarity. The model holds its preprocessor
(tokenizer + packer with the vocabulary inside), so `model.save("m.keras")` / `keras.saving.load_model` round-trip
it, and `model.export(base)` writes the serving SavedModel (`bert_tf.tasks.embedding.export`).

`BertSentenceEmbedder.from_pretrained(path)` reads any checkpoint `bert_tf.from_pretrained` reads; when the
directory is a sentence-transformers model (`modules.json` + `1_Pooling/config.json` + `sentence_bert_config.json`,
as the MiniLM package ships), its pooling, normalisation and maximum length are taken from those files
(`sentence_transformers_settings`), so the embeddings equal `SentenceTransformer(path).encode(...)`.

Long documents: with `max_windows > 1` a text longer than the preprocessor's `seq_length` is read over up to
`max_windows` sliding windows `window_stride` wordpieces apart (`bert_tf.text.windows`, the rule classification
uses). Each window is encoded and pooled with the model's pooling (not normalised), the window vectors are
pooled over the document's real windows — `window_pooling="mean"`: weighted by each window's token count, so
with mean pooling the document vector is the mean of every token of every window; "max": the element-wise max
— and the result is L2-normalised when the model normalises. A text that fits one window gets exactly its plain
embedding; pieces past the last kept window are not read (`windows_needed` counts such texts).

Empty or whitespace-only texts are embedded as `[CLS] [SEP]` (as sentence-transformers does); the export counts
them (`num_tokens` 0) and the fine-tuning reader rejects them by file:line.

Example (tiny random encoder):

>>> import os, tempfile
>>> import tensorflow as tf
>>> import bert_tf
>>> from bert_tf.tasks.embedding import BertSentenceEmbedder
>>> vocab = os.path.join(tempfile.mkdtemp(), "vocab.txt")
>>> _ = open(vocab, "w").write("\\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "bad", "film"]))
>>> enc = bert_tf.BertEncoder(bert_tf.BertConfig(vocab_size=7, hidden_size=16, num_hidden_layers=1,
...                                              num_attention_heads=2, intermediate_size=32))
>>> model = BertSentenceEmbedder(enc, bert_tf.BertPreprocessor(vocab, seq_length=8))
>>> vectors = model(tf.constant(["good film", "bad film"]))
>>> tuple(vectors.shape), round(float(tf.norm(vectors[0])), 5)
((2, 16), 1.0)
>>> model.embed(["good film", "bad", "film film film"], batch_size=2).shape
(3, 16)
"""

import dataclasses
import json
import os

import keras
import numpy as np
import tensorflow as tf

from bert_tf.model.checkpoints import from_pretrained
from bert_tf.model.task_model import BertTaskModel
from bert_tf.tasks.embedding import export as export_lib
from bert_tf.tasks.embedding import litert
from bert_tf.tasks.embedding.ops import cosine_similarity, l2_normalize
from bert_tf.text import windows as windows_lib
from bert_tf.text.packer import INPUT_KEYS
from bert_tf.text.preprocessor import BertPreprocessor

POOLING_MODES = ("mean", "cls", "max")

# sentence-transformers' Pooling flags -> our pooling mode (the modes we implement).
_ST_POOLING_FLAGS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
                     "pooling_mode_max_tokens": "max"}
_ST_MODULES = ("sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
               "sentence_transformers.models.Normalize")


@dataclasses.dataclass(frozen=True)
class SentenceTransformersSettings:
    """What a sentence-transformers model directory says about its embedding (`sentence_transformers_settings`)."""

    pooling: str
    normalize: bool
    max_seq_length: int | None
    dimension: int | None


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the sentence-transformers config ({e})") from None


def _pooling_of(path):
    """The one pooling mode that a sentence-transformers `Pooling` config turns on."""
    config = _read_json(path)
    on = sorted(k for k, v in config.items() if k.startswith("pooling_mode_") and v is True)
    if len(on) != 1 or on[0] not in _ST_POOLING_FLAGS:
        raise ValueError(f"{path}: pooling {on or 'none'}; bert_tf embeds with exactly one of "
                         f"{sorted(_ST_POOLING_FLAGS)}")
    return _ST_POOLING_FLAGS[on[0]], config.get("word_embedding_dimension")


def sentence_transformers_settings(model_dir):
    """Pooling, normalisation and maximum length of the sentence-transformers model in `model_dir`, or None
    when the directory has no `modules.json` (a plain BERT checkpoint).

    A module we do not implement (e.g. a `Dense` projection) or a pooling mode other than mean/cls/max is an
    error naming the file: embeddings without it would be silently different from sentence-transformers'."""
    modules_path = os.path.join(model_dir, "modules.json")
    if not os.path.isfile(modules_path):
        return None
    modules = _read_json(modules_path)
    types = [m.get("type") for m in modules]
    for i, kind in enumerate(types):
        if kind not in _ST_MODULES:
            raise ValueError(f"{modules_path}: module {i} is {kind!r}; bert_tf's embedding model has only "
                             "Transformer + Pooling (+ Normalize)")
    if _ST_MODULES[1] not in types:
        raise ValueError(f"{modules_path}: no Pooling module")
    pooling_dir = modules[types.index(_ST_MODULES[1])].get("path", "")
    pooling, dimension = _pooling_of(os.path.join(model_dir, pooling_dir, "config.json"))
    config_path = os.path.join(model_dir, "sentence_bert_config.json")
    max_seq_length = _read_json(config_path).get("max_seq_length") if os.path.isfile(config_path) else None
    return SentenceTransformersSettings(pooling=pooling, normalize=_ST_MODULES[2] in types,
                                        max_seq_length=max_seq_length, dimension=dimension)


@keras.saving.register_keras_serializable(package="bert_tf")
class BertSentenceEmbedder(BertTaskModel):
    """BERT encoder + pooling (+ L2 normalisation), with its preprocessor.

    Args:
      encoder: a :class:`bert_tf.BertEncoder`.
      preprocessor: a :class:`bert_tf.BertPreprocessor` (needed for raw text; its `seq_length` truncates).
      pooling: "mean" (over real tokens, [CLS] and [SEP] included, as sentence-transformers), "cls" (the last
        layer at [CLS], no pooler dense) or "max" (over real tokens).
      normalize: scale each embedding to unit L2 norm.
      max_windows: > 1 embeds a text longer than the preprocessor's ``seq_length`` over up to this many sliding
        windows (see the module docstring); 1 (default): the first window only (truncation).
      window_stride: wordpieces between window starts (required with ``max_windows > 1``, 0 otherwise).
      window_pooling: ``mean`` (weighted by each window's tokens) or ``max`` of a document's window vectors.

    Call: ``model(texts or token-id dict, training=False)`` -> float32 ``[B, H]``; a dict of ``[B, W, T]`` window
    features (`window_features`) embeds each row of windows as one document.
    """

    task_kind = "embedding"
    has_litert_export = True

    def __init__(self, encoder, preprocessor=None, pooling="mean", normalize=True, max_windows=1, window_stride=0,
                 window_pooling="mean", **kwargs):
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
        super().__init__(encoder, preprocessor, **kwargs)
        self.pooling = pooling
        self.normalize = bool(normalize)
        self.max_windows, self.window_stride, self.window_pooling = int(max_windows), int(window_stride), window_pooling
        if self.is_windowed and preprocessor is None:
            raise ValueError("max_windows > 1 needs the preprocessor (it cuts the windows)")
        windows_lib.check_windowing(preprocessor.seq_length if preprocessor is not None else 2 + self.window_stride,
                                    self.window_stride, self.max_windows, self.window_pooling)
        self._embed_functions = {}

    @property
    def is_windowed(self):
        """Texts are embedded over several sliding windows (`max_windows` > 1)."""
        return self.max_windows > 1

    def window_features(self, texts, preprocessor=None):
        """Texts [B] -> (window features int32 [B, W, T], windows each whole text needs [B])."""
        return windows_lib.window_features(preprocessor or self.preprocessor, texts, self.window_stride,
                                           self.max_windows)

    @classmethod
    def from_pretrained(cls, path, pooling=None, normalize=None, seq_length=None, **windowing):
        """The embedder of a checkpoint directory; unset settings come from its sentence-transformers files
        (else mean pooling, normalised, 128 tokens). `windowing`: `max_windows`, `window_stride`,
        `window_pooling`."""
        pretrained = from_pretrained(path)
        st = sentence_transformers_settings(path) if os.path.isdir(path) else None
        if st is not None and st.dimension not in (None, pretrained.config.hidden_size):
            raise ValueError(f"{path}: the Pooling module expects {st.dimension} dimensions, the encoder has "
                             f"{pretrained.config.hidden_size}")
        pooling = pooling or (st.pooling if st else "mean")
        normalize = (st.normalize if st else True) if normalize is None else normalize
        seq_length = seq_length or (st.max_seq_length if st and st.max_seq_length else 128)
        preprocessor = BertPreprocessor(pretrained.vocab_file, lower_case=bool(pretrained.lower_case),
                                        seq_length=seq_length, dynamic_padding=True)
        model = cls(pretrained.encoder, preprocessor, pooling=pooling, normalize=normalize, **windowing)
        model.build()
        return model

    def build(self, input_shape=None):
        """Builds the encoder only: the embedder has no trained head."""
        if not self.built:
            self.encoder({k: tf.zeros([1, 2], tf.int32) for k in INPUT_KEYS}, training=False)
            self.built = True

    # ------------------------------------------------------------------ call
    def features(self, inputs, preprocessor=None):
        """Raw strings `[B]` -> the input dict (`[B, W, T]` windows for a windowed model); a dict passes through."""
        if isinstance(inputs, dict):
            return inputs
        if self.preprocessor is None:
            raise ValueError("BertSentenceEmbedder got text but has no preprocessor; pass preprocessor= or feed "
                             "the dict of input_word_ids/input_mask/input_type_ids")
        if self.is_windowed:
            return self.window_features(inputs, preprocessor)[0]
        return (preprocessor or self.preprocessor)(inputs)

    def pool(self, sequence_output, input_mask):
        """The sentence embedding `[B, H]` (float32) of the last layer `[B, T, H]` over `input_mask`."""
        pooled = self.pool_tokens(sequence_output, input_mask)
        return l2_normalize(pooled) if self.normalize else pooled

    def pool_tokens(self, sequence_output, input_mask):
        """The model's pooling of the last layer `[B, T, H]` over `input_mask`, before normalisation.

        The mask is widened with `expand_dims`, not `[:, :, None]` (a StridedSlice with a new axis has no
        LiteRT kernel): the same ops run in the SavedModel and the .tflite."""
        sequence = tf.cast(sequence_output, tf.float32)
        if self.pooling == "cls":
            return sequence[:, 0]
        mask = tf.expand_dims(tf.cast(input_mask, tf.float32), -1)
        if self.pooling == "mean":  # the mask-weighted mean, as `bert_tf.model.encoder.mean_pool`
            return tf.reduce_sum(sequence * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1e-9)
        # max over real tokens; padding can never win
        return tf.reduce_max(tf.where(mask > 0, sequence, tf.fill(tf.shape(sequence), -1e9)), axis=1)

    def call(self, inputs, training=None):
        features = self.features(inputs)
        if len(features["input_word_ids"].shape) == 3:
            return self._windowed_embeddings(features, training)
        return self.pool(self.encode(features, training=training)["sequence_output"], features["input_mask"])

    def _windowed_embeddings(self, features, training):
        """Features [B, W, T] -> document embeddings [B, H]: only real windows are encoded, then pooled."""
        shape = tf.shape(features["input_word_ids"])
        valid = windows_lib.valid_windows(features["input_mask"])
        rows = tf.cast(tf.where(tf.reshape(valid, [-1])), tf.int32)  # [N, 1] positions of real windows in [B * W]
        flat = {k: tf.gather_nd(tf.reshape(features[k], [-1, shape[2]]), rows) for k in INPUT_KEYS}
        pooled = self.pool_tokens(self.encode(flat, training=training)["sequence_output"], flat["input_mask"])
        window_vectors = tf.scatter_nd(rows, pooled, tf.stack([shape[0] * shape[1], self.embedding_size]))
        window_vectors = tf.reshape(window_vectors, [shape[0], shape[1], self.embedding_size])
        weights = windows_lib.window_token_counts(features["input_mask"])
        document = windows_lib.pool_windows(window_vectors, valid, self.window_pooling, weights=weights)
        return l2_normalize(document) if self.normalize else document

    def similarity(self, text_a, text_b, training=None):
        """Cosine similarity `[B]` of each text of `text_a` with the text of `text_b` at the same position."""
        return cosine_similarity(self(text_a, training=training), self(text_b, training=training))

    # ---------------------------------------------------------------- batches
    def _embed_function(self, pad_to_multiple_of):
        if pad_to_multiple_of not in self._embed_functions:
            pre = self.preprocessor.with_padding(dynamic_padding=True, pad_to_multiple_of=pad_to_multiple_of)
            self._embed_functions[pad_to_multiple_of] = tf.function(
                lambda text: self(self.features(text, pre), training=False),
                input_signature=[tf.TensorSpec([None], tf.string)])
        return self._embed_functions[pad_to_multiple_of]

    def embed(self, texts, batch_size=32, pad_to_multiple_of=8):
        """Embeddings `[N, H]` (NumPy float32) of a list of strings, `batch_size` at a time.

        The texts are batched longest first (by characters, as sentence-transformers' `encode` does) so each
        batch, padded to its longest row, holds little padding; the rows come back in input order."""
        texts = list(texts)
        if any(not isinstance(t, (str, bytes)) for t in texts):
            bad = next(i for i, t in enumerate(texts) if not isinstance(t, (str, bytes)))
            raise TypeError(f"text {bad} is a {type(texts[bad]).__name__}, not a string")
        order = np.argsort([-len(t) for t in texts], kind="stable")
        embed = self._embed_function(pad_to_multiple_of)
        out = np.zeros([len(texts), self.embedding_size], np.float32)
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            out[rows] = embed(tf.constant([texts[i] for i in rows], tf.string)).numpy()
        return out

    @property
    def embedding_size(self):
        return int(self.encoder.config.hidden_size)

    # --------------------------------------------------------------- exports
    def export(self, export_base, version=None, task=None, overwrite=False, **options):
        """The serving SavedModel (`bert_tf.tasks.embedding.export`; options: `pad_to_multiple_of`,
        `warmup_texts`)."""
        return export_lib.export_embedder(self, export_base, version=version, task=task, overwrite=overwrite,
                                          **options)

    def export_litert(self, export_dir, precision="int8", representative_texts=None, task=None):
        """The .tflite (`bert_tf.tasks.embedding.litert`): raw text in, embedding out."""
        if self.is_windowed:
            raise ValueError("the LiteRT export reads one window per text; a windowed embedder (max_windows > 1) "
                             "exports for serving with model.export")
        return litert.export_litert(self, export_dir, precision=precision,
                                    representative_texts=representative_texts, task=task)

    def get_config(self):
        config = super().get_config()
        config.update({"pooling": self.pooling, "normalize": self.normalize})
        if self.is_windowed:  # a truncating model's config stays what it always was
            config.update({"max_windows": self.max_windows, "window_stride": self.window_stride,
                           "window_pooling": self.window_pooling})
        return config

