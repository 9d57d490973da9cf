"""Multiple choice (SWAG): a context and N endings, one of them right.

Files are CSV, TSV or JSONL (by extension, optionally compressed) with the context in
``context_column``, the endings in ``ending_columns`` (N of them, the same N for every
row) and the right ending's index (0 to N-1) in ``label_column``. SWAG's files as
distributed read with ``start_column: sent2``: each ending is then the start of the
second sentence plus the ending, as SWAG's authors and transformers' ``run_swag`` join
them. A row without a value it needs, or whose label is not an index of an ending, is
skipped, counted and logged with its file and line.

Each example is N sequences ``[CLS] context [SEP] ending [SEP]`` (``[B, N, S]`` in a
batch); the head scores each ending from its pooled ``[CLS]`` (transformers'
``BertForMultipleChoice``) and the loss is the cross-entropy over the N scores.

Predictions: ``predictions/<split>.csv`` with ``id,label,pred``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator

from ..files import read_records
from .base import ArgmaxTask, Split, TaskConfig, predictions_csv

log = logging.getLogger(__name__)


@dataclass
class Question:
    id: str
    context: str
    endings: list[str]
    label: int


def read_questions(cfg: "Config", url: str, limit: int | None = None, head: bool = False) -> tuple[list[Question], int]:
    """The questions of ``url`` (``limit``: the first N; ``head``: those of the file's head),
    and how many rows were skipped, each logged with its file and line."""
    questions, skipped = [], 0
    needed = [cfg.context_column, *cfg.ending_columns, cfg.label_column]
    if cfg.start_column:
        needed.append(cfg.start_column)
    n_endings = len(cfg.ending_columns)
    for i, (n, rec) in enumerate(read_records(url, head=head)):
        if limit is not None and len(questions) >= limit:
            break
        if i == 0 and "__error__" not in rec and set(needed) - set(rec):
            raise ValueError(f"{url}: no column(s) {sorted(set(needed) - set(rec))}; the file has {sorted(rec)}")
        missing = [c for c in needed if rec.get(c) in (None, "")]
        label = str(rec.get(cfg.label_column, "")).strip()
        why = (rec.get("__error__") or (f"no value for {missing}" if missing else None)
               or (None if label.isdigit() and int(label) < n_endings
                   else f"label {label!r} is not an ending's index (0 to {n_endings - 1})"))
        if why:
            skipped += 1
            log.warning("%s:%d: skipped: %s", url, n, why)
            continue
        start = f"{rec[cfg.start_column]} " if cfg.start_column else ""
        rid = str(rec[cfg.id_column]) if cfg.id_column and rec.get(cfg.id_column) is not None else str(i)
        questions.append(Question(rid, str(rec[cfg.context_column]),
                                  [start + str(rec[c]) for c in cfg.ending_columns], int(label)))
    if not questions:
        raise ValueError(f"{url}: no usable rows (columns {needed}); check the column names")
    return questions, skipped


class MultipleChoice(ArgmaxTask):
    @classmethod
    def head(cls):
        from ..heads import BertForMultipleChoice

        return BertForMultipleChoice

    @classmethod
    def read_labels(cls, cfg: "Config") -> list[str]:
        return list(cfg.ending_columns)  # label k: the k-th ending

    @classmethod
    def check_head(cls, cfg: "Config", url: str, train: bool) -> None:
        read_questions(cfg, url, head=True)

    def load(self, url: str, train: bool) -> Split:
        limit = self.cfg.max_train_examples if train else self.cfg.max_eval_examples
        questions, skipped = read_questions(self.cfg, url, limit)
        n = len(self.cfg.ending_columns)
        enc = self.tokenizer([q.context for q in questions for _ in range(n)],
                             [ending for q in questions for ending in q.endings],
                             truncation=True, max_length=self.cfg.max_seq_length)
        features = [{"input_ids": enc["input_ids"][i * n:(i + 1) * n],
                     "token_type_ids": enc["token_type_ids"][i * n:(i + 1) * n], "labels": q.label}
                    for i, q in enumerate(questions)]
        return Split.of(questions, features, incomplete_or_label_not_an_ending=skipped)

    def evaluate(self, model, split: Split, device):
        preds = self.predict(model, split, device)
        gold = [q.label for q in split.examples]
        metrics = {"accuracy": sum(g == p for g, p in zip(gold, preds)) / len(gold)}
        return metrics, {"csv": predictions_csv((q.id, q.label, p) for q, p in zip(split.examples, preds))}


class Config(TaskConfig):
    type: Literal["multiple_choice"] = "multiple_choice"
    context_column: str = "sent1"
    start_column: str | None = Field(None, description="a start put before every ending (SWAG: sent2)")
    ending_columns: list[str] = Field(["ending0", "ending1", "ending2", "ending3"],
                                      description="the endings, in the order the label indexes them")
    label_column: str = Field("label", description="the right ending's index, from 0")
    id_column: str | None = Field(None, description="default: the row number")

    main_metric = "accuracy"
    records = "questions"
    implementation = MultipleChoice

    @field_validator("ending_columns")
    @classmethod
    def _two_or_more(cls, value: list[str]) -> list[str]:
        if len(value) < 2 or len(set(value)) != len(value):
            raise ValueError(f"needs two or more different endings, got {value}")
        return value
