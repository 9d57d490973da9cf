"""Deterministic sharded Parquet output for Beam jobs, on any fsspec storage.

Rows go to shard ``hash(key) % num_shards`` and are sorted by key inside their shard,
so the bytes of every file depend only on the rows, never on worker count, bundle
boundaries or runner. Every shard file exists even when empty, so a reader can trust
``-of-NNNNN``. Each file is written under a temporary name and renamed into place.

Memory is bounded whatever the corpus size: the rows themselves never go through the
runner's shuffle (the local FnApiRunner keeps a shuffle in its own memory). Each bundle
sorts its rows and spills them, per shard, into run files under ``_spill/`` of the output
(a new run once ``spill_bytes`` are buffered); only the run files' names are shuffled.
Each shard's writer merges its runs, holding one row group of each (64 rows, or fewer
once they hold 1 MB of text) and at most ``MERGE_FAN_IN`` runs at once (past that, just
enough runs are first merged into a longer one), and writes row group after row group
(8192 rows, or fewer once they hold 16 MB of text: a row group of whole books).
``_spill/`` is removed once every shard is written.
"""

from __future__ import annotations

import heapq
import itertools
import posixpath
import uuid
from typing import Any, Callable, Iterable, Iterator

import apache_beam as beam
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.transforms.window import GlobalWindows

from contracts import storage
from contracts.hashing import stable_hash
from contracts.layout import shard_name
from contracts.storage import atomic_file
from pipelines.counters import Counters
from pipelines.local_runner import freeze_heap

ROW_GROUP_ROWS = 8192
ROW_GROUP_BYTES = 16 << 20  # of text, for rows written from Python (row_groups)


def write_table(table: pa.Table, url: str) -> None:
    """Write a Parquet file atomically."""
    with atomic_file(url) as f:
        pq.write_table(table, f, compression="zstd", row_group_size=ROW_GROUP_ROWS)


def write_row_groups(groups: Iterable[pa.Table], url: str, schema: pa.Schema) -> int:
    """Write each table of ``groups`` as one row group of one Parquet file, atomically,
    holding one group at a time (written from contiguous columns: Parquet's pages follow
    the chunks it is given, and ``write_table`` writes contiguous ones). A file with no
    rows still gets its schema and one empty row group. Returns the rows written."""
    written = 0
    with atomic_file(url) as f, pq.ParquetWriter(f, schema, compression="zstd") as writer:
        for group in groups:
            writer.write_table(group.combine_chunks())
            written += group.num_rows
        if not written:
            writer.write_table(schema.empty_table())
    return written


def regroup(tables: Iterable[pa.Table], rows: int = ROW_GROUP_ROWS) -> Iterator[pa.Table]:
    """The rows of ``tables`` (any sizes, in order) as tables of ``rows`` rows, the last
    one shorter: with ``write_row_groups``, the bytes ``write_table`` writes for them all."""
    pending: list[pa.Table] = []
    buffered = 0
    for table in tables:
        pending.append(table)
        buffered += table.num_rows
        while buffered >= rows:
            joined = pa.concat_tables(pending)
            yield joined.slice(0, rows)
            pending, buffered = [joined.slice(rows)], buffered - rows
    if buffered:
        yield pa.concat_tables(pending)


def row_groups(rows: Iterable[dict], schema: pa.Schema, max_rows: int = ROW_GROUP_ROWS,
               max_bytes: int = ROW_GROUP_BYTES) -> Iterator[pa.Table]:
    """Rows as tables of ``max_rows`` rows, or fewer once they hold ``max_bytes`` (by
    ``_row_bytes``): a row group of whole books stays small enough to hold as Python
    rows."""
    group, size = [], 0
    for row in rows:
        group.append(row)
        size += _row_bytes(row)
        if len(group) == max_rows or size >= max_bytes:
            yield pa.Table.from_pylist(group, schema=schema)
            group, size = [], 0
    if group:
        yield pa.Table.from_pylist(group, schema=schema)


SPILL = "_spill"
SPILL_BYTES = 16 << 20  # text buffered per bundle before a run is written (64 MB: 337 MiB at x32 of the wiki sample, 324 at 16)
# A run's row groups, which a merge reads one at a time from each run it merges.
RUN_GROUP_ROWS = 64
RUN_GROUP_BYTES = 1 << 20
# Runs merged at once. A shard gets a run from every flush of every worker, so their
# number grows with the corpus (a full Wikipedia dump: about a thousand 16 MB flushes).
MERGE_FAN_IN = 64


def merge_bounded(runs: list[str], merge: Callable[[list[str]], Iterable], write_run: Callable[[Iterable], str]) -> Iterable:
    """``merge(runs)``, merging at most ``MERGE_FAN_IN`` runs at once: past that, runs are
    first merged into new runs (``write_run(merged) -> URL``), oldest first, each new run
    going to the back, just enough of them that ``MERGE_FAN_IN`` are left, so that a
    writer's memory does not grow with the number of runs and few rows are written twice
    (100 runs: 37 merged first, then 64). Runs merged this way are left to the job's end,
    when the spill folder goes: a retried bundle finds them."""
    while len(runs) > MERGE_FAN_IN:
        take = min(MERGE_FAN_IN, len(runs) - MERGE_FAN_IN + 1)
        runs = [*runs[take:], write_run(merge(runs[:take]))]
    return merge(runs)


def _write_run(folder: str, rows: Iterable[dict], schema: pa.Schema) -> str:
    """Rows, in key order, as a new Parquet run file under ``folder`` (not compressed:
    read once, then deleted); returns its URL."""
    fs, path = storage.fs_for(folder)
    fs.makedirs(path, exist_ok=True)
    run = posixpath.join(path, f"{uuid.uuid4().hex}.parquet")
    with fs.open(run, "wb") as f, pq.ParquetWriter(f, schema, compression="none") as writer:
        for group in row_groups(rows, schema, RUN_GROUP_ROWS, RUN_GROUP_BYTES):
            writer.write_table(group)
    return storage.url_of(fs, run)


def _row_bytes(row: dict) -> int:
    """A cheap size estimate: the strings' lengths (the bulk of a document)."""
    n = 64
    for v in row.values():
        if isinstance(v, str):
            n += len(v)
        elif isinstance(v, list):
            n += sum(len(x) + 8 if isinstance(x, str) else 8 for x in v)
    return n


class _SpillRuns(beam.DoFn):
    """Rows -> (shard, run file URL): per bundle, each shard's rows sorted by key, written
    as Parquet runs of ``schema``."""

    def __init__(self, spill: str, schema: pa.Schema, num_shards: int, key, spill_bytes: int):
        self.spill, self.schema, self.num_shards, self.key = spill, schema, num_shards, key
        self.spill_bytes = spill_bytes

    def setup(self):
        freeze_heap()

    def start_bundle(self):
        self.rows: dict[int, list[dict]] = {}
        self.buffered = 0

    def process(self, row):
        self.rows.setdefault(stable_hash(self.key(row)) % self.num_shards, []).append(row)
        self.buffered += _row_bytes(row)
        if self.buffered >= self.spill_bytes:
            yield from self._flush()

    def finish_bundle(self):
        for shard_run in self._flush():
            yield GlobalWindows.windowed_value(shard_run)

    def _flush(self):
        for shard, rows in sorted(self.rows.items()):
            rows.sort(key=self.key)
            yield shard, _write_run(posixpath.join(self.spill, f"{shard:05d}"), rows, self.schema)
        self.rows, self.buffered = {}, 0


class _MergeRuns(beam.DoFn):
    """(shard, [run URLs or None]) -> the shard file: the runs merged in key order, one
    row per key (``pick`` chooses among rows with the same key), ``schema``'s columns.
    Runs merged in groups first go under ``spill`` (``spill_schema``: all the rows'
    fields)."""

    def __init__(self, output: str, prefix: str, schema: pa.Schema, num_shards: int, key, pick, count_row,
                 spill: str, spill_schema: pa.Schema):
        self.output, self.prefix, self.schema, self.num_shards = output, prefix, schema, num_shards
        self.key, self.pick, self.count_row = key, pick, count_row
        self.spill, self.spill_schema = spill, spill_schema
        self.count = Counters("shards")

    def setup(self):
        freeze_heap()

    def process(self, element):
        index, runs = element
        runs = sorted(r for r in runs if r is not None)  # a fixed order for equal keys
        folder = posixpath.join(self.spill, f"{index:05d}")
        merged = merge_bounded(runs, self._merge, lambda rows: _write_run(folder, rows, self.spill_schema))
        name = shard_name(self.prefix, index, self.num_shards)
        rows = (self._one_row(list(same)) for _, same in itertools.groupby(merged, key=self.key))
        written = write_row_groups(row_groups(rows, self.schema), posixpath.join(self.output.rstrip("/"), name), self.schema)
        self.count(f"{self.prefix}_rows", written)
        yield name, written

    def _merge(self, runs: list[str]) -> Iterator[dict]:
        return heapq.merge(*(read_rows([run]) for run in runs), key=self.key)

    def _one_row(self, same: list[dict]) -> dict:
        if len(same) > 1:
            self.count(f"{self.prefix}_duplicate", len(same) - 1)
        row = self.pick(same) if len(same) > 1 else same[0]
        for counter, n in (self.count_row(row) if self.count_row else {}).items():
            self.count(counter, n)
        return {c: row[c] for c in self.schema.names}


def first_by_content(rows: list[dict]) -> dict:
    """Of rows with one key, the least by content (a choice that does not depend on which
    row arrived first)."""
    return min(rows, key=lambda r: repr(sorted(r.items())))


class WriteParquetShards(beam.PTransform):
    """``rows | WriteParquetShards(output, "documents", schema, 8, key=lambda r: r["id"])``

    ``key`` picks the shard and orders rows within it; rows with the same key are one row
    in the output: ``pick(rows)`` (default: the least by content; counted as
    ``{prefix}_duplicate``). Rows may carry more fields than ``schema`` (what ``pick``
    needs, say): ``spill_schema`` then names them all. ``count_row(row) -> {name: n}`` adds
    Beam counters over the rows written. Returns a PCollection of ``(file name, rows)``.
    """

    def __init__(self, output: str, prefix: str, schema: pa.Schema, num_shards: int, key: Callable[[dict], Any],
                 pick: Callable[[list[dict]], dict] = first_by_content, spill_schema: pa.Schema | None = None,
                 count_row: Callable[[dict], dict[str, int]] | None = None, spill_bytes: int = SPILL_BYTES):
        super().__init__()
        if num_shards < 1:
            raise ValueError("num_shards must be >= 1")
        self.output, self.prefix, self.schema = output, prefix, schema
        self.num_shards, self.key, self.pick = num_shards, key, pick
        self.spill_schema, self.count_row, self.spill_bytes = spill_schema or schema, count_row, spill_bytes

    def expand(self, rows):
        n = self.num_shards
        spill = posixpath.join(self.output.rstrip("/"), SPILL)
        runs = rows | "Spill" >> beam.ParDo(_SpillRuns(spill, self.spill_schema, n, self.key, self.spill_bytes))
        # One None per shard so that empty shards are written too.
        every = rows.pipeline | "EveryShard" >> beam.Create([(i, None) for i in range(n)])
        written = (
            (runs, every)
            | "Flatten" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "MergeRuns" >> beam.ParDo(_MergeRuns(self.output, self.prefix, self.schema, n, self.key, self.pick,
                                                   self.count_row, spill, self.spill_schema))
        )
        # Once every shard is written (the count waits for all of them), the runs go.
        _ = written | "AllWritten" >> beam.combiners.Count.Globally() | "DropSpill" >> beam.Map(drop_spill, spill)
        return written


def drop_spill(_, url: str) -> None:
    """``storage.remove_tree(url)`` as a ``beam.Map`` step (the element is ignored)."""
    storage.remove_tree(url)


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
