"""Sentence (pair) classification and regression: GLUE and your own TSV/CSV.

task.py `SentencePredictionTask` · model.py `BertClassifier` · data.py GLUE/tsv/csv readers · metrics.py GLUE's
official metrics · export.py serving SavedModel · litert.py .tflite ·
keras_hub.py keras-hub BertTextClassifier presets."""

from bert_tf.tasks.classification.model import BertClassifier  # noqa: F401
# Registers BertClassifier <-> keras-hub's BertTextClassifier presets (read and written by model/keras_hub_preset).
from bert_tf.tasks.classification import keras_hub  # noqa: F401,E402
from bert_tf.tasks.classification.task import SentencePredictionTask  # noqa: F401
