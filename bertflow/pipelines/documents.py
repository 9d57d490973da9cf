"""Reading documents shards (the corpus steps' output): which shards an input holds, and,
for the examples job, work units of row groups planned from the Parquet footers, the
train/eval split of documents and the buckets within a unit.

Units and buckets depend on the documents and their layout, never on the worker count,
so the output does not either.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator

from bertflow.contracts.hashing import hash_to_bytes, stable_hash, stable_hasher
from bertflow.contracts.layout import DOCUMENTS, list_shards, open_shard
from bertflow.pipelines.counters import Counters

log = logging.getLogger(__name__)

Unit = tuple  # ((input index, shard URL, row group), ...): consecutive row groups


def document_shards(folders: list[str]) -> list[tuple[int, str]]:
    """(input index, shard URL) for every documents shard of every input folder."""
    out = []
    for index, folder in enumerate(folders):
        shards = list_shards(folder, DOCUMENTS)
        if not shards:
            raise FileNotFoundError(f"{folder} holds no documents-*.parquet shards: give the output folder of a "
                                    "wikipedia or books step")
        out.extend((index, url) for url in shards)
    return out


# With this many documents or more, the two least split hashes are eval (train keeps two),
# so that an eval pair's random partner comes from the eval side; with fewer, the least.
TWO_HELD_OUT = 4


def held_out_count(total_docs: int) -> int:
    """How many of the least split hashes are always eval."""
    return 2 if total_docs >= TWO_HELD_OUT else 1 if total_docs >= 2 else 0


def split_of(seed: int, uid: str, eval_fraction: float, least: Iterable[bytes] = ()) -> str:
    """``eval`` when the document's split hash falls under ``eval_fraction``, or when it is
    one of ``least``, the least split hashes of the corpus (``hash_to_bytes``; so that the
    eval split holds documents unless those are empty or malformed; when any hash falls
    under the fraction, the least does too)."""
    h = stable_hash(seed, "split", uid)
    return "eval" if h < eval_fraction * 2.0**64 or hash_to_bytes(h) in least else "train"


def split_hashes(unit: Unit, seed: int) -> Iterator[bytes]:
    """The split hash of every document of a unit that has an id (its id column only), as
    bytes (``hash_to_bytes``: Beam's int coder is signed 64-bit)."""
    hash_of = stable_hasher(seed, "split")
    for index, url, group in unit:
        with open_shard(url) as shard:
            ids = shard.read_row_group(group, columns=["id"]).column("id").to_pylist()
        yield from (hash_to_bytes(hash_of(uid_of(index, doc_id))) for doc_id in ids if doc_id is not None)


def num_buckets(num_docs: float, docs_per_bucket: int) -> int:
    return max(1, math.ceil(num_docs / docs_per_bucket))


def plan_units(folders: list[str], docs_per_bucket: int) -> tuple[list[Unit], int]:
    """The work units, and the documents in all: consecutive row groups of the documents
    shards, at least ``docs_per_bucket`` documents a unit (a row group is 8192 documents
    at most), from the Parquet footers (no data is read)."""
    units: list[Unit] = []
    current: list[tuple[int, str, int]] = []
    rows = total = 0
    for index, url in document_shards(folders):
        with open_shard(url) as shard:
            meta = shard.metadata
        for group in range(meta.num_row_groups):
            n = meta.row_group(group).num_rows
            if not n:
                continue
            current.append((index, url, group))
            rows, total = rows + n, total + n
            if rows >= docs_per_bucket:
                units.append(tuple(current))
                current, rows = [], 0
    if current:  # too few for a unit of their own: they join the last one
        units[-1:] = [(*units[-1], *current)] if units else [tuple(current)]
    return units, total


def uid_of(index: int, doc_id: str) -> str:
    """A document's id in the job: prefixed with its input's index, so that two inputs may
    reuse an id."""
    return f"{index}/{doc_id}"


def read_unit(unit: Unit, count: Counters) -> list[tuple[str, list[str]]]:
    """A unit's documents as (uid, sentences); the uid is prefixed with the input's index,
    so that two inputs may reuse an id. Rows without an id or with sentences that are not
    strings are counted (``documents_malformed``), logged and skipped."""
    docs = []
    for index, url, group in unit:
        with open_shard(url) as shard:
            rows = shard.read_row_group(group, columns=["id", "sentences"]).to_pylist()
        for row in rows:
            doc_id, sentences = row.get("id"), row.get("sentences")
            if doc_id is None or sentences is None or any(not isinstance(s, str) for s in sentences):
                count("documents_malformed")
                log.warning("%s: skipping document %r: no id or sentences that are not strings", url, doc_id)
                continue
            docs.append((uid_of(index, doc_id), sentences))
    return docs


def bucket_of(seed: int, uid: str, buckets: int) -> int:
    return stable_hash(seed, "bucket", uid) % buckets
