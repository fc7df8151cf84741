"""bert_tf: BERT for TensorFlow 2 / Keras 3, from raw text to a served model.

`import bert_tf` registers the library's Keras classes (tokenizer, packer,
preprocessor, encoder, task models, optimizers), so that
`keras.saving.load_model("model.keras")` finds them, as `import keras_hub`
does for its models. Other public names are imported when first used.
"""

import importlib

# Modules whose classes saved models name (keras.saving.register_keras_serializable).
from bert_tf import (classifier, encoder, optimization, packer, preprocessor, pretraining,  # noqa: E402,F401
                     question_answerer, tagger, tokenizer)

# public name -> module (relative to this package) that defines it
_EXPORTS = {
    # preprocessing (tensorflow-text ops, in the graph): tokenizer + packer = preprocessor
    "BertTokenizer": "tokenizer",
    "BertPacker": "packer",
    "BertPreprocessor": "preprocessor",
    "load_vocab": "tokenizer",
    # SavedModel op checks (TF Serving compatibility)
    "list_custom_ops": "saved_model_ops",
    "check_serving_ops": "saved_model_ops",
    "TF_SERVING_CUSTOM_OPS": "saved_model_ops",
    # encoder and checkpoints
    "BertConfig": "config",
    "BertEncoder": "encoder",
    "from_pretrained": "checkpoints",
    "save_pretrained": "checkpoints",
    "save_tf1_checkpoint": "checkpoints",
    # task models (encoder + preprocessor + head) and their serving export
    "BertClassifier": "classifier",
    "BertTokenTagger": "tagger",
    "BertQuestionAnswerer": "question_answerer",
    "export_question_answerer": "question_answering_export",
    "export_classifier": "export",
    # LiteRT (.tflite with the tokenizer inside) for devices and single-request CPU serving
    "export_litert": "litert",
    "LiteRTClassifier": "litert",
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
