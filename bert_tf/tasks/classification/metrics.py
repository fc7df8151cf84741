"""The official GLUE metrics, in NumPy.

* CoLA: Matthews correlation coefficient (``mcc``).
* STS-B: Pearson and Spearman correlation (``pearson``, ``spearman``; ``corr`` is their mean).
* MRPC, QQP: F1 of the positive class "1" and accuracy (``f1``, ``accuracy``; ``acc_and_f1`` their mean).
* MNLI: accuracy on the matched and mismatched dev sets (the trainer reports
  ``accuracy`` / ``matched_accuracy`` and ``mismatched_accuracy``).
* every other task: ``accuracy``.

Classification metrics take integer class ids; regression metrics floats.
Degenerate inputs follow scikit-learn/scipy: MCC and F1 are 0.0 when undefined;
a correlation with a constant input is ``nan``.

>>> import numpy as np
>>> from bert_tf import metrics
>>> metrics.task_metrics("mrpc", np.array([1, 0, 1, 1]), np.array([1, 0, 0, 1]))
{'accuracy': 0.75, 'f1': 0.8, 'acc_and_f1': 0.775}
>>> round(metrics.matthews_corrcoef([1, 0, 1, 1], [1, 0, 0, 1]), 4)
0.5774
"""

import numpy as np

def _as_1d(x, name, dtype=None):
    a = np.asarray(x, dtype=dtype)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    return a


def _pair(predictions, labels, dtype=None):
    p = _as_1d(predictions, "predictions", dtype)
    y = _as_1d(labels, "labels", dtype)
    if p.shape != y.shape:
        raise ValueError(f"predictions {p.shape} and labels {y.shape} differ in length")
    if p.size == 0:
        raise ValueError("no predictions to score")
    return p, y


def accuracy(predictions, labels):
    """Fraction of ``predictions`` equal to ``labels``."""
    p, y = _pair(predictions, labels)
    return float(np.mean(p == y))


def f1_score(predictions, labels, positive=1):
    """F1 of the class ``positive`` (0.0 when there are no true or predicted positives)."""
    p, y = _pair(predictions, labels)
    tp = np.sum((p == positive) & (y == positive))
    fp = np.sum((p == positive) & (y != positive))
    fn = np.sum((p != positive) & (y == positive))
    denom = 2 * tp + fp + fn
    return float(2 * tp / denom) if denom else 0.0


def matthews_corrcoef(predictions, labels):
    """Matthews correlation coefficient, multi-class form (Gorodkin's R_K); 0.0 when undefined."""
    p, y = _pair(predictions, labels)
    classes, inv = np.unique(np.concatenate([y, p]), return_inverse=True)
    k = len(classes)
    yi, pi = inv[: len(y)], inv[len(y):]
    cm = np.zeros((k, k), dtype=np.float64)
    np.add.at(cm, (yi, pi), 1.0)
    t = cm.sum(axis=1)  # true counts per class
    q = cm.sum(axis=0)  # predicted counts per class
    c = np.trace(cm)
    s = cm.sum()
    cov_yp = c * s - t @ q
    cov_pp = s * s - q @ q
    cov_yy = s * s - t @ t
    denom = np.sqrt(cov_pp * cov_yy)
    return float(cov_yp / denom) if denom > 0 else 0.0


def pearson(predictions, labels):
    """Pearson correlation coefficient (``nan`` if either input is constant)."""
    p, y = _pair(predictions, labels, np.float64)
    pc, yc = p - p.mean(), y - y.mean()
    denom = np.sqrt(np.sum(pc * pc) * np.sum(yc * yc))
    if denom == 0:
        return float("nan")
    return float(np.clip(np.sum(pc * yc) / denom, -1.0, 1.0))


def _rank(a):
    """Ranks from 1, ties given their average rank (scipy.stats.rankdata 'average')."""
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    ranks = np.empty(len(a), dtype=np.float64)
    # boundaries of runs of equal values
    starts = np.concatenate([[True], sorted_a[1:] != sorted_a[:-1]])
    idx = np.flatnonzero(starts)
    ends = np.concatenate([idx[1:], [len(a)]])
    avg = (idx + ends - 1) / 2.0 + 1.0
    run_id = np.cumsum(starts) - 1
    ranks[order] = avg[run_id]
    return ranks


def spearman(predictions, labels):
    """Spearman rank correlation (Pearson of average ranks)."""
    p, y = _pair(predictions, labels, np.float64)
    return pearson(_rank(p), _rank(y))


def task_metrics(name, predictions, labels, regression=False):
    """All official metrics of the task `name` for class ids (or regression values) vs labels.

    Returns a dict keyed by metric name: ``accuracy`` always for classification; ``mcc`` for ``cola`` (and
    ``ax``); ``f1`` and ``acc_and_f1`` for ``mrpc``/``qqp``; ``pearson``, ``spearman`` and ``corr`` for a
    regression task (``stsb``, a regression tsv/csv task). Which of them ranks checkpoints is the data task's
    ``main_metric`` (`bert_tf.tasks.classification.data`).
    """
    if regression:
        pr, sp = pearson(predictions, labels), spearman(predictions, labels)
        return {"pearson": pr, "spearman": sp, "corr": (pr + sp) / 2.0}
    out = {"accuracy": accuracy(predictions, labels)}
    if name in ("cola", "ax"):
        out["mcc"] = matthews_corrcoef(predictions, labels)
    if name in ("mrpc", "qqp"):
        out["f1"] = f1_score(predictions, labels)
        out["acc_and_f1"] = (out["accuracy"] + out["f1"]) / 2.0
    return out
