"""Sentence (pair) classification and regression: GLUE and your own TSV/CSV.

task.py `SentencePredictionTask` · model.py `BertClassifier` · data.py GLUE/tsv/csv readers · metrics.py GLUE's
official metrics · export.py serving SavedModel · litert.py .tflite."""

from bert_tf.tasks.classification.model import BertClassifier  # noqa: F401
from bert_tf.tasks.classification.task import SentencePredictionTask  # noqa: F401
