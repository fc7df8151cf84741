"""Fine-tuning tasks, one folder each (task, model, data, metrics, export, litert): each supplies its model, data,
loss, metrics, predictions and exports to `bert_tf.training.finetuning.run`. `SentencePredictionTask`
(classification/) covers classification, regression and, with `--multi_label`, multi-label classification;
`TaggingTask` (tagging/) token tagging (named entities); `QuestionAnsweringTask` (question_answering/) extractive
question answering (SQuAD v1.1 / v2.0); `EmbeddingTask` (embedding/) sentence embeddings (sentence-transformers
models, contrastive or cosine fine-tuning); `MultipleChoiceTask` (multiple_choice/) SWAG/HellaSwag/ARC-style choices.

`TASKS` maps each `--task` name to its task class (its `config_class` settings become `trainers/finetune.py`'s
flags): a new task is a new folder and one line here.
"""

from bert_tf.tasks.base import FinetuningTask
from bert_tf.tasks.classification import SentencePredictionTask
from bert_tf.tasks.classification import data as glue
from bert_tf.tasks.embedding.task import EmbeddingTask
from bert_tf.tasks.multiple_choice import MultipleChoiceTask
from bert_tf.tasks.question_answering import QuestionAnsweringTask
from bert_tf.tasks.tagging import TaggingTask
from bert_tf.training.settings import ConfigError

TASKS = {
    **dict.fromkeys(glue.TASK_NAMES, SentencePredictionTask),  # GLUE tasks, tsv, csv
    "tagging": TaggingTask,
    "squad": QuestionAnsweringTask,
    "embedding": EmbeddingTask,
    "multiple_choice": MultipleChoiceTask,
}


def task_class(name):
    """The task class that `--task=name` names (GLUE names in any spelling, e.g. "SST-2")."""
    if name in TASKS:
        return TASKS[name]
    try:
        return TASKS[glue.canonical_task_name(name)]
    except ValueError:
        raise ConfigError(f"unknown --task={name!r}; known: {', '.join(TASKS)} (GLUE names in any "
                          "spelling)") from None


__all__ = ["TASKS", "EmbeddingTask", "FinetuningTask", "MultipleChoiceTask", "QuestionAnsweringTask",
           "SentencePredictionTask", "TaggingTask", "task_class"]
