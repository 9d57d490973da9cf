"""The engines: Beam options from the spec (a real pipeline on them), Ray's connection."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import DirectOptions, GoogleCloudOptions, StandardOptions

from infra.engines import FN_API_RUNNER, beam_options
from pipelines.shards import WriteParquetShards, list_shards, metric_counters


def test_local_default_is_the_fn_api_runner_with_a_worker_per_core():
    import os

    opts = beam_options()
    assert opts.view_as(StandardOptions).runner == FN_API_RUNNER
    assert opts.view_as(DirectOptions).direct_num_workers == (os.cpu_count() or 1)
    two = beam_options("DirectRunner", {"direct_num_workers": 2}).view_as(DirectOptions)
    assert (two.direct_running_mode, two.direct_num_workers) == ("multi_processing", 2)
    # one worker runs in the runner's process: no worker process, no gRPC data plane
    assert beam_options(direct_num_workers=1).view_as(DirectOptions).direct_running_mode == "in_memory"


def test_remote_runner_options_pass_through():
    opts = beam_options("DataflowRunner", {"project": "p", "region": "europe-west4", "temp_location": "gs://b/tmp"})
    assert opts.view_as(StandardOptions).runner == "DataflowRunner"
    gcp = opts.view_as(GoogleCloudOptions)
    assert (gcp.project, gcp.region, gcp.temp_location) == ("p", "europe-west4", "gs://b/tmp")


def _write(out: str, workers: int, **kw) -> dict:
    p = beam.Pipeline(options=beam_options(direct_num_workers=workers))
    rows = p | beam.Create([{"id": f"doc{i}", "n": i} for i in range(500)])
    _ = rows | WriteParquetShards(out, "rows", pa.schema([("id", pa.string()), ("n", pa.int64())]), 3, key=lambda r: r["id"], **kw)
    result = p.run()
    result.wait_until_finish()
    return metric_counters(result)


def test_sharded_output_is_byte_identical_for_any_worker_count(tmp_path):
    counters = _write(str(tmp_path / "one"), 1)
    _write(str(tmp_path / "two"), 2)
    assert counters == {"rows_rows": 500}
    one, two = list_shards(str(tmp_path / "one"), "rows"), list_shards(str(tmp_path / "two"), "rows")
    assert [u.rsplit("/", 1)[1] for u in one] == [f"rows-0000{i}-of-00003.parquet" for i in range(3)]
    assert [open(u, "rb").read() for u in one] == [open(u, "rb").read() for u in two]
    ids = [pq.read_table(u).column("id").to_pylist() for u in one]
    assert all(x == sorted(x) for x in ids) and sum(map(len, ids)) == 500


def test_rows_spill_to_runs_that_merge_into_the_same_bytes(tmp_path):
    # A tiny spill threshold: every bundle writes many small sorted runs per shard, and
    # the shard writers merge them. Same files as with one run per shard; no runs left.
    _write(str(tmp_path / "one-run"), 1)
    _write(str(tmp_path / "many-runs"), 2, spill_bytes=500)
    one, many = list_shards(str(tmp_path / "one-run"), "rows"), list_shards(str(tmp_path / "many-runs"), "rows")
    assert [open(u, "rb").read() for u in one] == [open(u, "rb").read() for u in many]
    assert sorted(p.name for p in (tmp_path / "many-runs").iterdir()) == [u.rsplit("/", 1)[1] for u in many]


def test_a_writer_merges_a_bounded_number_of_runs_at_once(tmp_path, monkeypatch):
    # About 20 runs a shard, of one-row row groups, merged 2 at a time: runs are first
    # merged two by two into longer runs until 2 are left. The same files as one run a shard.
    from pipelines import shards

    merged: list[int] = []
    merge = shards._MergeRuns._merge
    monkeypatch.setattr(shards._MergeRuns, "_merge", lambda self, runs: merged.append(len(runs)) or merge(self, runs))
    monkeypatch.setattr(shards, "MERGE_FAN_IN", 2)
    monkeypatch.setattr(shards, "RUN_GROUP_ROWS", 1)
    _write(str(tmp_path / "one-run"), 1)
    _write(str(tmp_path / "fan-in-2"), 1, spill_bytes=500)
    one, fan_in_2 = list_shards(str(tmp_path / "one-run"), "rows"), list_shards(str(tmp_path / "fan-in-2"), "rows")
    assert [open(u, "rb").read() for u in one] == [open(u, "rb").read() for u in fan_in_2]
    assert max(merged) == 2 and len(merged) > 3 * 10  # 3 shards: 19 merges for 20 runs


def test_rows_with_one_key_are_one_row(tmp_path):
    p = beam.Pipeline(options=beam_options(direct_num_workers=1))
    rows = p | beam.Create([{"id": "a", "n": 2}, {"id": "b", "n": 1}, {"id": "a", "n": 1}, {"id": "a", "n": 3}])
    _ = rows | WriteParquetShards(str(tmp_path), "rows", pa.schema([("id", pa.string()), ("n", pa.int64())]), 1,
                                  key=lambda r: r["id"], pick=lambda same: max(same, key=lambda r: r["n"]))
    result = p.run()
    result.wait_until_finish()
    assert pq.read_table(list_shards(str(tmp_path), "rows")[0]).to_pylist() == [{"id": "a", "n": 3}, {"id": "b", "n": 1}]
    assert metric_counters(result) == {"rows_rows": 2, "rows_duplicate": 2}


def test_ray_started_from_a_step_thread_outlives_the_thread():
    # Steps run in threads; a local Ray's GCS dies with the thread that started it unless
    # ray_init starts it from a thread that lives as long as the process.
    import threading
    import time

    import ray

    from infra.engines import ray_init

    if ray.is_initialized():
        ray.shutdown()
    t = threading.Thread(target=ray_init, kwargs={"num_cpus": 1})
    t.start()
    t.join()
    try:
        time.sleep(2)
        assert ray.get(ray.remote(lambda: 41 + 1).remote(), timeout=60) == 42
    finally:
        ray.shutdown()


def test_row_groups_are_cut_by_rows_or_by_text():
    """A row group holds ROW_GROUP_ROWS rows, or fewer once it holds ROW_GROUP_BYTES of
    text (whole books), the cut depending only on the rows."""
    from pipelines import shards

    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    small = [{"id": f"s{i}", "text": "x"} for i in range(shards.ROW_GROUP_ROWS + 5)]
    assert [t.num_rows for t in shards.row_groups(small, schema)] == [shards.ROW_GROUP_ROWS, 5]
    book = "word " * (shards.ROW_GROUP_BYTES // 10)  # half of a group's text
    books = [{"id": f"b{i}", "text": book} for i in range(5)]
    groups = list(shards.row_groups(books, schema))
    assert [t.num_rows for t in groups] == [2, 2, 1]
    assert pa.concat_tables(groups).to_pylist() == books
