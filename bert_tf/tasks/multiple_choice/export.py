"""The serving SavedModel of a `BertMultipleChoice`: raw context, question and options in; the choice out.

`export_multiple_choice(model, export_base)` writes ``<export_base>/<version>/`` with the preprocessor inside
(`bert_tf.export.saved_model.export_signatures`: `keras.export.ExportArchive`, which TF Serving's session loader
accepts; warmup records; the metadata record; ops checked against TF Serving 2.12+; atomic rename).

Signatures:

* ``serving_default``: ``context`` [B] string, ``question`` [B] string ("" where there is none), ``options``
  [B, N] string -> ``choice`` [B] int64 (the index of the best option) and ``probabilities`` [B, N] float32.
* ``without_question``: ``context`` [B], ``options`` [B, N] -> the same (SWAG-style items with no question).

Items with fewer options are padded with "" up to N (a ragged list as a padded tensor, what TF Serving's REST
and gRPC take): an option that is empty or only whitespace gets probability 0 and is never chosen; an item whose
options are all empty gets ``choice`` -1 and probabilities all 0. A context of only whitespace packs the question
as the first segment instead (ARC-style items).

>>> path = export_multiple_choice(model, "/tmp/models/swag", task="multiple_choice")   # doctest: +SKIP
>>> m = tf.saved_model.load(path)                                                        # doctest: +SKIP
>>> m.serving_default(context=tf.constant(["He opens the fridge."]), question=tf.constant(["He"]),
...                   options=tf.constant([["takes the milk.", "flies away.", ""]]))["choice"]  # doctest: +SKIP
"""

import tensorflow as tf

from bert_tf.export.saved_model import export_signatures

WARMUP_ITEMS = (
    ("A man is sitting on a roof.", "he", ("starts pulling up roofing on a roof.", "is holding a rubik's cube.")),
    ("Water boils at 100 degrees Celsius at sea level, café 北京!", "At what temperature does water boil?",
     ("100 degrees Celsius", "")),
)


def _endpoints(model, pre):
    context_spec = tf.TensorSpec([None], tf.string, name="context")
    options_spec = tf.TensorSpec([None, None], tf.string, name="options")

    def choose(context, question, options):
        outputs = model.choose(context, question, options, preprocessor=pre)
        return {"choice": outputs["choice"], "probabilities": tf.cast(outputs["probabilities"], tf.float32)}

    @tf.function(input_signature=[context_spec, tf.TensorSpec([None], tf.string, name="question"), options_spec])
    def serving_default(context, question, options):
        return choose(context, question, options)

    @tf.function(input_signature=[context_spec, options_spec])
    def without_question(context, options):
        return choose(context, tf.zeros_like(context), options)

    return [("serving_default", serving_default), ("without_question", without_question)]


def export_multiple_choice(model, export_base, version=None, task=None, pad_to_multiple_of=8, overwrite=False):
    """Exports a `BertMultipleChoice` for serving; returns the version dir (see the module docstring)."""
    if model.preprocessor is None:
        raise ValueError("export_multiple_choice needs a BertMultipleChoice with its preprocessor")
    pre = model.preprocessor.with_padding(dynamic_padding=True, pad_to_multiple_of=pad_to_multiple_of,
                                          name="serving_preprocessor")
    contexts = [c for c, _, _ in WARMUP_ITEMS]
    questions = [q for _, q, _ in WARMUP_ITEMS]
    options = [list(o) for _, _, o in WARMUP_ITEMS]
    model.choose(tf.constant(contexts), tf.constant(questions), tf.constant(options), preprocessor=pre)
    option_bytes = [[o.encode("utf-8") for o in row] for row in options]  # rows of a [B, N] tensor proto
    warmup = [("serving_default", {"context": contexts, "question": questions, "options": option_bytes}),
              ("without_question", {"context": contexts, "options": option_bytes})]
    metadata = {
        "format": "bert_tf multiple choice",
        "task": task or model.task_kind,
        "num_choices": model.num_choices,
        "signatures": ["serving_default", "without_question"],
        "inputs": {"context": "[B] string", "question": "[B] string", "options": "[B, N] string, \"\" = no option"},
        "outputs": {"choice": "[B] int64 (-1: no option given)", "probabilities": "[B, N] float32"},
        "max_seq_length": pre.seq_length,
        "lower_case": pre.lower_case,
        "dynamic_padding": True,
        "pad_to_multiple_of": pad_to_multiple_of,
    }
    return export_signatures(export_base, _endpoints(model, pre), warmup, metadata, version=version,
                             overwrite=overwrite)
