"""Sentence-pair regression (STS-B): one output per example, a real-valued score.

Files are CSV, TSV or JSONL (by extension, optionally compressed), read as
``classification`` reads them: the text in ``text_column``, the second text in
``text_pair_column`` (default: GLUE's STS-B header, ``sentence1``, ``sentence2``, ``score``),
the score in ``label_column``. A row without its texts or score, or whose score is not a
number, is skipped, counted and logged with its file and row.

The head is ``BertForSequenceClassification`` with one output (``num_labels`` 1, which
transformers reads as ``problem_type`` regression), trained on the mean squared error.
Scored by Pearson and Spearman correlation, and their mean (GLUE's STS-B score), the main
metric.

Predictions: ``predictions/<split>.csv`` with ``id,label,pred``.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

from ..metrics import regression_metrics
from .base import Split, Task, predictions_csv
from .columns import LabelColumn, PairColumn, TextColumn, TextColumns, read_rows

log = logging.getLogger(__name__)


def score(text: str) -> float | None:
    """The score a cell holds, or None when it is not a finite number."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def scored(cfg: "Config", url: str, rows: list) -> list[tuple]:
    """``(row, score)`` of the rows whose label is a number; the others are logged."""
    scores = [score(r.label) for r in rows]
    for r, s in zip(rows, scores):
        if s is None:
            log.warning("%s: row %s skipped: score %r is not a number", url, r.id, r.label)
    kept = [(r, s) for r, s in zip(rows, scores) if s is not None]
    if not kept:
        raise ValueError(f"{url}: no row has a number in column {cfg.label_column!r}")
    return kept


class Regression(Task):
    @classmethod
    def head(cls):
        from ..heads import BertForSequenceClassification

        return BertForSequenceClassification

    @classmethod
    def read_labels(cls, cfg: "Config") -> list[str]:
        return [cfg.label_column]  # one output, named after what it predicts

    @classmethod
    def check_head(cls, cfg: "Config", url: str, train: bool) -> None:
        scored(cfg, url, read_rows(cfg, url, head=True)[0])

    def load(self, url: str, train: bool) -> Split:
        limit = self.cfg.max_train_examples if train else self.cfg.max_eval_examples
        rows, skipped = read_rows(self.cfg, url, limit)
        kept = scored(self.cfg, url, rows)
        enc = self.tokenizer([r.text for r, _ in kept],
                             [r.pair for r, _ in kept] if self.cfg.text_pair_column else None,
                             truncation=True, max_length=self.cfg.max_seq_length)
        features = [{"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i], "labels": s}
                    for i, (_, s) in enumerate(kept)]
        return Split.of([r for r, _ in kept], features, incomplete_or_unreadable=skipped,
                        scores_not_numbers=len(rows) - len(kept))

    def loss(self, model, batch, device):
        import torch.nn.functional as F

        predicted = model(**self.inputs(batch, device)).float().squeeze(-1)
        return F.mse_loss(predicted, batch["labels"].to(device).float())

    def evaluate(self, model, split: Split, device):
        preds: list[float] = []
        for _, batch in self.batches(split.features):
            preds.extend(model(**self.inputs(batch, device)).float().squeeze(-1).tolist())
        metrics = regression_metrics([f["labels"] for f in split.features], preds)
        return metrics, {"csv": predictions_csv((r.id, r.label, f"{p:.6g}") for r, p in zip(split.examples, preds))}


class Config(TextColumns):
    type: Literal["regression"] = "regression"
    # STS-B's header by default (classification's are text and label)
    text_column: TextColumn = "sentence1"
    text_pair_column: PairColumn = "sentence2"
    label_column: LabelColumn = "score"

    main_metric = "pearson_spearman"
    implementation = Regression
