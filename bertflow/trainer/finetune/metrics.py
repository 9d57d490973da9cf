"""Evaluation metrics of the fine-tuning tasks, written out from their definitions.

- classification: accuracy, and for two classes the F1 of the second label; Matthews
  correlation (CoLA's metric) and binary F1 (MRPC's, QQP's), as scikit-learn defines them;
- regression (STS-B): Pearson and Spearman correlation (ranks with ties averaged, as
  SciPy's ``spearmanr``), and their mean, GLUE's leaderboard score for STS-B;
- NER: entity-level precision / recall / F1 as ``conlleval`` (and seqeval's default mode)
  count them: chunks are found with conlleval's start/end-of-chunk rules, so an ``I-`` tag
  after ``O`` or after another type starts an entity (IOB1 and BIO/IOB2 read the same), and
  a predicted entity counts only when its type, start and end all match a gold one;
- QA: the official SQuAD v1.1/v2.0 exact match and F1, with the official answer
  normalization (lowercase, strip punctuation, drop the articles a/an/the, squash
  whitespace) and the maximum over the gold answers.
"""

from __future__ import annotations

import collections
import re
import string
from typing import Iterable, Sequence

import numpy as np

# ---------------------------------------------------------------- classification


def classification_metrics(gold: Sequence[int], pred: Sequence[int], num_labels: int) -> dict[str, float]:
    """``accuracy`` over all rows and ``mcc`` (Matthews correlation); with two labels also
    ``f1`` of label 1 (the positive class of GLUE's binary tasks: labels are sorted, so it
    is the second name)."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    n = len(gold)
    out = {"accuracy": sum(g == p for g, p in zip(gold, pred)) / n if n else 0.0,
           "mcc": matthews_corrcoef(gold, pred)}
    if num_labels == 2:
        out["f1"] = binary_f1(gold, pred)
    return out


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def _same_length(gold: Sequence, pred: Sequence) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold values but {len(pred)} predictions")


def binary_f1(gold: Sequence[int], pred: Sequence[int], positive: int = 1) -> float:
    """F1 of the ``positive`` label (scikit-learn's ``f1_score``; 0 when nothing is
    predicted or gold positive)."""
    _same_length(gold, pred)
    g, p = np.asarray(gold) == positive, np.asarray(pred) == positive
    return _f1(int((g & p).sum()), int((~g & p).sum()), int((g & ~p).sum()))


def matthews_corrcoef(gold: Sequence[int], pred: Sequence[int]) -> float:
    """Matthews correlation of any number of labels, from the confusion matrix
    (Gorodkin's R_K, as scikit-learn's ``matthews_corrcoef``): 0 when either side holds
    one label only."""
    _same_length(gold, pred)
    _, ids = np.unique(np.concatenate([np.asarray(gold), np.asarray(pred)]), return_inverse=True)
    n = len(gold)
    k = int(ids.max()) + 1 if n else 1
    confusion = np.zeros((k, k), dtype=np.float64)
    np.add.at(confusion, (ids[:n], ids[n:]), 1)
    gold_totals, pred_totals = confusion.sum(1), confusion.sum(0)
    correct, total = np.trace(confusion), confusion.sum()
    cov_gp = correct * total - pred_totals @ gold_totals
    cov_pp = total * total - pred_totals @ pred_totals
    cov_gg = total * total - gold_totals @ gold_totals
    if cov_pp == 0 or cov_gg == 0:
        return 0.0
    return float(cov_gp / np.sqrt(cov_pp * cov_gg))


# ---------------------------------------------------------------- regression


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's r (0 when either side is constant, where it is undefined)."""
    _same_length(x, y)
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / denominator) if denominator > 0 else 0.0


def ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks, ties given the mean of the ranks they span."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="stable")
    sorted_v = v[order]
    # the first position of each run of equal values, and where the runs end
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], len(v)]
    out = np.empty(len(v))
    out[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson's r of the ranks."""
    _same_length(x, y)
    return pearson(ranks(x), ranks(y))


def regression_metrics(gold: Sequence[float], pred: Sequence[float]) -> dict[str, float]:
    """``pearson``, ``spearman`` and ``pearson_spearman``, their mean (GLUE's STS-B score),
    plus ``mse``."""
    _same_length(gold, pred)
    r, rho = pearson(gold, pred), spearman(gold, pred)
    error = np.asarray(gold, dtype=np.float64) - np.asarray(pred, dtype=np.float64)
    return {"pearson": r, "spearman": rho, "pearson_spearman": (r + rho) / 2,
            "mse": float(error @ error / len(error)) if len(error) else 0.0}


# ---------------------------------------------------------------- NER (conlleval)


def _split_tag(tag: str) -> tuple[str, str]:
    """``B-PER`` -> (``B``, ``PER``); ``O`` -> (``O``, ``""``). A tag without a prefix
    (``PER``) reads as ``I-PER``, as conlleval does with its ``-r``-less input."""
    if tag == "O" or tag == "":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if sep and prefix in ("B", "I", "E", "S"):
        return prefix, kind
    return "I", tag


def _end_of_chunk(prev: str, prev_type: str, tag: str, type_: str) -> bool:
    return (
        prev in ("E", "S")
        or (prev in ("B", "I") and tag in ("B", "S", "O"))
        or (prev != "O" and prev_type != type_)
    )


def _start_of_chunk(prev: str, prev_type: str, tag: str, type_: str) -> bool:
    return (
        tag in ("B", "S")
        or (prev in ("E", "S", "O") and tag in ("E", "I"))
        or (tag != "O" and prev_type != type_)
    )


def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The chunks of one sentence as ``(type, first, last)`` word indices (inclusive)."""
    found: list[tuple[str, int, int]] = []
    prev, prev_type, start = "O", "", -1
    for i, raw in enumerate(list(tags) + ["O"]):  # a final O closes the last chunk
        tag, type_ = _split_tag(raw)
        if start >= 0 and _end_of_chunk(prev, prev_type, tag, type_):
            found.append((prev_type, start, i - 1))
            start = -1
        if _start_of_chunk(prev, prev_type, tag, type_):
            start = i
        prev, prev_type = tag, type_
    return found


def ner_metrics(gold: Iterable[Sequence[str]], pred: Iterable[Sequence[str]]) -> dict[str, float]:
    """Micro ``precision``, ``recall``, ``f1`` over entities (conlleval's "overall"), plus
    ``f1/<type>`` per entity type and token ``accuracy``."""
    correct: collections.Counter[str] = collections.Counter()
    n_gold: collections.Counter[str] = collections.Counter()
    n_pred: collections.Counter[str] = collections.Counter()
    tokens = tokens_right = 0
    for g, p in zip(gold, pred, strict=True):
        if len(g) != len(p):
            raise ValueError(f"a sentence has {len(g)} gold tags but {len(p)} predicted")
        tokens += len(g)
        tokens_right += sum(a == b for a, b in zip(g, p))
        ge, pe = set(entities(g)), set(entities(p))
        for t, _, _ in ge:
            n_gold[t] += 1
        for t, _, _ in pe:
            n_pred[t] += 1
        for t, _, _ in ge & pe:
            correct[t] += 1
    tp, ng, np_ = sum(correct.values()), sum(n_gold.values()), sum(n_pred.values())
    out = {
        "precision": tp / np_ if np_ else 0.0,
        "recall": tp / ng if ng else 0.0,
        "f1": _f1(tp, np_ - tp, ng - tp),
        "accuracy": tokens_right / tokens if tokens else 0.0,
    }
    for t in sorted(set(n_gold) | set(n_pred)):
        out[f"f1/{t}"] = _f1(correct[t], n_pred[t] - correct[t], n_gold[t] - correct[t])
    return out


# ---------------------------------------------------------------- QA (official SQuAD)

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official SQuAD normalization, in its order: lowercase, drop punctuation, drop
    articles, squash whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """Token-overlap F1 of the normalized answers. When either is empty (a no-answer),
    it is 1 if both are empty, else 0 (SQuAD v2.0's rule; v1.1 has no empty golds)."""
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(golds: dict[str, list[str]], predictions: dict[str, str]) -> dict[str, float]:
    """``exact_match`` and ``f1`` in percent over every question in ``golds`` (a question
    without a prediction scores 0), each the max over its gold answers. Gold answers that
    normalize to nothing are dropped, and a question left with none is a no-answer question
    whose only gold is ``""``; v2's ``HasAns_*`` / ``NoAns_*`` splits come along when both
    kinds are present."""
    em: dict[str, float] = {}
    f1: dict[str, float] = {}
    has_answer: dict[str, bool] = {}
    for qid, answers in golds.items():
        answers = [a for a in answers if normalize_answer(a)] or [""]
        has_answer[qid] = answers != [""]
        pred = predictions.get(qid)
        if pred is None:
            em[qid] = f1[qid] = 0.0
            continue
        em[qid] = max(exact_match(pred, a) for a in answers)
        f1[qid] = max(f1_score(pred, a) for a in answers)

    def mean(scores: dict[str, float], keep) -> float:
        vals = [v for k, v in scores.items() if keep(k)]
        return 100.0 * sum(vals) / len(vals) if vals else 0.0

    out = {"exact_match": mean(em, lambda k: True), "f1": mean(f1, lambda k: True), "total": float(len(golds))}
    if any(has_answer.values()) and not all(has_answer.values()):
        for name, keep in (("HasAns", lambda k: has_answer[k]), ("NoAns", lambda k: not has_answer[k])):
            out[f"{name}_exact"] = mean(em, keep)
            out[f"{name}_f1"] = mean(f1, keep)
    return out
