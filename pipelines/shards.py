"""Deterministic sharded Parquet output for Beam jobs, on any fsspec storage.

Rows go to shard ``hash(key) % num_shards`` and are sorted by key inside their shard,
so the bytes of every file depend only on the rows, never on worker count, bundle
boundaries or runner. Every shard file exists even when empty, so a reader can trust
``-of-NNNNN``. Each file is written under a temporary name and renamed into place.

Memory: one worker holds one shard while sorting it; choose ``num_shards`` so that a
shard is a few hundred MB at most.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
from typing import Any, Callable, Iterable

import apache_beam as beam
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq


def stable_hash(*parts: Any) -> int:
    """A 64-bit hash of ``parts`` that is the same in every process and on every machine
    (Python's ``hash`` is salted per process)."""
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(str(part).encode("utf-8"))
        h.update(b"\x1f")
    return int.from_bytes(h.digest(), "little")


def shard_name(prefix: str, index: int, num_shards: int) -> str:
    return f"{prefix}-{index:05d}-of-{num_shards:05d}.parquet"


def write_table(table: pa.Table, url: str) -> None:
    """Write a Parquet file atomically: to a temporary name beside it, then rename."""
    fs, path = fsspec.core.url_to_fs(url)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=8192)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    tmp = posixpath.join(posixpath.dirname(path), "_tmp." + posixpath.basename(path))
    with fs.open(tmp, "wb") as f:
        f.write(buf.getvalue())
    fs.mv(tmp, path)


class _WriteShard(beam.DoFn):
    def __init__(self, output: str, prefix: str, schema: pa.Schema, num_shards: int, sort_key):
        self.output, self.prefix, self.schema = output, prefix, schema
        self.num_shards, self.sort_key = num_shards, sort_key
        self.rows_written = beam.metrics.Metrics.counter("shards", f"{prefix}_rows")

    def process(self, element):
        index, rows = element
        rows = sorted((r for r in rows if r is not None), key=self.sort_key)
        table = pa.Table.from_pylist(rows, schema=self.schema)
        name = shard_name(self.prefix, index, self.num_shards)
        write_table(table, posixpath.join(self.output.rstrip("/"), name))
        self.rows_written.inc(len(rows))
        yield name, len(rows)


class WriteParquetShards(beam.PTransform):
    """``rows | WriteParquetShards(output, "documents", schema, 8, key=lambda r: r["id"])``

    ``key`` picks the shard and orders rows within it; it must be unique per row for the
    output to be byte-stable. Returns a PCollection of ``(file name, row count)``.
    """

    def __init__(
        self,
        output: str,
        prefix: str,
        schema: pa.Schema,
        num_shards: int,
        key: Callable[[dict], Any],
    ):
        super().__init__()
        if num_shards < 1:
            raise ValueError("num_shards must be >= 1")
        self.output, self.prefix, self.schema = output, prefix, schema
        self.num_shards, self.key = num_shards, key

    def expand(self, rows):
        n, key = self.num_shards, self.key
        keyed = rows | "ShardOf" >> beam.Map(lambda r: (stable_hash(key(r)) % n, r))
        # One None per shard so that empty shards are written too.
        every = rows.pipeline | "EveryShard" >> beam.Create([(i, None) for i in range(n)])
        return (
            (keyed, every)
            | "Flatten" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(_WriteShard(self.output, self.prefix, self.schema, n, key))
        )


def list_shards(url: str, prefix: str) -> list[str]:
    """The URLs of ``prefix-*.parquet`` under ``url``, in shard order."""
    fs, path = fsspec.core.url_to_fs(url)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    found = sorted(fs.glob(posixpath.join(path.rstrip("/"), f"{prefix}-*.parquet")))
    if protocol in ("file", "local"):
        return found
    return [f"{protocol}://{p}" for p in found]


def read_rows(urls: Iterable[str], columns: list[str] | None = None):
    """Stream rows (dicts) from Parquet files, one row group at a time."""
    for url in urls:
        with fsspec.open(url, "rb") as f:
            pf = pq.ParquetFile(f)
            for i in range(pf.num_row_groups):
                yield from pf.read_row_group(i, columns=columns).to_pylist()


def metric_counters(result) -> dict[str, int]:
    """Beam counters of a finished pipeline as ``{name: value}`` (committed values)."""
    out: dict[str, int] = {}
    for c in result.metrics().query()["counters"]:
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(c.committed or 0)
    return dict(sorted(out.items()))
