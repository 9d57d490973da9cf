"""`bertflow submit`: a workflow run on a real Ray cluster (a head on loopback) through
the Ray Jobs API, its output written where the spec says."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from bertflow.infra.runner import Runner
from tests.conftest import _free_port
from bertflow.infra.spec import load

VENV_BIN = str(Path(sys.executable).parent)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_head():
    # Ray >= 2.59 protects the Jobs API with a token; a cluster and its clients share it
    # through RAY_AUTH_MODE / RAY_AUTH_TOKEN, as a KubeRay cluster with authOptions does.
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex + uuid.uuid4().hex}
    old = {k: os.environ.get(k) for k in auth}
    os.environ.update(auth)
    gcs, dashboard = _free_port(), _free_port()
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [f"{VENV_BIN}/ray", "start", "--head", "--block", f"--port={gcs}", "--num-cpus=1",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         # The job agent's port is fixed (52365) by default: another Ray on this machine holds it.
         f"--dashboard-agent-listen-port={_free_port()}",
         "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{dashboard}"
    # Clients run in subprocesses: this test process may hold a Ray of an earlier test,
    # whose settings (no token) a client made here would reuse.
    probe = f"from ray.job_submission import JobSubmissionClient as C; C({url!r}).list_jobs()"
    deadline = time.time() + 120
    while subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True).returncode != 0:
        if time.time() > deadline or proc.poll() is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            raise RuntimeError("the Ray head did not start")
        time.sleep(2)
    yield url, env
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    # `ray start` records its address in /tmp/ray/ray_current_cluster and a killed head
    # leaves it there: later Rays' state-API clients (Ray Train's placement group cleaner)
    # would wait out a timeout on the dead address.
    current = Path("/tmp/ray/ray_current_cluster")
    if current.exists() and current.read_text().strip().endswith(f":{gcs}"):
        current.unlink()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_submit_runs_the_workflow_on_the_cluster(ray_head, tmp_path):
    book = tmp_path / "book.txt"
    book.write_text((ROOT / "data/books/austen-persuasion.txt").read_text()[:20000])
    spec = tmp_path / "workflows.yaml"
    spec.write_text(yaml.safe_dump({
        "storage": str(tmp_path / "runs"),
        "beam": {"runner": "DirectRunner", "options": {"direct_num_workers": 1}},
        "workflows": {"w": {"steps": {"books": {"kind": "books", "params": {"files": "book.txt", "num_shards": 2}}}}},
    }))
    url, env = ray_head
    # --local-storage: this cluster runs on this machine, its nodes read the same disk.
    done = subprocess.run([f"{VENV_BIN}/bertflow", "submit", "w", "-f", str(spec), "--address", url, "--local-storage"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "submitted" in done.stdout and "SUCCEEDED" in done.stdout

    # The cluster wrote where the spec says, and a local `status` sees it as done.
    runner = Runner(load(spec).workflow("w"))
    assert [row["state"] for row in runner.status()] == ["done"]
    table = pq.read_table(f"{runner.output('books')}/documents-00000-of-00002.parquet")
    table2 = pq.read_table(f"{runner.output('books')}/documents-00001-of-00002.parquet")
    assert table.num_rows + table2.num_rows == 1


def test_submit_without_the_clusters_token_is_one_line_saying_what_to_set(ray_head, tmp_path):
    spec = tmp_path / "workflows.yaml"
    spec.write_text(yaml.safe_dump({"storage": "s3://bucket/bertflow", "workflows": {"w": {"steps": {
        "books": {"kind": "books", "params": {"files": "book.txt"}}}}}}))
    url, env = ray_head
    env = {k: v for k, v in env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    done = subprocess.run([f"{VENV_BIN}/bertflow", "submit", "w", "-f", str(spec), "--address", url],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(f"error: submitting to {url}: "), done.stderr
    assert "RAY_AUTH_TOKEN" in errors[0], errors[0]
