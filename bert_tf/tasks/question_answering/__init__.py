"""Extractive question answering (SQuAD v1.1 / v2.0).

task.py `QuestionAnsweringTask` · model.py `BertQuestionAnswerer` (windows, labels and best span in the graph) ·
data.py the SQuAD reader, Google's n-best rules and prediction files · metrics.py the official evaluation ·
export.py serving SavedModel."""

from bert_tf.tasks.question_answering.model import BertQuestionAnswerer  # noqa: F401
from bert_tf.tasks.question_answering.task import QuestionAnsweringTask  # noqa: F401
