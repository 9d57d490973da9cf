"""Reading task files through fsspec: whole texts, and the records of CSV/TSV/JSONL tables."""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Iterator

import fsspec

_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")


def read_text(url: str) -> str:
    """A whole text file from any fsspec URL (compression from the name: .gz, .bz2, ...)."""
    with fsspec.open(url, "rb", compression="infer") as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{url}: not UTF-8 text ({e}); re-encode the file as UTF-8") from None


def text_stream(url: str) -> io.StringIO:
    return io.StringIO(read_text(url), newline="")


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


def read_records(url: str, fieldnames: list[str] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, dict)`` for each record of a CSV/TSV/JSONL file; a JSONL line that
    is not JSON comes as ``{"__error__": why}``. ``fieldnames`` names the columns of a
    CSV/TSV without a header line (GLUE's CoLA train/dev), whose first line is then a record."""
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
    reader = csv.DictReader(stream, fieldnames=fieldnames, delimiter="\t" if fmt == "tsv" else ",",
                            quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL)
    for record in reader:
        yield reader.line_num, record
