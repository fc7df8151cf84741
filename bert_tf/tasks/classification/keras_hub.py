"""`BertClassifier` <-> keras-hub's `BertTextClassifier` preset: the classification half of keras-hub presets.

keras-hub's `BertTextClassifier` is dropout and one dense layer on the backbone's ``pooled_output`` giving logits
(``activation=None``): exactly our `BertClassifier` head, so the head maps one to one. `bert_tf.model.
keras_hub_preset` (backbones and tokenizers only) reads and writes such presets through the `KerasHubTask`
registered here: `from_pretrained(preset)` returns the head as ``extra_weights`` ``output_weights`` [C, H] /
``output_bias`` [C] (Google's names, what `BertClassifier.load_head_weights` takes) and
`bert_tf.save_keras_hub_preset(classifier, dir)` writes a preset that
`keras_hub.models.BertTextClassifier.from_preset(dir)` loads.
"""

import logging

import keras_hub
import numpy as np

from bert_tf.model import keras_hub_preset
from bert_tf.tasks.classification.model import BertClassifier

logger = logging.getLogger(__name__)

REGISTERED_NAME = "keras_hub>BertTextClassifier"


def to_keras_hub(model, backbone, tokenizer):
    """A `keras_hub.models.BertTextClassifier` equal to ``model`` (head, preprocessor, sequence length)."""
    if model.is_windowed:
        raise ValueError(f"a BertClassifier over sliding windows (max_windows={model.max_windows}) has no keras-hub "
                         "form: BertTextClassifier classifies the first window only")
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer, sequence_length=model.preprocessor.seq_length)
    task = keras_hub.models.BertTextClassifier(backbone, num_classes=model.num_classes, preprocessor=preprocessor,
                                               activation=None, dropout=model.dropout_rate)
    kernel, bias = model.head.get_weights()
    task.get_layer("logits").set_weights([kernel, bias])
    return task


def read_head(preset_dir, task_path, task_config):
    """The preset's backbone and its classifier head under Google's names."""
    classifier = keras_hub.models.BertTextClassifier.from_preset(preset_dir, load_weights=True)
    if task_config.get("activation") not in (None, "linear"):
        logger.warning("%s: the classifier's logits pass through %r in keras-hub; bert_tf's head outputs the logits "
                       "before it", task_path, task_config["activation"])
    kernel, bias = classifier.get_layer("logits").get_weights()
    return classifier.backbone, {"output_weights": np.ascontiguousarray(kernel.T), "output_bias": bias}


keras_hub_preset.register_task(keras_hub_preset.KerasHubTask(
    model_class=BertClassifier, registered_name=REGISTERED_NAME, to_keras_hub=to_keras_hub, read_head=read_head))
