"""Deterministic sharded Parquet output for Beam jobs, on any fsspec storage: the one
spill and merge of the documents and the examples jobs.

A job's rows go to a shard by a hash and are sorted inside it, so the bytes of every file
depend only on the rows, never on worker count, bundle boundaries or runner. Every shard
file exists even when empty, so a reader can trust ``-of-NNNNN``; each is written under a
temporary name and renamed into place.

Memory is bounded whatever the corpus size: the rows never go through the runner's
shuffle (the local FnApiRunner holds a shuffle in its own memory). Each bundle sorts its
rows and spills them, per shard, as run files under ``_spill/`` of the output (``Runs``:
Arrow IPC, lz4, in record batches of ``RUN_BATCH_ROWS`` rows or about ``RUN_BATCH_BYTES``);
only the runs' URLs are shuffled (``MergeShards``). Each shard's writer merges its runs
holding about one record batch of each and at most ``MERGE_FAN_IN`` runs at once (past
that, just enough runs are first merged into a longer one: ``merge_bounded``), and writes
row group after row group. ``_spill/`` is removed once every shard is written.
"""

from __future__ import annotations

import itertools
import operator
import uuid
from typing import Any, Callable, Iterable, Iterator

import apache_beam as beam
import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.transforms.window import GlobalWindows

from bertflow.contracts import storage
from bertflow.contracts.hashing import stable_hash
from bertflow.contracts.layout import open_shard, shard_name
from bertflow.contracts.storage import atomic_file
from bertflow.pipelines.counters import Counters
from bertflow.pipelines.local_runner import freeze_heap

Order = list[tuple[str, str]]  # pyarrow's sort keys: [(column, "ascending"), ...]

# --- Parquet shards ----------------------------------------------------------------------

ROW_GROUP_ROWS = 8192
ROW_GROUP_BYTES = 16 << 20  # of text (``text_bytes``): a row group of whole books stays small


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


def text_bytes(table: pa.Table) -> np.ndarray:
    """A cheap size of each row: 64, plus the characters of its strings, plus 8 per list
    item (the text is the bulk of a document)."""
    size = np.full(table.num_rows, 64, np.int64)
    for column in table.columns:
        if pa.types.is_string(column.type):
            size += pc.fill_null(pc.utf8_length(column), 0).to_numpy()
        elif pa.types.is_list(column.type):
            items = pc.fill_null(pc.list_value_length(column), 0).to_numpy().astype(np.int64)
            size += 8 * items
            if pa.types.is_string(column.type.value_type):
                chars = pc.fill_null(pc.utf8_length(pc.list_flatten(column)), 0).to_numpy()
                total = np.concatenate([[0], np.cumsum(chars, dtype=np.int64)])
                ends = np.cumsum(items)
                size += total[ends] - total[ends - items]
    return size


def regroup(tables: Iterable[pa.Table], rows: int = ROW_GROUP_ROWS, max_bytes: int | None = None) -> Iterator[pa.Table]:
    """The rows of ``tables`` (any sizes, in order) as tables of ``rows`` rows, or, with
    ``max_bytes``, fewer once they hold that much (``text_bytes``); the last one shorter.
    The cut depends only on the rows: with ``write_row_groups``, the bytes ``write_table``
    writes for them all (when no group is cut short by its text)."""
    pending: list[pa.Table] = []
    count = size = 0
    for table in tables:
        sizes = text_bytes(table) if max_bytes else None
        start = 0
        while start < table.num_rows:
            end = min(table.num_rows, start + rows - count)
            if sizes is not None:
                total = size + np.cumsum(sizes[start:end])
                full = int(np.searchsorted(total, max_bytes, side="left"))  # the row that fills the group
                end = min(end, start + full + 1)
                size = int(total[end - start - 1])
            pending.append(table.slice(start, end - start))
            count += end - start
            start = end
            if count == rows or (sizes is not None and size >= max_bytes):
                yield pa.concat_tables(pending)
                pending, count, size = [], 0, 0
    if count:
        yield pa.concat_tables(pending)


def read_rows(urls: Iterable[str], columns: list[str] | None = None):
    """Stream rows (dicts) from Parquet files, one row group at a time; a damaged file
    raises ``DamagedShard``, naming it."""
    for url in urls:
        with open_shard(url) as shard:
            for i in range(shard.num_row_groups):
                yield from shard.read_row_group(i, columns=columns).to_pylist()


# --- runs: sorted Arrow IPC files under the output's _spill/ ------------------------------

SPILL = "_spill"
RUN_BATCH_ROWS = 1024
RUN_BATCH_BYTES = 1 << 20
# Runs merged at once. A shard gets a run from every flush of every worker, so their
# number grows with the corpus.
MERGE_FAN_IN = 64


def write_run(folder: str, tables: Iterable[pa.Table], schema: pa.Schema) -> str:
    """``tables`` (sorted, one after another) as a new lz4-compressed Arrow IPC file
    under ``folder``, in record batches of at most ``RUN_BATCH_ROWS`` rows and about
    ``RUN_BATCH_BYTES`` (a merge holds one batch of each run); returns its URL."""
    fs, path = storage.fs_for(folder)
    fs.makedirs(path, exist_ok=True)
    run = f"{path.rstrip('/')}/{uuid.uuid4().hex}.arrow"
    with fs.open(run, "wb") as f:
        with pa.ipc.new_file(f, schema, options=pa.ipc.IpcWriteOptions(compression="lz4")) as writer:
            for table in tables:
                rows = max(1, min(RUN_BATCH_ROWS, RUN_BATCH_BYTES * table.num_rows // max(1, table.nbytes)))
                writer.write_table(table, max_chunksize=rows)
    return storage.url_of(fs, run)


class Runs:
    """A bundle's rows on their way to the shard writers: tables added per shard key,
    written by ``flush`` as one run per key, sorted in ``order``, under ``folder``."""

    def __init__(self, folder: str, schema: pa.Schema, order: Order):
        self.folder, self.schema, self.order = folder, schema, order
        self.pending: dict[Any, list[pa.Table]] = {}
        self.nbytes = 0  # Arrow bytes pending

    def add(self, key: Any, table: pa.Table) -> None:
        self.pending.setdefault(key, []).append(table)
        self.nbytes += table.nbytes

    def flush(self) -> list[tuple[Any, str]]:
        """(key, run URL) of every key with pending rows; nothing is pending after."""
        runs = [(key, write_run(self.folder, [pa.concat_tables(tables).sort_by(self.order)], self.schema))
                for key, tables in sorted(self.pending.items())]
        self.pending, self.nbytes = {}, 0
        return runs


class _Run:
    """A run file read one record batch at a time: ``rows`` are its loaded rows not yet
    merged, ``keys`` their first sort column."""

    def __init__(self, url: str, column: str):
        self.file = fsspec.open(url, "rb").open()
        self.reader = pa.ipc.open_file(self.file)
        self.column = column
        self.unread = iter(range(self.reader.num_record_batches))
        self.rows = self.reader.schema.empty_table()
        self.keys = self.rows.column(column).to_numpy()
        self.more = self.load()

    def load(self) -> bool:
        """Append the next record batch to ``rows``; False (and the file closed) at the end."""
        i = next(self.unread, None)
        if i is None:
            self.file.close()
            return False
        batch = self.reader.get_batch(i)
        self.rows = pa.concat_tables([self.rows, pa.Table.from_batches([batch])])
        self.keys = np.concatenate([self.keys, batch.column(self.column).to_numpy(zero_copy_only=False)])
        return True

    def take_through(self, bound) -> pa.Table:
        """The loaded rows whose key is at most ``bound``, removed from ``rows``."""
        n = int(np.searchsorted(self.keys, bound, side="right"))
        taken, self.rows, self.keys = self.rows.slice(0, n), self.rows.slice(n), self.keys[n:]
        if not len(self.keys) and self.more:
            self.more = self.load()
        return taken


def merge_runs(urls: list[str], order: Order) -> Iterator[pa.Table]:
    """The rows of run files, each sorted in ``order``, as tables in ``order``. Rows with
    the same first sort key always come in one table."""
    runs = [run for run in (_Run(url, order[0][0]) for url in urls) if len(run.keys)]
    while runs:
        # Every row at or below the least of the runs' last loaded keys is loaded (rows
        # with that very key may go on in a run's next batch: those are loaded first).
        bound = min(run.keys[-1] for run in runs)
        for run in runs:
            while run.keys[-1] == bound and run.more:
                run.more = run.load()
        yield pa.concat_tables([run.take_through(bound) for run in runs]).sort_by(order)
        runs = [run for run in runs if len(run.keys)]


def merge_bounded(runs: list[str], merge: Callable[[list[str]], Iterable], write_run: Callable[[Iterable], str]) -> Iterable:
    """``merge(runs)``, merging at most ``MERGE_FAN_IN`` runs at once: past that, runs are
    first merged into new runs (``write_run(merged) -> URL``), oldest first, each new run
    going to the back, just enough of them that ``MERGE_FAN_IN`` are left, so that a
    writer's memory does not grow with the number of runs and few rows are written twice.
    Runs merged this way are left to the job's end, when the spill folder goes: a retried
    bundle finds them."""
    while len(runs) > MERGE_FAN_IN:
        take = min(MERGE_FAN_IN, len(runs) - MERGE_FAN_IN + 1)
        runs = [*runs[take:], write_run(merge(runs[:take]))]
    return merge(runs)


def merge_all(urls: list[str], order: Order, folder: str) -> Iterator[pa.Table]:
    """``merge_runs`` of any number of runs, at most ``MERGE_FAN_IN`` at once (longer runs
    go under ``folder``)."""
    if not urls:
        return iter(())
    with fsspec.open(urls[0], "rb") as f:
        schema = pa.ipc.open_file(f).schema
    return merge_bounded(urls, lambda runs: merge_runs(runs, order), lambda tables: write_run(folder, tables, schema))


class _WriteShard(beam.DoFn):
    def __init__(self, write: Callable[[Any, list[str]], tuple[str, int]]):
        self.write = write

    def setup(self):
        freeze_heap()

    def process(self, element):
        key, runs = element
        yield self.write(key, sorted(r for r in runs if r is not None))  # a fixed order for equal keys


class MergeShards(beam.PTransform):
    """``(runs, more_runs) | MergeShards(keys, write, spill)``: (shard key, run URL) pairs
    grouped per shard, and every shard of ``keys`` (one with no run too) written by
    ``write(key, its run URLs) -> (file name, rows)``. ``spill`` is removed once all are
    written. Returns the PCollection of (file name, rows)."""

    def __init__(self, keys: list, write: Callable[[Any, list[str]], tuple[str, int]], spill: str):
        super().__init__()
        self.keys, self.write, self.spill = keys, write, spill

    def expand(self, runs):
        runs = tuple(runs) if isinstance(runs, (tuple, list)) else (runs,)
        every = runs[0].pipeline | "EveryShard" >> beam.Create([(key, None) for key in self.keys])
        written = (
            (*runs, every)
            | "Flatten" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShards" >> beam.ParDo(_WriteShard(self.write))
        )
        # Once every shard is written (the count waits for all of them), the runs go.
        _ = written | "AllWritten" >> beam.combiners.Count.Globally() | "DropSpill" >> beam.Map(drop_spill, self.spill)
        return written


def drop_spill(_, url: str) -> None:
    """``storage.remove_tree(url)`` as a ``beam.Map`` step (the element is ignored)."""
    storage.remove_tree(url)


# --- rows from Python: the corpus jobs' documents ------------------------------------------

SPILL_BYTES = 16 << 20  # of text a bundle buffers before it writes its runs


def _row_bytes(row: dict) -> int:
    """``text_bytes`` of one Python row."""
    n = 64
    for v in row.values():
        if isinstance(v, str):
            n += len(v)
        elif isinstance(v, list):
            n += sum(len(x) + 8 if isinstance(x, str) else 8 for x in v)
    return n


class _SpillRows(beam.DoFn):
    """Rows -> (shard, run URL): per bundle, each shard's rows as a run sorted by ``key``."""

    def __init__(self, spill: str, schema: pa.Schema, num_shards: int, key: str, spill_bytes: int):
        self.spill, self.schema, self.num_shards, self.key = spill, schema, num_shards, key
        self.spill_bytes = spill_bytes

    def setup(self):
        freeze_heap()

    def start_bundle(self):
        self.runs = Runs(self.spill, self.schema, [(self.key, "ascending")])
        self.rows: dict[int, list[dict]] = {}
        self.buffered = 0

    def process(self, row):
        self.rows.setdefault(stable_hash(row[self.key]) % self.num_shards, []).append(row)
        self.buffered += _row_bytes(row)
        if self.buffered >= self.spill_bytes:
            yield from self._flush()

    def finish_bundle(self):
        for shard_run in self._flush():
            yield GlobalWindows.windowed_value(shard_run)

    def _flush(self):
        for shard, rows in self.rows.items():
            self.runs.add(shard, pa.Table.from_pylist(rows, schema=self.schema))
        self.rows, self.buffered = {}, 0
        return self.runs.flush()


class _RowShard:
    """A shard's runs -> its Parquet file: one row per key (``pick``), ``schema``'s columns,
    row groups of ``ROW_GROUP_ROWS`` rows or ``ROW_GROUP_BYTES`` of text."""

    def __init__(self, output: str, prefix: str, schema: pa.Schema, num_shards: int, key: str, pick, count_rows,
                 spill: str):
        self.output, self.prefix, self.schema, self.num_shards = output, prefix, schema, num_shards
        self.key, self.pick, self.count_rows, self.spill = key, pick, count_rows, spill
        self.count = Counters("shards")

    def __call__(self, index: int, runs: list[str]) -> tuple[str, int]:
        merged = merge_all(runs, [(self.key, "ascending")], self.spill)
        tables = (self._one_per_key(table) for table in merged)
        name = shard_name(self.prefix, index, self.num_shards)
        written = write_row_groups(regroup(tables, max_bytes=ROW_GROUP_BYTES), storage.join(self.output, name), self.schema)
        self.count(f"{self.prefix}_rows", written)
        return name, written

    def _one_per_key(self, table: pa.Table) -> pa.Table:
        keys = table.column(self.key).to_numpy(zero_copy_only=False)
        if (keys[1:] == keys[:-1]).any():
            kept = []
            for _, same in itertools.groupby(table.to_pylist(), key=operator.itemgetter(self.key)):
                same = list(same)
                if len(same) > 1:
                    self.count(f"{self.prefix}_duplicate", len(same) - 1)
                kept.append(self.pick(same) if len(same) > 1 else same[0])
            table = pa.Table.from_pylist(kept, schema=table.schema)
        if self.count_rows and table.num_rows:
            for counter, n in self.count_rows(table).items():
                self.count(counter, n)
        return table.select(self.schema.names)


def first_by_content(rows: list[dict]) -> dict:
    """Of rows with one key, the least by content (a choice that does not depend on which
    row arrived first)."""
    return min(rows, key=lambda r: repr(sorted(r.items())))


class WriteParquetShards(beam.PTransform):
    """``rows | WriteParquetShards(output, "documents", schema, 8, key="id")``

    The column ``key`` picks the shard and orders rows within it; rows with the same key
    are one row in the output: ``pick(rows)`` (default: the least by content; counted as
    ``{prefix}_duplicate``). Rows may carry more fields than ``schema`` (what ``pick``
    needs, say): ``spill_schema`` then names them all. ``count_rows(table) -> {name: n}``
    adds Beam counters over the rows written. Returns a PCollection of ``(file name, rows)``.
    """

    def __init__(self, output: str, prefix: str, schema: pa.Schema, num_shards: int, key: str,
                 pick: Callable[[list[dict]], dict] = first_by_content, spill_schema: pa.Schema | None = None,
                 count_rows: Callable[[pa.Table], dict[str, int]] | None = None, spill_bytes: int = SPILL_BYTES):
        super().__init__()
        if num_shards < 1:
            raise ValueError("num_shards must be >= 1")
        self.output, self.prefix, self.schema = output, prefix, schema
        self.num_shards, self.key, self.pick = num_shards, key, pick
        self.spill_schema, self.count_rows, self.spill_bytes = spill_schema or schema, count_rows, spill_bytes

    def expand(self, rows):
        spill = storage.join(self.output, SPILL)
        runs = rows | "Spill" >> beam.ParDo(_SpillRows(spill, self.spill_schema, self.num_shards, self.key, self.spill_bytes))
        write = _RowShard(self.output, self.prefix, self.schema, self.num_shards, self.key, self.pick, self.count_rows, spill)
        return runs | "Merge" >> MergeShards(list(range(self.num_shards)), write, spill)
