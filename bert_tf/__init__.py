"""bert_tf: BERT for TensorFlow 2 / Keras 3, from raw text to a served model.

`import bert_tf` registers the library's Keras classes (tokenizer, packer,
preprocessor, encoder, task models, optimizers), so that
`keras.saving.load_model("model.keras")` finds them, as `import keras_hub`
does for its models. Other public names are imported when first used.
"""

import importlib

# Modules whose classes saved models name (keras.saving.register_keras_serializable). The registered names
# ("bert_tf>BertClassifier", ...) do not depend on the module path, so files saved before the layout moved load.
from bert_tf.pretraining import pretrainer  # noqa: E402,F401
from bert_tf.model import encoder  # noqa: E402,F401
from bert_tf.tasks.classification import model as _classifier_model  # noqa: E402,F401
from bert_tf.tasks.question_answering import model as _question_answering_model  # noqa: E402,F401
from bert_tf.tasks.tagging import model as _tagging_model  # noqa: E402,F401
from bert_tf.text import packer, preprocessor, tokenizer  # noqa: E402,F401
from bert_tf.training import optimization  # noqa: E402,F401

# public name -> module (relative to this package) that defines it
_EXPORTS = {
    # preprocessing (tensorflow-text ops, in the graph): tokenizer + packer = preprocessor
    "BertTokenizer": "text.tokenizer",
    "BertPacker": "text.packer",
    "BertPreprocessor": "text.preprocessor",
    "load_vocab": "text.tokenizer",
    # SavedModel op checks (TF Serving compatibility)
    "list_custom_ops": "export.serving_ops",
    "check_serving_ops": "export.serving_ops",
    "TF_SERVING_CUSTOM_OPS": "export.serving_ops",
    # encoder and checkpoints
    "BertConfig": "model.config",
    "BertEncoder": "model.encoder",
    "from_pretrained": "model.checkpoints",
    "save_pretrained": "model.checkpoints",
    "save_tf1_checkpoint": "model.checkpoints",
    "save_keras_hub_preset": "model.keras_hub_preset",
    "save_model_garden_checkpoint": "model.model_garden",
    # task models (encoder + preprocessor + head) and their serving export
    "BertClassifier": "tasks.classification.model",
    "BertTokenTagger": "tasks.tagging.model",
    "BertQuestionAnswerer": "tasks.question_answering.model",
    "export_question_answerer": "tasks.question_answering.export",
    "export_classifier": "tasks.classification.export",
    "export_tagger": "tasks.tagging.export",
    # LiteRT (.tflite with the tokenizer inside) for devices and single-request CPU serving
    "export_litert": "tasks.classification.litert",
    "LiteRTClassifier": "tasks.classification.litert",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bert_tf' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
