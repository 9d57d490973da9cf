"""Sequence classification (GLUE-style), single sentences or pairs.

Files are CSV, TSV or JSONL (by extension, optionally compressed), with the text in
``text_column``, an optional second text in ``text_pair_column`` and the label in
``label_column``. The label set is read from the train file and sorted, so the same data
gives the same label ids. A row without its text or label is skipped, counted and logged
with its file and line; rows with a label train never had are skipped and counted per
label; a dev or test file with no row of train's labels is an error naming both files.

Predictions: ``predictions/<split>.csv`` with ``id,label,pred``.
"""

from __future__ import annotations

import collections
import logging
from typing import Literal

from pydantic import Field

from ..metrics import classification_metrics
from .base import ArgmaxTask, Split, predictions_csv
from .columns import Row, TextColumns, read_rows

__all__ = ["Classification", "Config", "Row", "read_rows"]  # the reader is columns'; imported from here too

log = logging.getLogger(__name__)


class Classification(ArgmaxTask):
    @classmethod
    def head(cls):
        from ..heads import BertForSequenceClassification

        return BertForSequenceClassification

    @classmethod
    def read_labels(cls, cfg: "Config") -> list[str]:
        rows, _ = read_rows(cfg, cfg.train, cfg.max_train_examples)
        return sorted({r.label for r in rows})

    @classmethod
    def check_head(cls, cfg: "Config", url: str, train: bool) -> None:
        rows, _ = read_rows(cfg, url, head=True)
        if train and cfg.metric == "f1":
            labels = sorted({r.label for r in rows})
            if len(labels) > 2:  # the rest of the file can only add labels
                raise ValueError(f1_labels(cfg, labels, "at least "))

    def __init__(self, cfg: "Config", tokenizer, labels: list[str]):
        super().__init__(cfg, tokenizer, labels)
        if cfg.metric == "f1" and len(labels) != 2:
            raise ValueError(f1_labels(cfg, labels))

    def load(self, url: str, train: bool) -> Split:
        limit = self.cfg.max_train_examples if train else self.cfg.max_eval_examples
        rows, skipped = read_rows(self.cfg, url, limit)
        unknown = collections.Counter(r.label for r in rows if r.label not in self.label_id)
        rows = [r for r in rows if r.label in self.label_id]
        if not rows:
            which = {**{u: "dev" for u in self.cfg.dev_sets().values()}, self.cfg.test: "test"}.get(url, "this file")
            raise ValueError(f"{url}: {which} has no rows with train's labels: its labels are {sorted(unknown)}, "
                             f"train's ({self.cfg.train}) are {self.labels}; check label_column and the files")
        if unknown:
            log.warning("%s: %d rows skipped: labels %s are not among train's labels %s", url, sum(unknown.values()),
                        dict(unknown.most_common(10)), self.labels)
        enc = self.tokenizer([r.text for r in rows], [r.pair for r in rows] if self.cfg.text_pair_column else None,
                             truncation=True, max_length=self.cfg.max_seq_length)
        features = [{"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
                     "labels": self.label_id[r.label]} for i, r in enumerate(rows)]
        return Split.of(rows, features, incomplete_or_unreadable=skipped,
                        labels_train_never_had=sum(unknown.values()))

    def evaluate(self, model, split: Split, device):
        preds = self.predict(model, split, device)
        metrics = classification_metrics([f["labels"] for f in split.features], preds, len(self.labels))
        return metrics, {"csv": predictions_csv((r.id, r.label, self.labels[p]) for r, p in zip(split.examples, preds))}


def f1_labels(cfg: "Config", labels: list[str], at_least: str = "") -> str:
    return (f"{cfg.train}: metric f1 is the F1 of the second of two labels, but train has {at_least}{len(labels)}: "
            f"{labels[:10]}; choose accuracy or mcc")


class Config(TextColumns):
    type: Literal["classification"] = "classification"
    metric: Literal["accuracy", "f1", "mcc"] = Field(
        "accuracy", description="the dev metric that picks the best setting, as GLUE scores the task: mcc (CoLA), "
                                "f1 of the second label of two (MRPC, QQP), accuracy (the others)")

    implementation = Classification

    @property
    def main_metric(self) -> str:
        return self.metric

    @classmethod
    def settings(cls) -> set[str]:
        return super().settings() - {"metric"}  # how settings are compared, not one of them
