"""Official metrics of sentence-embedding similarity (STS-style): Spearman and Pearson correlation of the
cosine similarity of the two texts' embeddings with the gold scores (sentence-transformers'
EmbeddingSimilarityEvaluator reports the same `spearman` of cosines). The correlations are GLUE's STS-B ones
(`bert_tf.tasks.classification.metrics`: ties take their average rank)."""

import numpy as np

from bert_tf.tasks.classification.metrics import pearson, spearman


def similarity_metrics(cosines, scores):
    """{"spearman", "pearson"} of predicted cosines against gold scores (float)."""
    cosines, scores = np.asarray(cosines, np.float64), np.asarray(scores, np.float64)
    if cosines.shape != scores.shape or cosines.ndim != 1:
        raise ValueError(f"cosines {cosines.shape} and scores {scores.shape} must be equal 1-D arrays")
    return {"spearman": float(spearman(cosines, scores)), "pearson": float(pearson(cosines, scores))}
