"""Serving export of a `bert_tf.BertQuestionAnswerer`: raw question + context in, answer text out.

`export_question_answerer(model, export_base)` writes ``<export_base>/<version>/``
(atomically, like `bert_tf.tasks.classification.export.export_classifier`), a SavedModel with the
tokenizer, the windowing, the encoder, the span head and Google's answer
selection inside. Signatures (`keras.export.ExportArchive`, which TF
Serving's session-based loader accepts):

* ``serving_default``: ``question``, ``context`` string [B] -> ``answer``
  string [B], ``start``/``end`` int32 [B] (Unicode code-point offsets, so
  ``context[start:end] == answer`` in Python; -1 when there is no answer),
  ``score`` float32 [B] (start + end logit of the answer), and for SQuAD v2.0
  models ``has_answer`` bool [B] and ``null_score_diff`` float32 [B]. Long
  contexts are windowed with the model's doc stride and the best span over
  all windows wins, as in `--do_predict`.
* ``window_logits``: the same inputs -> per window (F windows, T tokens):
  ``start_logits``/``end_logits`` [F, T] (padding: -1e9),
  ``example_index`` [F], ``token_char_start``/``token_char_end`` [F, T]
  (code points of each token's word in its context, -1 off the context),
  ``token_is_max_context`` [F, T], ``input_word_ids`` [F, T]: for users who
  post-process themselves.

Warmup records for both signatures and the metadata record
(``assets.extra/bert_tf_export.json``) are written; the export is checked
with `bert_tf.check_serving_ops` (TF Serving 2.12+ op set) before the rename.

>>> path = export_question_answerer(model, "/tmp/models/squad")              # doctest: +SKIP
>>> m = tf.saved_model.load(path)                                            # doctest: +SKIP
>>> m.serving_default(question=tf.constant(["Who?"]), context=tf.constant(["Ann came."]))["answer"]  # doctest: +SKIP
"""

import tensorflow as tf

from bert_tf.export.saved_model import export_signatures

WARMUP = {
    "question": ["Where is the café?", "Who wrote it?"],
    "context": ["The café is in Zürich, near the lake. 北京 is far away.", "It was written by Ann in 1990."],
}


def _endpoints(model):
    spec = [tf.TensorSpec([None], tf.string, name="question"), tf.TensorSpec([None], tf.string, name="context")]

    @tf.function(input_signature=spec)
    def serving_default(question, context):
        return model.answer(question, context)

    @tf.function(input_signature=spec)
    def window_logits(question, context):
        windows = model.featurize(question, context)
        logits = model.window_logits(windows)
        return {"start_logits": logits["start_logits"], "end_logits": logits["end_logits"],
                "example_index": windows["example_index"], "token_char_start": windows["token_char_start"],
                "token_char_end": windows["token_char_end"],
                "token_is_max_context": windows["token_is_max_context"],
                "input_word_ids": windows["input_word_ids"]}

    return [("serving_default", serving_default), ("window_logits", window_logits)]


def export_question_answerer(model, export_base, version=None, task="squad", overwrite=False):
    """Exports a `BertQuestionAnswerer` for serving; returns the version directory."""
    model.answer(tf.constant(WARMUP["question"][:1]), tf.constant(WARMUP["context"][:1]))  # variables exist
    endpoints = _endpoints(model)
    pre = model.preprocessor
    metadata = {
        "format": "bert_tf question answerer",
        "task": task,
        "signatures": [name for name, _ in endpoints],
        "inputs": ["question", "context"],
        "version_2_with_negative": model.version_2_with_negative,
        "max_seq_length": model.seq_length,
        "max_query_length": model.max_query_length,
        "doc_stride": model.doc_stride,
        "n_best_size": model.n_best_size,
        "max_answer_length": model.max_answer_length,
        "null_score_diff_threshold": model.null_score_diff_threshold,
        "lower_case": pre.lower_case,
        "offsets": "Unicode code points into the context (invalid UTF-8 bytes dropped first)",
    }

    return export_signatures(export_base, endpoints, [(name, WARMUP) for name, _ in endpoints], metadata,
                             version=version, overwrite=overwrite)
