"""The one spill and merge of the Beam jobs (bertflow/pipelines/shards.py), on the FnApiRunner:
sorted Arrow IPC runs under ``_spill/``, merged a record batch of each at a time into
Parquet shards whose bytes depend only on the rows."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bertflow.contracts.layout import EXAMPLES_SCHEMA, list_shards
from bertflow.pipelines import shards
from bertflow.pipelines.counters import metric_counters
from bertflow.pipelines.local_runner import pipeline_options
from bertflow.pipelines.shards import WriteParquetShards, regroup, write_row_groups, write_table

ROWS = pa.schema([("id", pa.string()), ("n", pa.int64())])


def _write(out: str, workers: int, **kw) -> dict:
    p = beam.Pipeline(options=pipeline_options(direct_num_workers=workers))
    rows = p | beam.Create([{"id": f"doc{i}", "n": i} for i in range(500)])
    _ = rows | WriteParquetShards(out, "rows", ROWS, 3, key="id", **kw)
    result = p.run()
    result.wait_until_finish()
    return metric_counters(result)


def _bytes(folder) -> list[bytes]:
    return [open(u, "rb").read() for u in list_shards(str(folder), "rows")]


def test_sharded_output_is_byte_identical_for_any_worker_count(tmp_path):
    counters = _write(str(tmp_path / "one"), 1)
    _write(str(tmp_path / "two"), 2)
    assert counters == {"rows_rows": 500}
    one = list_shards(str(tmp_path / "one"), "rows")
    assert [u.rsplit("/", 1)[1] for u in one] == [f"rows-0000{i}-of-00003.parquet" for i in range(3)]
    assert _bytes(tmp_path / "one") == _bytes(tmp_path / "two")
    ids = [pq.read_table(u).column("id").to_pylist() for u in one]
    assert all(x == sorted(x) for x in ids) and sum(map(len, ids)) == 500


def test_rows_spill_to_runs_that_merge_into_the_same_bytes(tmp_path):
    # A tiny spill threshold: every bundle writes many small sorted runs per shard, and
    # the shard writers merge them. Same files as with one run per shard; no runs left.
    _write(str(tmp_path / "one-run"), 1)
    _write(str(tmp_path / "many-runs"), 2, spill_bytes=500)
    assert _bytes(tmp_path / "one-run") == _bytes(tmp_path / "many-runs")
    many = list_shards(str(tmp_path / "many-runs"), "rows")
    assert sorted(p.name for p in (tmp_path / "many-runs").iterdir()) == [u.rsplit("/", 1)[1] for u in many]


def test_a_writer_merges_a_bounded_number_of_runs_at_once(tmp_path, monkeypatch):
    # About 20 runs a shard, of one-row record batches, merged 2 at a time: runs are first
    # merged two by two into longer runs until 2 are left. The same files as one run a shard.
    merged: list[int] = []
    merge = shards.merge_runs
    monkeypatch.setattr(shards, "merge_runs", lambda runs, order: merged.append(len(runs)) or merge(runs, order))
    monkeypatch.setattr(shards, "MERGE_FAN_IN", 2)
    monkeypatch.setattr(shards, "RUN_BATCH_ROWS", 1)
    _write(str(tmp_path / "one-run"), 1)
    _write(str(tmp_path / "fan-in-2"), 1, spill_bytes=500)
    assert _bytes(tmp_path / "one-run") == _bytes(tmp_path / "fan-in-2")
    assert max(merged) == 2 and len(merged) > 3 * 10  # 3 shards: 19 merges for 20 runs


def test_rows_with_one_key_are_one_row(tmp_path):
    p = beam.Pipeline(options=pipeline_options(direct_num_workers=1))
    rows = p | beam.Create([{"id": "a", "n": 2}, {"id": "b", "n": 1}, {"id": "a", "n": 1}, {"id": "a", "n": 3}])
    _ = rows | WriteParquetShards(str(tmp_path), "rows", ROWS, 1, key="id", pick=lambda same: max(same, key=lambda r: r["n"]))
    result = p.run()
    result.wait_until_finish()
    assert pq.read_table(list_shards(str(tmp_path), "rows")[0]).to_pylist() == [{"id": "a", "n": 3}, {"id": "b", "n": 1}]
    assert metric_counters(result) == {"rows_rows": 2, "rows_duplicate": 2}


def test_row_groups_are_cut_by_rows_or_by_text():
    """A row group holds ROW_GROUP_ROWS rows, or fewer once it holds ROW_GROUP_BYTES of
    text (whole books), the cut depending only on the rows, not on how they come."""
    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    small = pa.Table.from_pylist([{"id": f"s{i}", "text": "x"} for i in range(shards.ROW_GROUP_ROWS + 5)], schema=schema)
    assert [t.num_rows for t in regroup([small], max_bytes=shards.ROW_GROUP_BYTES)] == [shards.ROW_GROUP_ROWS, 5]
    assert [t.num_rows for t in regroup([small.slice(0, 7), small.slice(7)])] == [shards.ROW_GROUP_ROWS, 5]
    book = "word " * (shards.ROW_GROUP_BYTES // 10)  # half of a group's text
    books = pa.Table.from_pylist([{"id": f"b{i}", "text": book} for i in range(5)], schema=schema)
    for pieces in ([books], [books.slice(i, 1) for i in range(5)], [books.slice(0, 3), books.slice(3)]):
        groups = list(regroup(pieces, max_bytes=shards.ROW_GROUP_BYTES))
        assert [t.num_rows for t in groups] == [2, 2, 1]
        assert pa.concat_tables(groups).equals(books)
    # The estimate: 64 a row, the characters of its strings, 8 and the characters per list item.
    docs = pa.table({"id": ["é", None], "sentences": pa.array([["ab", "c"], None], pa.list_(pa.string()))})
    assert shards.text_bytes(docs).tolist() == [64 + 1 + 8 + 2 + 8 + 1, 64]


SHUFFLED = pa.schema([*EXAMPLES_SCHEMA, ("_order", pa.uint64()), ("_iid", pa.string())])
ORDER = [("_order", "ascending"), ("_iid", "ascending")]


def test_run_merge_is_a_sort_and_writes_the_same_bytes(tmp_path, monkeypatch):
    """Shard writers merge sorted run files a record batch at a time: the rows come out as
    one sort of them all would give, keys that tie across a batch boundary included, and
    the file is byte for byte what writing the sorted table at once gives."""
    monkeypatch.setattr(shards, "RUN_BATCH_ROWS", 7)
    rng = np.random.default_rng(0)

    def run_table(n: int, first_id: int) -> pa.Table:
        lengths = rng.integers(3, 12, n)
        rows = [{"input_ids": rng.integers(0, 1000, k).tolist(), "token_type_ids": [0] * k, "masked_lm_positions": [1],
                 "masked_lm_ids": [5], "next_sentence_label": int(k % 2), "_order": int(rng.integers(0, 40)),
                 "_iid": f"doc-{first_id + i:05d}"} for i, k in enumerate(lengths)]  # fmt: skip
        return pa.Table.from_pylist(rows, schema=SHUFFLED).sort_by(ORDER)

    tables = [run_table(n, 1000 * i) for i, n in enumerate([50, 1, 23, 0, 97])]
    spill = str(tmp_path / "spill")
    urls = [shards.write_run(spill, [t], SHUFFLED) for t in tables]
    merged = list(shards.merge_runs(urls, ORDER))
    expected = pa.concat_tables(tables).sort_by(ORDER)
    assert pa.concat_tables(merged).equals(expected)
    assert max(t.num_rows for t in merged) < expected.num_rows  # merged piece by piece
    # More runs than a writer merges at once: merged in groups first, then together.
    monkeypatch.setattr(shards, "MERGE_FAN_IN", 2)
    assert pa.concat_tables(list(shards.merge_all(urls, ORDER, spill))).equals(expected)
    assert len(list((tmp_path / "spill").iterdir())) == len(urls) + 3  # 5 -> 4 -> 3 -> 2 runs: 3 written

    monkeypatch.setattr(shards, "ROW_GROUP_ROWS", 16)
    write_table(expected.select(EXAMPLES_SCHEMA.names), str(tmp_path / "at-once.parquet"))
    written = write_row_groups(regroup((t.select(EXAMPLES_SCHEMA.names) for t in merged), 16),
                               str(tmp_path / "merged.parquet"), EXAMPLES_SCHEMA)
    assert written == expected.num_rows
    assert (tmp_path / "merged.parquet").read_bytes() == (tmp_path / "at-once.parquet").read_bytes()
    write_row_groups(iter(()), str(tmp_path / "empty.parquet"), EXAMPLES_SCHEMA)
    assert pq.read_table(tmp_path / "empty.parquet").schema.equals(EXAMPLES_SCHEMA)
    assert pq.ParquetFile(tmp_path / "empty.parquet").metadata.num_row_groups == 1


def test_runs_merge_by_a_text_key_with_ties_across_batches(tmp_path, monkeypatch):
    # Documents' runs are sorted by id; the rows of one id always come in one piece (the
    # shard writer keeps one of them).
    monkeypatch.setattr(shards, "RUN_BATCH_ROWS", 3)
    ids = [f"d{i % 17:03d}" for i in range(60)]
    docs = pa.schema([("id", pa.string()), ("n", pa.int64())])
    tables = [pa.Table.from_pylist([{"id": d, "n": k} for k, d in enumerate(ids) if k % 3 == r], schema=docs).sort_by([("id", "ascending")])
              for r in range(3)]
    urls = [shards.write_run(str(tmp_path), [t], docs) for t in tables]
    pieces = list(shards.merge_runs(urls, [("id", "ascending")]))
    got = pa.concat_tables(pieces)
    assert got.column("id").to_pylist() == sorted(ids)
    firsts = [p.column("id")[0].as_py() for p in pieces if p.num_rows]
    lasts = [p.column("id")[-1].as_py() for p in pieces if p.num_rows]
    assert all(last < first for last, first in zip(lasts, firsts[1:]))
