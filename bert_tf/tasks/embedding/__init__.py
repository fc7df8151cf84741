"""Sentence embeddings and semantic search.

task.py `EmbeddingTask` · model.py `BertSentenceEmbedder` (+ sentence-transformers settings) · data.py scored
pairs and text pairs · metrics.py Spearman/Pearson of cosine vs gold · export.py serving SavedModel · ops.py
cosine math."""

from bert_tf.tasks.embedding.model import BertSentenceEmbedder, sentence_transformers_settings  # noqa: F401
