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
import csv
import io
import logging
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from ..files import read_records
from ..metrics import classification_metrics
from .base import Split, Task, TaskConfig

log = logging.getLogger(__name__)


@dataclass
class Row:
    id: str
    text: str
    pair: str | None
    label: str


def read_rows(cfg: "Config", url: str, limit: int | None = None) -> tuple[list[Row], int]:
    rows, skipped = [], 0
    needed = [cfg.text_column, cfg.label_column] + ([cfg.text_pair_column] if cfg.text_pair_column else [])
    for i, (n, rec) in enumerate(read_records(url, cfg.columns)):
        if limit is not None and len(rows) >= limit:
            break
        if i == 0 and "__error__" not in rec and set(needed) - set(rec):
            raise ValueError(f"{url}: no column(s) {sorted(set(needed) - set(rec))}; "
                             f"the file has {sorted(rec)}")
        missing = [c for c in needed if rec.get(c) in (None, "")]
        if "__error__" in rec or missing:
            skipped += 1
            log.warning("%s:%d: skipped: %s", url, n, rec.get("__error__") or f"no value for {missing}")
            continue
        rid = str(rec[cfg.id_column]) if cfg.id_column and rec.get(cfg.id_column) is not None else str(i)
        rows.append(Row(rid, str(rec[cfg.text_column]),
                        str(rec[cfg.text_pair_column]) if cfg.text_pair_column else None,
                        str(rec[cfg.label_column])))
    if not rows:
        raise ValueError(f"{url}: no usable rows (columns {needed}); check the column names")
    return rows, skipped


class Classification(Task):
    @classmethod
    def head(cls):
        from ..heads import BertForSequenceClassification

        return BertForSequenceClassification

    @classmethod
    def read_labels(cls, cfg: "Config") -> list[str]:
        rows, _ = read_rows(cfg, cfg.train, cfg.max_train_examples)
        return sorted({r.label for r in rows})

    def __init__(self, cfg: "Config", tokenizer, labels: list[str]):
        super().__init__(cfg, tokenizer, labels)
        if cfg.metric == "f1" and len(labels) != 2:
            raise ValueError(f"metric f1 is the F1 of the second of two labels, but {cfg.train} has {len(labels)}: "
                             f"{labels[:10]}; choose accuracy or mcc")

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
        return Split(rows, features, skipped + len(unknown))

    def loss(self, model, batch, device):
        import torch.nn.functional as F

        logits = model(**self.inputs(batch, device))
        return F.cross_entropy(logits.float(), batch["labels"].to(device))

    def evaluate(self, model, split: Split, device):
        preds: list[int] = []
        for _, batch in self.batches(split.features):
            preds.extend(model(**self.inputs(batch, device)).argmax(-1).tolist())
        gold = [f["labels"] for f in split.features]
        metrics = classification_metrics(gold, preds, len(self.labels))
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["id", "label", "pred"])
        for r, p in zip(split.examples, preds):
            w.writerow([r.id, r.label, self.labels[p]])
        return metrics, {"csv": out.getvalue().encode()}


class Config(TaskConfig):
    type: Literal["classification"] = "classification"
    text_column: str = "text"
    text_pair_column: str | None = Field(None, description="the second text of a pair")
    label_column: str = "label"
    id_column: str | None = Field(None, description="default: the row number")
    columns: list[str] | None = Field(None, description="the column names of a CSV/TSV without a header line "
                                                        "(GLUE's CoLA: [source, label, original, sentence])")
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
