"""Reading task files through fsspec: whole texts, and the records of CSV/TSV/JSONL tables.

A reader given ``head=True`` reads only the first ``HEAD_BYTES`` of a file (decompressed):
what the step checks when it is planned, before any worker starts (the header, the first
records), with the readers' own rules.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from typing import Any, Iterator

import fsspec

_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
HEAD_BYTES = 1 << 20  # what a plan-time check reads of each task file


def read_text(url: str) -> str:
    """A whole text file from any fsspec URL (compression from the name: .gz, .bz2, ...)."""
    with fsspec.open(url, "rb", compression="infer") as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{url}: not UTF-8 text ({e}); re-encode the file as UTF-8") from None


def read_head(url: str, size: int = HEAD_BYTES) -> tuple[str, bool]:
    """The first ``size`` bytes of a text file (decompressed), decoded, without a character
    cut in two; and whether that is the whole file."""
    with fsspec.open(url, "rb", compression="infer") as f:
        data = f.read(size + 1)
    whole = len(data) <= size
    try:
        return codecs.getincrementaldecoder("utf-8-sig")().decode(data[:size], final=whole), whole
    except UnicodeDecodeError as e:
        raise ValueError(f"{url}: not UTF-8 text ({e}); re-encode the file as UTF-8") from None


def read_lines(url: str, head: bool = False) -> tuple[str, bool]:
    """A text file whole, or (``head``) its first ``HEAD_BYTES`` up to the last whole line;
    and whether that is the whole file."""
    if not head:
        return read_text(url), True
    text, whole = read_head(url)
    return (text, True) if whole else (text[:text.rfind("\n") + 1], False)


def file_format(url: str) -> str:
    """``csv``, ``tsv`` or ``jsonl``, from the file's name (a compression suffix aside)."""
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


def read_records(url: str, fieldnames: list[str] | None = None,
                 head: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, dict)`` for each record of a CSV/TSV/JSONL file; a JSONL line that
    is not JSON comes as ``{"__error__": why}``. ``fieldnames`` names the columns of a
    CSV/TSV without a header line (GLUE's CoLA train/dev), whose first line is then a record.
    ``head``: the records of the file's first ``HEAD_BYTES`` only."""
    fmt = file_format(url)
    text, whole = read_lines(url, head)
    records = _records(fmt, io.StringIO(text, newline=""), fieldnames)
    if whole:
        yield from records
        return
    # the last record read may be cut (a quoted CSV field can span lines): held back
    last = None
    for record in records:
        if last is not None:
            yield last
        last = record


def _records(fmt: str, stream: io.StringIO, fieldnames: list[str] | None) -> Iterator[tuple[int, dict[str, Any]]]:
    if fmt == "jsonl":
        for n, line in enumerate(stream, 1):
            if line.strip():
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as e:
                    yield n, {"__error__": f"not JSON: {e}"}
        return
    # GLUE's TSVs are unquoted (a quote is just a character); CSVs use standard quoting
    reader = csv.DictReader(stream, fieldnames=fieldnames, delimiter="\t" if fmt == "tsv" else ",",
                            quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL)
    for record in reader:
        yield reader.line_num, record
