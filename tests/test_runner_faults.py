"""The runner when things go wrong around a step: a damaged output, an interrupted --force,
a storage root it cannot write, a store it cannot reach, a store that dies mid-pretraining,
two runs on one step, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

from bertflow.contracts import storage
from bertflow.infra.cli import main
from bertflow.infra.lease import LEASE, Lease, LeaseHeld
from bertflow.infra.runner import SCRATCH, STATUS, SUCCESS, Runner, StepFailed
from bertflow.infra.spec import SpecFile
from tests import runner_kinds
from tests.loopback import S3_KEYS, closed_port, connects_to, s3_process
from tests.temp_dirs import engines_dir, leftovers, temp_env

ROOT = Path(__file__).resolve().parents[1]

SPEC = {
    "storage": "PLACEHOLDER",
    "workflows": {"words": {"steps": {
        "hello": {"kind": "test_text", "params": {"text": "hello", "copies": 2}},
        "world": {"kind": "test_text", "params": {"text": "world"}},
        "joined": {"kind": "test_join", "inputs": {"parts": ["hello", "world"]}},
    }}},
}


def spec(root: str, **params) -> dict:
    raw = json.loads(json.dumps(SPEC))
    raw["storage"] = root
    for step, p in params.items():
        raw["workflows"]["words"]["steps"][step].setdefault("params", {}).update(p)
    return raw


def runner(raw: dict, tmp_path: Path) -> Runner:
    return Runner(SpecFile(raw, tmp_path / "workflows.yaml").workflow("words"))


def write_spec(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "workflows.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def cli(*args: str) -> subprocess.Popen:
    """A real `bertflow run` (with the test kinds) in a session of its own: a signal to its
    process group reaches it and its children, as a terminal's Ctrl-C does."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.runner_kinds", *args], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


def wait_for(predicate, timeout: float = 60, what: str = "") -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(autouse=True)
def calls():
    runner_kinds.CALLS.clear()
    yield runner_kinds.CALLS


# -- a done step whose files changed (issue 16.5) ----------------------------------------

def test_damaged_output_is_not_done_and_is_redone(tmp_path, calls):
    raw = spec(str(tmp_path / "runs"))
    runner(raw, tmp_path).run(only="hello")
    r = runner(raw, tmp_path)
    text = storage.join(r.output("hello"), "text.txt")
    with storage.atomic_file(text) as f:  # a bad copy: the file cut short
        f.write(b"hel")

    row = {row["step"]: row for row in r.status()}["hello"]
    assert row["state"] == "damaged"
    assert "no longer matches its manifest: text.txt is 3 bytes, the manifest says 11" in row["error"]
    (planned,) = [p for p in r.plan(only="hello") if p.name == "hello"]
    assert planned.action == "run" and planned.reason.startswith("its output no longer matches its manifest: text.txt")

    calls.clear()
    outcomes = {o.name: o.action for o in runner(raw, tmp_path).run(only="hello")}
    assert outcomes == {"hello": "ran"} and calls == ["hello"]
    assert storage.read_text(text) == "hello hello"
    assert r.is_done("hello")


# -- an attempt that dies in a done step's folder (issue 16.8, 16.9) --------------------

def test_interrupted_force_leaves_no_manifest_and_no_spill(tmp_path, calls):
    raw = spec(str(tmp_path / "runs"))
    runner(raw, tmp_path).run(only="hello")
    r = runner(raw, tmp_path)
    spill = storage.join(r.output("hello"), SCRATCH, "run-00000.arrow")
    storage.write_bytes_atomic(spill, b"an earlier attempt's spill")
    # --force, and the new attempt dies after writing half of its files (crash is operational:
    # the same folder)
    with pytest.raises(StepFailed, match="crashed after writing"):
        runner(spec(str(tmp_path / "runs"), hello={"crash": True}), tmp_path).run(only="hello", force=["hello"])
    assert not storage.exists(storage.join(r.output("hello"), SUCCESS))
    assert not storage.exists(storage.join(r.output("hello"), SCRATCH))
    assert [(p.action, p.reason) for p in r.plan(only="hello")] == [("run", "failed before")]


# -- storage the runner cannot write or reach (issue 16.7, 16.9) ------------------------

def run_with_timeout(argv: list[str], timeout: float = 60) -> int:
    result: list = []

    def target() -> None:
        try:
            result.append(main(argv))
        except BaseException as e:  # noqa: BLE001 - raised again in the test's thread
            result.append(e)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert result, f"bertflow {' '.join(argv)} still running after {timeout}s"
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def unwritable_roots(tmp_path: Path) -> list[tuple[str, str]]:
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("a file where the root should be\n")
    roots = [(str(a_file), "Not a directory"), (str(a_file / "runs"), "Not a directory")]
    try:  # sysfs refuses new folders, even to root (chmod does not stop root)
        os.mkdir("/sys/bertflow-runs")
        os.rmdir("/sys/bertflow-runs")
    except OSError as e:
        roots.append(("/sys/bertflow-runs", e.strerror))
    return roots


def test_unwritable_root_ends_the_run_with_one_line(tmp_path, capsys):
    for root, why in unwritable_roots(tmp_path):
        path = write_spec(tmp_path, spec(root))
        assert run_with_timeout(["run", "words", "-f", str(path)]) == 1, root
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: step '"), err
        assert f"failed: cannot write {root}/" in lines[0] and why in lines[0], err


def test_run_record_that_cannot_be_written_does_not_hide_the_step_error(tmp_path, caplog):
    raw = spec(str(tmp_path / "runs"), joined={"fail": True})
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "_runs").write_text("a file where the run records go\n")
    with pytest.raises(StepFailed, match="asked to fail"):
        runner(raw, tmp_path).run()
    assert "could not write the run record" in caplog.text
    state = {row["step"]: row["state"] for row in runner(raw, tmp_path).status()}
    assert state == {"hello": "done", "world": "done", "joined": "failed"}


@pytest.mark.parametrize("command", [["status", "words"], ["run", "words", "--dry-run"]])
def test_unreachable_store_is_one_line(tmp_path, monkeypatch, capsys, command):
    """A gone S3 endpoint: one connect (the preflight's), not botocore's retries."""
    import s3fs

    port = closed_port()
    # AWS_MAX_ATTEMPTS=1: were the preflight to let the command through, botocore would fail
    # it soon, with its own message instead of the preflight's line.
    for key, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
                       "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_MAX_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()
    path = write_spec(tmp_path, spec("s3://bertflow-gone/runs"))
    try:
        with connects_to(port) as attempts:
            assert run_with_timeout([*command, "-f", str(path)]) == 1
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
    assert attempts == [("127.0.0.1", port)]
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: storage s3://bertflow-gone/runs: ") and "\n" not in err, err
    assert "cannot reach 127.0.0.1" in err and "AWS_ACCESS_KEY_ID" in err


def test_s3_endpoint_that_dies_mid_pretraining_leaves_its_log_named_and_nothing_else(tmp_path):
    """The store goes away while a `pretrain` step trains on it: the error is one line, it
    names the copy of the step's log that exists (the upload failed), and that copy is all
    the run leaves in the temporary directory: the examples step's uploaded log, the
    workers' checkpoint staging and metrics mirror, Ray Train's folders are gone."""
    import s3fs

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    raw = {"storage": "s3://bertflow-dies/runs", "ray": {"num_cpus": 1}, "workflows": {"p": {"steps": {
        "examples": {"kind": "test_examples"},
        "pretrain": {"kind": "pretrain", "inputs": {"examples": "examples"},
                     "params": {"model": "tiny", "steps": 100000, "batch_size": 4, "log_every": 1,
                                "checkpoint_every": 5, "max_seq_length": 32},
                     "resources": {"workers": 1, "cpus_per_worker": 1}},
    }}}}
    path = write_spec(tmp_path, raw)
    with s3_process() as (url, server), engines_dir() as engines:
        s3fs.S3FileSystem(client_kwargs={"endpoint_url": url}, key="testing", secret="testing").mkdir("bertflow-dies")
        # AWS_MAX_ATTEMPTS=1: botocore's retries of each write to the dead store take a
        # minute and change nothing the test checks
        env = {**os.environ, "PYTHONPATH": str(ROOT), **temp_env(tmp, engines), **S3_KEYS,
               "AWS_ENDPOINT_URL": url, "AWS_ENDPOINT_URL_S3": url, "AWS_MAX_ATTEMPTS": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "tests.runner_kinds", "run", "p", "-f", str(path)], cwd=ROOT,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "[pretrain] step " in line:  # metrics.jsonl is on the store: a checkpoint was written
                break
        else:
            raise AssertionError("".join(seen))
        server.kill()
        server.wait()
        out = "".join(seen) + proc.communicate(timeout=300)[0]
    assert proc.returncode == 1, out
    error = out[out.index("\nerror: ") + 1:].splitlines()
    assert error[0].startswith("error: step 'pretrain' failed: TrainingFailed: "), out
    assert "Could not connect to the endpoint URL" in error[0], out
    assert error[1].startswith("  log: "), out
    log = Path(error[1].removeprefix("  log: "))
    assert log.parent == tmp and "step pretrain (pretrain) -> s3://bertflow-dies/runs/pretrain-" in log.read_text()
    assert leftovers(tmp) == [log.name]


# -- two runs on one step (issue 16.6) --------------------------------------------------

def test_lease_is_exclusive_and_a_dead_holders_expires(tmp_path):
    url = str(tmp_path / LEASE)
    first, second = Lease(url, "run-a"), Lease(url, "run-b")
    assert first.acquire(wait=0) is False
    with pytest.raises(LeaseHeld, match="held by run run-a"):
        second.acquire(wait=0)
    first.release()
    assert not os.path.exists(url)

    # A holder whose process is gone (this host) or whose heartbeat stopped (any host).
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for holder, why in [({"host": socket.gethostname(), "pid": int(gone.stdout), "heartbeat": time.time()}, "is gone"),
                        ({"host": "elsewhere", "pid": 1, "heartbeat": time.time() - 3600}, "heartbeat is")]:
        storage.write_json(url, {"run_id": "run-dead", **holder})
        assert why in second.expired(storage.read_json(url))
        lease = Lease(url, "run-b", settle=0.05)
        assert lease.acquire(wait=0) is False and storage.read_json(url)["run_id"] == "run-b"
        lease.release()

    # A lease file that is not JSON (a damaged copy) holds until it is as old as a dead heartbeat.
    Path(url).write_text('{"run_id": "run-')
    with pytest.raises(LeaseHeld, match="not one a run wrote"):
        Lease(url, "run-b").acquire(wait=0)
    os.utime(url, (time.time() - 3600, time.time() - 3600))
    lease = Lease(url, "run-b", settle=0.05)
    assert lease.acquire(wait=0) is False
    lease.release()


def race(leases: list[Lease]) -> list[str]:
    """The run ids of ``leases`` whose try_take, all started at once, took the lease."""
    start = threading.Barrier(len(leases))
    won: list[str] = []

    def take(lease: Lease) -> None:
        start.wait()
        if lease.try_take() is None:
            won.append(lease.run_id)

    threads = [threading.Thread(target=take, args=(lease,)) for lease in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won


def lease_root(where: str, tmp_path: Path, request) -> str:
    return str(tmp_path) if where == "local" else request.getfixturevalue("s3_bucket")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_lease_race_has_one_winner(where, tmp_path, request):
    """Local: an exclusive create; S3: PutObject with If-None-Match: *. Neither leans on the
    settle (0 here): of four creators at once, exactly one wins, in every round."""
    root = lease_root(where, tmp_path, request)
    for round_ in range(5):
        url = storage.join(root, f"step-{round_}", LEASE)
        storage.makedirs(storage.join(root, f"step-{round_}"))
        won = race([Lease(url, f"run-{i}", settle=0) for i in range(4)])
        assert len(won) == 1 and storage.read_json(url)["run_id"] == won[0], (round_, won)


class Stalls(Lease):
    """A run that stalls (a long GC pause, a slow network) between looking at the lease and
    writing it, until ``resume`` is set: the writer the settle-and-read-back cannot guard."""

    def __init__(self, *args, resume: threading.Event, **kwargs):
        super().__init__(*args, **kwargs)
        self.resume, self.looked = resume, threading.Event()

    def holder(self):
        seen = super().holder()
        if not self.looked.is_set():
            self.looked.set()
            self.resume.wait(30)
        return seen


@pytest.mark.parametrize("lease_before", ["none", "expired"])
def test_s3_lease_refuses_a_stalled_writer(lease_before, s3_bucket):
    """On S3 the write is conditional on what the writer saw (If-None-Match: * for a free
    lease, If-Match on the ETag of an expired one): a run that looked, stalled while another
    took the lease, then wrote, does not take it (write-settle-read-back would let it)."""
    url = storage.join(s3_bucket, "step", LEASE)
    if lease_before == "expired":
        storage.write_json(url, {"run_id": "run-dead", "host": "elsewhere", "pid": 1, "heartbeat": time.time() - 3600})
    resume, got = threading.Event(), []
    late = Stalls(url, "run-late", settle=0, resume=resume)
    thread = threading.Thread(target=lambda: got.append(late.try_take()))
    thread.start()
    assert late.looked.wait(30)
    assert Lease(url, "run-first", settle=0).try_take() is None
    resume.set()
    thread.join(30)
    assert got and got[0] is not None and got[0]["run_id"] == "run-first"
    assert storage.read_json(url)["run_id"] == "run-first"


def test_s3_lease_takeover_race_has_one_winner(s3_bucket):
    url = storage.join(s3_bucket, "step", LEASE)
    storage.write_json(url, {"run_id": "run-dead", "host": "elsewhere", "pid": 1, "heartbeat": time.time() - 3600})
    won = race([Lease(url, f"run-{i}", settle=0) for i in range(4)])
    assert len(won) == 1 and storage.read_json(url)["run_id"] == won[0]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_heartbeat_notices_a_lost_lease(where, tmp_path, request):
    url = storage.join(lease_root(where, tmp_path, request), LEASE)
    lease = Lease(url, "run-a", interval=0.05)
    lease.acquire(wait=0)
    storage.write_json(url, {"run_id": "run-b", "host": "elsewhere", "pid": 1, "heartbeat": time.time()})
    wait_for(lambda: lease.lost is not None, 5, "the heartbeat")
    assert lease.lost["run_id"] == "run-b"
    lease.release()
    assert storage.read_json(url)["run_id"] == "run-b"  # not ours to remove


def test_second_run_waits_for_the_step_the_first_is_writing(tmp_path, capsys):
    gate = tmp_path / "gate"
    raw = spec(str(tmp_path / "runs"), hello={"gate": str(gate)})  # operational: the same step
    first = cli("run", "words", "--only", "hello", "-f", str(write_spec(tmp_path, raw)))
    lease = storage.join(runner(raw, tmp_path).output("hello"), LEASE)
    wait_for(lambda: storage.exists(lease), 60, "the first run's lease")
    holder = storage.read_json(lease)["run_id"]

    other = tmp_path / "other"
    other.mkdir()
    path = write_spec(other, spec(str(tmp_path / "runs")))
    impatient = cli("run", "words", "--only", "hello", "-f", str(path), "--lease-wait", "0.5")
    out = impatient.communicate(timeout=60)[0]
    assert impatient.returncode == 1, out
    assert f"_lease.json is held by run {holder}" in out and "waited" in out

    assert main(["status", "words", "-f", str(path)]) == 0
    assert f"written by run {holder} (host {socket.gethostname()}" in capsys.readouterr().out

    patient = cli("run", "words", "--only", "hello", "-f", str(path))
    for line in patient.stdout:
        if "waiting for" in line:
            assert f"waiting for run {holder} (host {socket.gethostname()}" in line
            break
    gate.touch()  # the first run finishes the step; the second reuses it
    out = patient.communicate(timeout=60)[0]
    assert patient.returncode == 0, out
    assert "reused  hello" in out
    assert first.wait(timeout=60) == 0
    assert not storage.exists(lease)


# -- Ctrl-C (issue 16.3) ----------------------------------------------------------------

def test_ctrl_c_exits_130_records_interrupted_and_resumes(tmp_path):
    raw = spec(str(tmp_path / "runs"), world={"sleep": 120})  # operational: the same step
    r = runner(raw, tmp_path)
    status = storage.join(r.output("world"), STATUS)
    proc = cli("run", "words", "-f", str(write_spec(tmp_path, raw)))
    hello = storage.join(r.output("hello"), STATUS)
    wait_for(lambda: storage.exists(status) and storage.read_json(status)["state"] == "running", 60, "world to start")
    # hello, beside world, is done: its status says so just before the scheduler hears it.
    wait_for(lambda: storage.exists(hello) and storage.read_json(hello)["state"] == "done", 60, "hello to finish")
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines[-1] == "interrupted: run the same command again to resume", out
    assert out.count("interrupted") == 1 and "Traceback" not in out and "failed" not in out, out

    assert storage.read_json(status)["state"] == "interrupted"
    assert {row["step"]: row["state"] for row in r.status()}["world"] == "interrupted"
    (record,) = storage.list_files(storage.join(r.root, "_runs", "words"))
    steps = storage.read_json(storage.join(r.root, "_runs", "words", record))["steps"]
    assert (steps["world"]["action"], steps["hello"]["action"], steps["joined"]["action"]) == ("interrupted", "ran", "not run")

    # The same command again, without the wait: the interrupted step resumes in its folder.
    raw["workflows"]["words"]["steps"]["world"]["params"]["sleep"] = 0
    proc = cli("run", "words", "-f", str(write_spec(tmp_path, raw)))
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out
    assert f"{r.output('world')} (interrupted before)" in out
    assert "reused  hello" in out and "ran     world" in out and "ran     joined" in out


def test_ctrl_c_during_pretraining_ends_ray_before_exiting(tmp_path):
    # Ray's exit hook ended the step thread's pending ray.get with SystemExit: 0 (or a
    # crash) after the run had said "interrupted": the step was recorded as failed, exit 1.
    raw = {"storage": str(tmp_path / "runs"), "ray": {"num_cpus": 1}, "workflows": {"p": {"steps": {
        "examples": {"kind": "test_examples"},
        "pretrain": {"kind": "pretrain", "inputs": {"examples": "examples"},
                     "params": {"model": "tiny", "steps": 100000, "batch_size": 4, "log_every": 1, "max_seq_length": 32},
                     "resources": {"workers": 1, "cpus_per_worker": 1}},
    }}}}
    proc = cli("run", "p", "-f", str(write_spec(tmp_path, raw)))
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "[pretrain] step " in line:  # training, and reporting to the driver
            break
    else:
        raise AssertionError("".join(seen))
    started = descendants(proc.pid)  # a local Ray's: its workers run in sessions of their own
    os.killpg(proc.pid, signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out
    assert "SystemExit" not in out and "failed" not in out and out.count("interrupted: run the same") == 1, out
    pretrain = Runner(SpecFile(raw, tmp_path / "workflows.yaml").workflow("p")).output("pretrain")
    assert storage.read_json(storage.join(pretrain, STATUS))["state"] == "interrupted"
    wait_for(lambda: not any(alive(pid) for pid in started), 30, "the run's Ray processes to end")


def descendants(pid: int) -> list[int]:
    return [child.pid for child in psutil.Process(pid).children(recursive=True)]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE  # a zombie has ended
    except psutil.NoSuchProcess:
        return False


def one_book_on_two_beam_workers(tmp_path) -> dict:
    """A workflow ``b`` of one books step (a real book) on two Beam worker processes."""
    return {"storage": str(tmp_path / "runs"), "beam": {"runner": "DirectRunner", "options": {"direct_num_workers": 2}},
            "workflows": {"b": {"steps": {"books": {"kind": "books", "params": {
                "files": str(ROOT / "data/books/austen-emma.txt"), "num_shards": 1}}}}}}


def beam_workers(proc: subprocess.Popen) -> list[psutil.Process]:
    """The local Beam worker processes under a ``bertflow run``."""
    try:
        return [p for p in psutil.Process(proc.pid).children(recursive=True)
                if "bertflow.pipelines.local_worker" in " ".join(p.cmdline())]
    except psutil.Error:
        return []


def test_ctrl_c_during_a_beam_step_is_one_line(tmp_path):
    # The local runner's workers share the terminal's process group: they took the SIGINT
    # too and printed their KeyboardInterrupt tracebacks under the run's one line.
    raw = one_book_on_two_beam_workers(tmp_path)
    proc = cli("run", "b", "-f", str(write_spec(tmp_path, raw)))

    wait_for(lambda: len(beam_workers(proc)) == 2 or proc.poll() is not None, 120, "the job's two workers")
    seen = beam_workers(proc)
    time.sleep(0.5)  # the workers are importing Beam, the moment a Ctrl-C printed most
    os.killpg(proc.pid, signal.SIGINT)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    assert out.count("interrupted") == 1, out
    wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in seen), 10, "workers to end")


def test_kill_9_during_a_beam_step_is_planned_and_shown_as_died(tmp_path, capsys):
    # After kill -9 the step's status still says running and its lease names a pid that is
    # gone: the next plan said "(new)", as if the step had never been started.
    raw = one_book_on_two_beam_workers(tmp_path)
    path = write_spec(tmp_path, raw)
    r = Runner(SpecFile(raw, path).workflow("b"))
    status = storage.join(r.output("books"), STATUS)
    proc = cli("run", "b", "-f", str(path))

    wait_for(lambda: len(beam_workers(proc)) == 2 or proc.poll() is not None, 120, "the job's two workers")
    assert storage.read_json(status)["state"] == "running"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)  # reaped: its pid is gone
    assert proc.returncode == -signal.SIGKILL
    assert storage.exists(storage.join(r.output("books"), LEASE))  # nobody released it

    died = f"the last run died while running it: its process {proc.pid} on this host is gone"
    assert [(p.action, p.reason) for p in r.plan()] == [("run", died)]
    assert main(["run", "b", "-f", str(path), "--dry-run"]) == 0
    assert f"{r.output('books')}  ({died})" in capsys.readouterr().out
    # status tells it by the same judgement, and why.
    assert main(["status", "b", "-f", str(path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("died ") and f"error: the run died while running it: its process {proc.pid} on" in out, out

    # The same command again takes over the dead run's lease and does the step.
    proc = cli("run", "b", "-f", str(path))
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    assert f"({died})" in out and "ran     books" in out, out
    assert r.is_done("books")
