"""Multiple choice (SWAG, HellaSwag, ARC-style): a context, an optional question, N options, one score each.

task.py `MultipleChoiceTask` · model.py `BertMultipleChoice` · data.py .jsonl/.csv readers · metrics.py accuracy ·
export.py serving SavedModel (context, question, options -> choice, probabilities)."""

from bert_tf.tasks.multiple_choice.model import BertMultipleChoice  # noqa: F401
from bert_tf.tasks.multiple_choice.task import MultipleChoiceTask  # noqa: F401
