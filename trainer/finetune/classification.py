"""Sequence classification (GLUE-style), single sentences or pairs.

Files are CSV, TSV or JSONL (by extension, optionally compressed), with the text in
``text_column``, an optional second text in ``text_pair_column`` and the label in
``label_column``. The label set is read from the train file and sorted, so the same data
gives the same label ids. A row without its text or label, or with a label train never
had, is skipped, counted and logged with its file and line.

Predictions: ``predictions/<split>.csv`` with ``id,label,pred``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .batching import eval_batches, model_inputs, text_stream
from .config import TaskConfig
from .heads import BertForSequenceClassification
from .metrics import classification_metrics

log = logging.getLogger(__name__)

_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")


@dataclass
class Row:
    id: str
    text: str
    pair: str | None
    label: str


@dataclass
class Split:
    rows: list[Row]
    features: list[dict[str, Any]]
    skipped: int = 0
    where: list[str] = field(default_factory=list)


def file_format(url: str) -> str:
    name = url.lower()
    for c in _COMPRESSIONS:
        if name.endswith(c):
            name = name[: -len(c)]
    for ext in ("csv", "tsv", "jsonl"):
        if name.endswith("." + ext):
            return ext
    if name.endswith(".json"):
        return "jsonl"
    raise ValueError(f"{url}: unknown table format; name the file .csv, .tsv or .jsonl")


def read_records(url: str):
    """``(line number, dict)`` for each record of a CSV/TSV/JSONL file."""
    fmt = file_format(url)
    stream = text_stream(url)
    if fmt == "jsonl":
        for n, line in enumerate(stream, 1):
            if line.strip():
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as e:
                    yield n, {"__error__": f"not JSON: {e}"}
        return
    # GLUE's TSVs are unquoted (a quote is just a character); CSVs use standard quoting
    reader = csv.DictReader(stream, delimiter="\t" if fmt == "tsv" else ",",
                            quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL)
    for record in reader:
        yield reader.line_num, record


def read_rows(cfg: TaskConfig, url: str, limit: int | None = None) -> tuple[list[Row], int]:
    rows, skipped = [], 0
    needed = [cfg.text_column, cfg.label_column] + ([cfg.text_pair_column] if cfg.text_pair_column else [])
    for i, (n, rec) in enumerate(read_records(url)):
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


class ClassificationTask:
    head = BertForSequenceClassification

    def __init__(self, cfg: TaskConfig, tokenizer, labels: list[str]):
        self.cfg, self.tokenizer, self.labels = cfg, tokenizer, labels
        self.label_id = {label: i for i, label in enumerate(labels)}

    @staticmethod
    def read_labels(cfg: TaskConfig) -> list[str]:
        rows, _ = read_rows(cfg, cfg.train, cfg.max_train_examples)
        return sorted({r.label for r in rows})

    def load(self, url: str, train: bool) -> Split:
        limit = self.cfg.max_train_examples if train else self.cfg.max_eval_examples
        rows, skipped = read_rows(self.cfg, url, limit)
        unknown = [r for r in rows if r.label not in self.label_id]
        for r in unknown:
            log.warning("%s: row %s skipped: label %r is not among train's labels %s", url, r.id, r.label, self.labels)
        rows = [r for r in rows if r.label in self.label_id]
        enc = self.tokenizer([r.text for r in rows], [r.pair for r in rows] if self.cfg.text_pair_column else None,
                             truncation=True, max_length=self.cfg.max_seq_length)
        features = [{"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
                     "labels": self.label_id[r.label]} for i, r in enumerate(rows)]
        return Split(rows, features, skipped + len(unknown))

    @staticmethod
    def loss(model, batch: dict[str, torch.Tensor], device) -> torch.Tensor:
        logits = model(**model_inputs(batch, device))
        return F.cross_entropy(logits.float(), batch["labels"].to(device))

    @torch.inference_mode()
    def evaluate(self, model, split: Split, device) -> tuple[dict[str, float], dict[str, bytes]]:
        """Metrics and the prediction files (name -> bytes) of one split."""
        preds: list[int] = []
        for _, batch in eval_batches(split.features, self.cfg.eval_batch_size, self.tokenizer.pad_token_id):
            preds.extend(model(**model_inputs(batch, device)).argmax(-1).tolist())
        gold = [f["labels"] for f in split.features]
        metrics = classification_metrics(gold, preds, len(self.labels))
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["id", "label", "pred"])
        for r, p in zip(split.rows, preds):
            w.writerow([r.id, r.label, self.labels[p]])
        return metrics, {"csv": out.getvalue().encode()}
