"""Serving export of a `bert_tf.BertTokenTagger`: raw text in, entity spans out.

`export_tagger(model, export_base)` writes `<export_base>/<version>/` atomically
(like `bert_tf.tasks.classification.export.export_classifier`), with one signature:

* ``serving_default``: ``text`` [B] string -> ``entity_text``, ``entity_type``
  [B, E] string (padded ""), ``entity_start``, ``entity_end`` [B, E] int64
  (Unicode code-point offsets into the input, so ``text[start:end] ==
  entity_text``; -1 padding), ``entity_score`` [B, E] float32 (mean probability
  of the entity's tags; 0 padding), and the word-level view ``words``,
  ``tags`` [B, W] string (padded "").

Words are split by Google's BERT basic tokenization rules in the graph; long
texts are tagged in chunks of `seq_length - 2` pieces that are put back
together. Warmup records and the metadata record (`assets.extra/`) are written
as for classifiers, and the ops are checked against TF Serving 2.12+.

Example::

    path = export_tagger(tagger, "/tmp/models/ner")
    m = tf.saved_model.load(path)
    m.signatures["serving_default"](text=tf.constant(["John lives in Paris."]))["entity_text"]
"""

import tensorflow as tf

from bert_tf.export.saved_model import DEFAULT_WARMUP_TEXTS, export_signatures


def export_tagger(model, export_base, version=None, task=None, warmup_texts=None, overwrite=False):
    """Exports a `BertTokenTagger` for serving; returns the version dir (see the module docstring)."""
    model.build()
    texts = list(warmup_texts or DEFAULT_WARMUP_TEXTS)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serving_default(text):
        return model.tag_text(text)

    metadata = {
        "format": "bert_tf token tagger",
        "task": task,
        "labels": list(model.labels),
        "tag_scheme": model.tag_scheme,
        "signatures": ["serving_default"],
        "max_seq_length": model.preprocessor.seq_length,
        "lower_case": model.preprocessor.lower_case,
    }

    return export_signatures(export_base, [("serving_default", serving_default)],
                             [("serving_default", {"text": texts})], metadata, version=version, overwrite=overwrite)
