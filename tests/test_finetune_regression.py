"""Regression (STS-B) and the GLUE metrics: Pearson / Spearman against SciPy, Matthews
correlation and binary F1 against scikit-learn on the same predictions, and the
`regression` task type trained through the trial's real path on the real SimLex-999 pairs
(data/finetune/similarity), its exported folder loading in transformers."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.finetune_models import minilm_folder, tiny_bert_folder
from bertflow.trainer.finetune.metrics import binary_f1, matthews_corrcoef, pearson, regression_metrics, spearman


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


DATA = Path(__file__).resolve().parents[1] / "data" / "finetune"


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return tiny_bert_folder(tmp_path_factory.mktemp("tiny-bert"))


def similarity(**kw):
    from bertflow.trainer.finetune.tasks import task_config

    return task_config({"name": "similarity", "type": "regression", "train": str(DATA / "similarity/train.csv"),
                        "dev": str(DATA / "similarity/dev.csv"), "text_column": "word1",
                        "text_pair_column": "word2", "max_seq_length": 16, "epochs": 2, "batch_size": 16,
                        "max_train_examples": 48, "max_eval_examples": 32, "lr": 1e-3, "seed": 1, **kw})


def test_regression_trains_and_its_folder_loads_in_transformers(tiny_bert, tmp_path):
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification as HFClassifier

    from bertflow.trainer.finetune.config import TrialConfig
    from bertflow.trainer.finetune.heads import BertForSequenceClassification, HeadConfig
    from bertflow.trainer.finetune.trial import train_loop
    from bertflow.trainer.hf_folder import load_pretrained

    train_loop(TrialConfig(task=similarity(), init=tiny_bert, output=str(tmp_path / "t")).model_dump())
    result = json.loads((tmp_path / "t/result.json").read_text())
    assert result["metric"] == "pearson_spearman" and result["train_examples"] == 48
    dev = result["dev"]
    assert set(dev) == {"pearson", "spearman", "pearson_spearman", "mse"}
    assert dev["pearson_spearman"] == pytest.approx((dev["pearson"] + dev["spearman"]) / 2)
    # from an output near 0 towards SimLex's mean score (about 4.6): the squared error falls
    losses = [epoch["train_loss"] for epoch in result["history"]]
    assert losses[1] < losses[0]
    rows = (tmp_path / "t/predictions/dev.csv").read_text().splitlines()
    assert rows[0] == "id,label,pred" and len(rows) == 33 and float(rows[1].split(",")[2]) != 0

    model_dir = str(tmp_path / "t/model")
    theirs = HFClassifier.from_pretrained(model_dir).eval()
    assert theirs.num_labels == 1 and theirs.config.problem_type == "regression"
    ours = load_pretrained(model_dir, BertForSequenceClassification,
                           config=HeadConfig.from_hf(json.loads((tmp_path / "t/model/config.json").read_text()))).eval()
    batch = AutoTokenizer.from_pretrained(model_dir)(["old", "smart"], ["new", "intelligent"], padding=True,
                                                    return_tensors="pt")
    with torch.no_grad():
        out = theirs(**batch, labels=torch.tensor([1.58, 9.2]))
        torch.testing.assert_close(ours(**batch), out.logits, atol=1e-5, rtol=1e-5)
        # transformers trains it as we do: the mean squared error of the one output
        torch.testing.assert_close(out.loss, ((out.logits.squeeze(-1) - torch.tensor([1.58, 9.2])) ** 2).mean())


def test_a_score_that_is_not_a_number_is_skipped_and_counted(tmp_path, caplog):
    from bertflow.trainer.finetune.trial import load_tokenizer

    lines = (DATA / "similarity/dev.csv").read_text().splitlines()
    bad = tmp_path / "dev.csv"
    bad.write_text("\n".join(lines[:3] + [lines[3].rsplit(",", 1)[0] + ",n/a", lines[4].rsplit(",", 1)[0] + ","]
                             + lines[5:11]) + "\n")
    cfg = similarity(dev=str(bad), max_eval_examples=None)
    task = cfg.implementation(cfg, load_tokenizer(minilm_folder()), cfg.implementation.read_labels(cfg))
    with caplog.at_level("WARNING"):
        split = task.load(str(bad), train=False)
    assert len(split.features) == 8 and split.skipped == 2
    assert all(isinstance(f["labels"], float) for f in split.features)
    assert any("row 2 skipped: score 'n/a' is not a number" in r.getMessage() for r in caplog.records)
    assert any(f"{bad}:5: skipped: no value for ['score']" in r.getMessage() for r in caplog.records)
