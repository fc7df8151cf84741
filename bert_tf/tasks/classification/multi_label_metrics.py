"""Multi-label metrics and decision thresholds, in NumPy.

Inputs are 0/1 (or boolean) matrices ``[N, C]``: the predicted label sets and the true ones, label j in column j.

* ``micro_f1``: F1 of all (example, label) decisions pooled — 2·TP / (2·TP + FP + FN) over the whole matrix;
* ``macro_f1``: the mean of the per-label F1s (``f1_<label>``), each 0.0 when the label is neither true nor
  predicted anywhere (scikit-learn's ``zero_division=0``);
* ``exact_match``: the fraction of examples whose predicted set equals the true set (scikit-learn's subset
  accuracy; an empty true set predicted empty counts as a match).

Thresholds: `tune_thresholds(probabilities, labels)` picks, on a dev set, the probability cut of each label that
maximises that label's F1 and one global cut that maximises micro F1, both from the grid 0.01, 0.02, ..., 0.99
(ties go to the cut nearest 0.5, so a flat stretch keeps the conventional cut). A label with fewer than
`MIN_POSITIVES` true examples in the dev set keeps the global cut: its own would be fitted to a handful of rows.

>>> import numpy as np
>>> from bert_tf.tasks.classification import multi_label_metrics as m
>>> y = np.array([[1, 0], [1, 1], [0, 0]]); p = np.array([[1, 0], [1, 0], [0, 1]])
>>> {k: round(v, 4) for k, v in m.multi_label_metrics(p, y, ["A", "B"]).items()}
{'micro_f1': 0.5714, 'macro_f1': 0.5, 'exact_match': 0.3333, 'f1_A': 1.0, 'f1_B': 0.0}
"""

import numpy as np

THRESHOLD_GRID = np.round(np.arange(1, 100) / 100.0, 2)
MIN_POSITIVES = 5


def _matrices(predictions, labels):
    p, y = np.asarray(predictions).astype(bool), np.asarray(labels).astype(bool)
    if p.ndim != 2 or p.shape != y.shape:
        raise ValueError(f"predictions {p.shape} and labels {y.shape} must be the same [examples, labels] shape")
    if p.shape[0] == 0:
        raise ValueError("no predictions to score")
    return p, y


def _f1(tp, fp, fn):
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def per_label_f1(predictions, labels):
    """F1 of each label (column) [C] (0.0 where a label is neither true nor predicted)."""
    p, y = _matrices(predictions, labels)
    tp, fp, fn = (p & y).sum(0), (p & ~y).sum(0), (~p & y).sum(0)
    return _f1(tp, fp, fn).astype(np.float64)


def micro_f1(predictions, labels):
    p, y = _matrices(predictions, labels)
    return float(_f1((p & y).sum(), (p & ~y).sum(), (~p & y).sum()))


def exact_match(predictions, labels):
    p, y = _matrices(predictions, labels)
    return float(np.mean(np.all(p == y, axis=1)))


def multi_label_metrics(predictions, labels, label_names):
    """``micro_f1``, ``macro_f1``, ``exact_match`` and ``f1_<label>`` of each label."""
    per_label = per_label_f1(predictions, labels)
    if len(label_names) != len(per_label):
        raise ValueError(f"{len(label_names)} label names for {len(per_label)} label columns")
    out = {"micro_f1": micro_f1(predictions, labels), "macro_f1": float(per_label.mean()),
           "exact_match": exact_match(predictions, labels)}
    out.update({f"f1_{name}": float(f) for name, f in zip(label_names, per_label)})
    return out


def _best_cut(scores):
    """The grid cut with the highest score; ties go to the cut nearest 0.5."""
    scores = np.asarray(scores)
    best = np.flatnonzero(scores >= scores.max() - 1e-12)
    return float(THRESHOLD_GRID[best[np.argmin(np.abs(THRESHOLD_GRID[best] - 0.5))]])


def tune_thresholds(probabilities, labels, min_positives=MIN_POSITIVES):
    """(per-label cuts [C], global cut, {"kept_global": labels indices that kept the global cut}) from dev
    probabilities [N, C] and true sets [N, C]: see the module docstring."""
    probabilities = np.asarray(probabilities, np.float64)
    _, y = _matrices(probabilities > 0.5, labels)
    counts = np.zeros((3, len(THRESHOLD_GRID), y.shape[1]), np.int64)  # TP, FP, FN of each cut and label
    for g, cut in enumerate(THRESHOLD_GRID):  # one cut at a time: memory stays [N, C]
        decided = probabilities >= cut
        counts[:, g] = (decided & y).sum(0), (decided & ~y).sum(0), (~decided & y).sum(0)
    tp, fp, fn = counts
    global_cut = _best_cut(_f1(tp.sum(1), fp.sum(1), fn.sum(1)))
    per_label_scores = _f1(tp, fp, fn)
    rare = np.flatnonzero(y.sum(0) < min_positives)
    cuts = np.array([global_cut if j in rare else _best_cut(per_label_scores[:, j]) for j in range(y.shape[1])])
    return cuts, global_cut, {"kept_global": rare.tolist()}
