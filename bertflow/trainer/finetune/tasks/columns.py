"""The columns of a text task's rows, and their reader: one definition for every type that
reads a text (or a pair of texts) and a label per row (``classification``, ``regression``).

``TextColumns`` declares the fields; a type that reads another layout by default (STS-B's
``sentence1,sentence2,score``) restates only the defaults, with the same annotated types
(``TextColumn``, ...), so the descriptions and checks stay here. Not a task type itself:
``TASK_TYPES`` does not list it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from ..files import read_records
from .base import TaskConfig

log = logging.getLogger(__name__)

TextColumn = Annotated[str, Field(description="the column of the text")]
PairColumn = Annotated[str | None, Field(description="the column of a pair's second text (None: single texts)")]
LabelColumn = Annotated[str, Field(description="the column of the label (regression: a number)")]
IdColumn = Annotated[str | None, Field(description="the column of a row's id; default: the row number")]
Columns = Annotated[list[str] | None, Field(description="the column names of a CSV/TSV without a header line "
                                                       "(GLUE's CoLA: [source, label, original, sentence])")]


class TextColumns(TaskConfig):
    """Where a row's text, second text, label and id are."""

    text_column: TextColumn = "text"
    text_pair_column: PairColumn = None
    label_column: LabelColumn = "label"
    id_column: IdColumn = None
    columns: Columns = None


@dataclass
class Row:
    id: str
    text: str
    pair: str | None
    label: str


def read_rows(cfg: TextColumns, url: str, limit: int | None = None, head: bool = False) -> tuple[list[Row], int]:
    """The rows of ``url`` with their text(s) and label (``limit``: the first N; ``head``:
    those of the file's head, ``files.HEAD_BYTES``), and how many were skipped: a row
    without a value it needs is logged with its file and line."""
    rows, skipped = [], 0
    needed = [cfg.text_column, cfg.label_column] + ([cfg.text_pair_column] if cfg.text_pair_column else [])
    for i, (n, rec) in enumerate(read_records(url, cfg.columns, head)):
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
