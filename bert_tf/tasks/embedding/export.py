"""The serving SavedModel of a `BertSentenceEmbedder`: raw text in, embeddings and cosine similarities out.

`export_embedder(model, export_base)` writes ``<export_base>/<version>/`` atomically (`bert_tf.export.saved_model
.export_signatures`: a `keras.export.ExportArchive`, warmup records, the metadata record, `check_serving_ops`).
The preprocessor inside pads each request only to its longest text (rounded up to `pad_to_multiple_of`), as
sentence-transformers pads each batch to its longest.

Signatures:

* ``serving_default``: ``text`` [B] string -> ``embedding`` [B, H] float32 (pooled as the model says, unit
  L2 norm when the model normalises), ``num_tokens`` [B] int32: the text's wordpieces before truncation — 0 for
  an empty or whitespace-only text (embedded as ``[CLS] [SEP]``, as sentence-transformers does), more than
  ``max_seq_length - 2`` for a text whose tail was cut.
* ``similarity``: ``text_a``, ``text_b`` [B] -> ``similarity`` [B] float32, the cosine of the two texts'
  embeddings.

A windowed embedder (``max_windows`` > 1) embeds each text of both signatures over its sliding windows
(`bert_tf.tasks.embedding.model`); ``serving_default`` also returns ``windows_needed`` [B] int32, the windows that
cover the whole text (more than ``max_windows``: its tail was not read), and the metadata records ``max_windows``,
``window_stride``, ``window_pooling``.

Example:

>>> path = export_embedder(embedder, "/tmp/models/minilm")                  # doctest: +SKIP
>>> import tensorflow as tf, tensorflow_text                                # doctest: +SKIP
>>> m = tf.saved_model.load(path)                                           # doctest: +SKIP
>>> m.signatures["similarity"](text_a=tf.constant(["a cat"]), text_b=tf.constant(["a kitten"]))  # doctest: +SKIP
"""

import tensorflow as tf

from bert_tf.export.saved_model import DEFAULT_WARMUP_TEXTS, export_signatures
from bert_tf.tasks.embedding.ops import cosine_similarity
from bert_tf.text import windows as windows_lib


def _embedder_endpoints(model, pre):
    length = pre.seq_length

    def embed(text):
        if model.is_windowed:
            _, num_tokens = pre.tokenizer.tokenize_dense(text, width=1)  # the whole text's count, for the caller
            return model(model.window_features(text, pre)[0], training=False), num_tokens
        ids, num_tokens = pre.tokenizer.tokenize_dense(text, width=length)
        return model(pre.packer.pack_dense(ids, num_tokens, seq_length=length), training=False), num_tokens

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serving_default(text):
        embedding, num_tokens = embed(text)
        outputs = {"embedding": embedding, "num_tokens": num_tokens}
        if model.is_windowed:
            outputs["windows_needed"] = windows_lib.windows_needed(num_tokens, length, model.window_stride)
        return outputs

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text_a"),
                                  tf.TensorSpec([None], tf.string, name="text_b")])
    def similarity(text_a, text_b):
        tf.debugging.assert_equal(tf.size(text_a), tf.size(text_b),
                                  message="similarity: text_a and text_b must hold as many texts")
        # One encoder call over both sides: half the calls, one padding width.
        embeddings, _ = embed(tf.concat([text_a, text_b], 0))
        a, b = tf.split(embeddings, 2)
        return {"similarity": cosine_similarity(a, b)}

    return [("serving_default", serving_default), ("similarity", similarity)]


def export_embedder(model, export_base, version=None, task=None, pad_to_multiple_of=8, warmup_texts=None,
                    overwrite=False):
    """Exports a `BertSentenceEmbedder` for serving; returns the version dir.

    Args:
      model: a `BertSentenceEmbedder` with its preprocessor (its `seq_length` truncates).
      export_base: model base dir; the export goes to ``<export_base>/<version>``.
      version: integer version; default: one more than the largest present.
      task: task name, recorded in the metadata.
      pad_to_multiple_of: each request is padded to its longest text, rounded up to this.
      warmup_texts: texts for the warmup requests.
      overwrite: replace an existing version dir (atomically swapped).
    """
    if model.preprocessor is None:
        raise ValueError("export_embedder needs a BertSentenceEmbedder with its preprocessor")
    pre = model.preprocessor.with_padding(dynamic_padding=True, pad_to_multiple_of=pad_to_multiple_of,
                                          name="serving_preprocessor")
    texts = list(warmup_texts or DEFAULT_WARMUP_TEXTS)
    model(model.features(tf.constant(texts[:1]), pre), training=False)  # variables exist before tracing
    endpoints = _embedder_endpoints(model, pre)
    pairs_b = texts[1:] + texts[:1]
    warmup = [("serving_default", {"text": texts}), ("similarity", {"text_a": texts, "text_b": pairs_b})]
    metadata = {
        "format": "bert_tf sentence embedder",
        "task": task or model.task_kind,
        "pooling": model.pooling,
        "normalize": model.normalize,
        "embedding_size": model.embedding_size,
        "signatures": [name for name, _ in endpoints],
        "max_seq_length": pre.seq_length,
        "lower_case": pre.lower_case,
        "dynamic_padding": True,
        "pad_to_multiple_of": pad_to_multiple_of,
        **({"max_windows": model.max_windows, "window_stride": model.window_stride,
            "window_pooling": model.window_pooling} if model.is_windowed else {}),
    }
    return export_signatures(export_base, endpoints, warmup, metadata, version=version, overwrite=overwrite)
