"""The official metric of SWAG, HellaSwag, ARC and the like: accuracy, the fraction of items whose highest-scored
option is the gold one.

>>> import numpy as np
>>> from bert_tf.tasks.multiple_choice import metrics
>>> metrics.choice_metrics(np.array([0, 2, 1, 3]), np.array([0, 2, 2, 3]))
{'accuracy': 0.75}
"""

import numpy as np


def choice_metrics(choices, labels):
    """{"accuracy"} of predicted option indices `choices` [n] against gold indices `labels` [n]."""
    choices, labels = np.asarray(choices).reshape(-1), np.asarray(labels).reshape(-1)
    if choices.shape != labels.shape:
        raise ValueError(f"{choices.size} predictions for {labels.size} labels")
    if choices.size == 0:
        raise ValueError("no predictions to score")
    return {"accuracy": float(np.mean(choices == labels))}
