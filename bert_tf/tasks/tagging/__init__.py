"""Token tagging (named entities) on CoNLL files.

task.py `TaggingTask` · model.py `BertTokenTagger` · ops.py the in-graph word packing, chunking and entity
decoding · data.py CoNLL files and tag schemes · metrics.py conlleval · export.py serving SavedModel ·
litert.py .tflite."""

from bert_tf.tasks.tagging.model import BertTokenTagger  # noqa: F401
from bert_tf.tasks.tagging.task import TaggingTask  # noqa: F401
