"""Official GLUE metrics against scikit-learn and scipy on the same predictions."""

import math

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

from bert_tf.tasks.classification import data as glue
from bert_tf.tasks.classification import metrics


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    y = rng.integers(0, 2, n)
    p = np.where(rng.random(n) < 0.7, y, 1 - y)
    assert metrics.accuracy(p, y) == pytest.approx(sklearn.metrics.accuracy_score(y, p), abs=1e-12)
    assert metrics.f1_score(p, y) == pytest.approx(sklearn.metrics.f1_score(y, p), abs=1e-12)
    assert metrics.matthews_corrcoef(p, y) == pytest.approx(sklearn.metrics.matthews_corrcoef(y, p), abs=1e-12)
    # Multi-class MCC (MNLI-size label sets).
    y3 = rng.integers(0, 3, n)
    p3 = np.where(rng.random(n) < 0.5, y3, rng.integers(0, 3, n))
    assert metrics.matthews_corrcoef(p3, y3) == pytest.approx(sklearn.metrics.matthews_corrcoef(y3, p3), abs=1e-12)


def test_degenerate_classification_matches_sklearn():
    y = np.array([0, 0, 1, 1])
    for p in (np.zeros(4, int), np.ones(4, int), np.array([1, 1, 0, 0])):
        assert metrics.matthews_corrcoef(p, y) == pytest.approx(sklearn.metrics.matthews_corrcoef(y, p))
        assert metrics.f1_score(p, y) == pytest.approx(sklearn.metrics.f1_score(y, p, zero_division=0.0))
    zeros = np.zeros(4, int)
    assert metrics.f1_score(zeros, zeros) == sklearn.metrics.f1_score(zeros, zeros, zero_division=0.0) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_correlations_match_scipy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 500))
    y = np.round(rng.uniform(0, 5, n) * 2) / 2  # STS-B-like scores with many ties
    p = y + rng.normal(0, 1.5, n)
    if seed % 2:
        p = np.round(p)  # ties in predictions too
    assert metrics.pearson(p, y) == pytest.approx(scipy.stats.pearsonr(p, y)[0], abs=1e-10)
    assert metrics.spearman(p, y) == pytest.approx(scipy.stats.spearmanr(p, y)[0], abs=1e-10)
    np.testing.assert_allclose(metrics._rank(p), scipy.stats.rankdata(p))


def test_constant_input_correlation_is_nan():
    assert math.isnan(metrics.pearson([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]))
    assert math.isnan(metrics.spearman([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]))


def test_task_metrics():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 100)
    p = np.where(rng.random(100) < 0.8, y, 1 - y)
    cola = metrics.task_metrics("cola", p, y)
    assert set(cola) == {"accuracy", "mcc"}
    assert cola["mcc"] == pytest.approx(sklearn.metrics.matthews_corrcoef(y, p))
    mrpc = metrics.task_metrics("mrpc", p, y)
    assert set(mrpc) == {"accuracy", "f1", "acc_and_f1"}
    assert mrpc["f1"] == pytest.approx(sklearn.metrics.f1_score(y, p))
    assert set(metrics.task_metrics("qqp", p, y)) == {"accuracy", "f1", "acc_and_f1"}
    for name in ("sst2", "mnli", "qnli", "rte", "wnli", "tsv"):
        assert metrics.task_metrics(name, p, y) == {"accuracy": pytest.approx(sklearn.metrics.accuracy_score(y, p))}
    s = metrics.task_metrics("stsb", p + rng.normal(0, 1, 100), y, regression=True)
    assert set(s) == {"pearson", "spearman", "corr"}
    assert s["corr"] == pytest.approx((s["pearson"] + s["spearman"]) / 2)
    assert set(metrics.task_metrics("tsv", p.astype(float), y.astype(float), regression=True)) == {
        "pearson", "spearman", "corr"}


def test_main_metric_is_the_data_tasks(tmp_path):
    # The one table of which metric ranks checkpoints: the data task classes' `main_metric`.
    assert [glue.GLUE_TASKS[t].main_metric for t in ("cola", "stsb", "mrpc", "mnli")] == ["mcc", "pearson", "f1",
                                                                                          "accuracy"]
    (tmp_path / "train.tsv").write_text("sentence\tlabel\na\t1.5\n")
    assert glue.get_task("tsv", str(tmp_path), regression=True).main_metric == "pearson"
    assert glue.get_task("tsv", str(tmp_path)).main_metric == "accuracy"


def test_bad_shapes():
    with pytest.raises(ValueError, match="differ in length"):
        metrics.accuracy([1, 0], [1])
    with pytest.raises(ValueError, match="no predictions"):
        metrics.accuracy([], [])
    with pytest.raises(ValueError, match="1-D"):
        metrics.accuracy(np.zeros((2, 2)), np.zeros((2, 2)))
