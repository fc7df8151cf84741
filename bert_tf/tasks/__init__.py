"""Fine-tuning tasks: each supplies its model, data, loss, metrics, predictions and export to
`bert_tf.finetuning.run`. `SentencePredictionTask` covers classification and regression, `TaggingTask`
token tagging (named entities),
`QuestionAnsweringTask` extractive question answering (SQuAD v1.1 / v2.0)."""

from bert_tf.tasks.base import FinetuningTask
from bert_tf.tasks.question_answering import QuestionAnsweringTask
from bert_tf.tasks.sentence_prediction import SentencePredictionTask
from bert_tf.tasks.tagging import TaggingTask

__all__ = ["FinetuningTask", "QuestionAnsweringTask", "SentencePredictionTask", "TaggingTask"]
