"""The runner on kinds defined by the tests: reuse, reruns, failures, kills, storage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import fsspec
import pytest
import yaml

from bertflow.contracts import storage
from bertflow.infra.cli import main
from bertflow.infra.runner import SUCCESS, Runner, StepFailed
from bertflow.infra.spec import SpecFile
from tests import runner_kinds

ROOT = Path(__file__).resolve().parents[1]

SPEC = {
    "storage": "PLACEHOLDER",
    "workflows": {
        "words": {
            "steps": {
                "hello": {"kind": "test_text", "params": {"text": "hello", "copies": 2}},
                "world": {"kind": "test_text", "params": {"text": "world"}},
                "title": {"kind": "test_text", "params": {"text": "greeting"}},
                "joined": {"kind": "test_join", "inputs": {"parts": ["hello", "world"], "title": "title"}},
                "again": {"kind": "test_join", "inputs": {"parts": ["joined"]}, "params": {"separator": "|"}},
            }
        }
    },
}


def make_runner(storage_url: str, tmp_path: Path, **step_params) -> Runner:
    raw = json.loads(json.dumps(SPEC))
    raw["storage"] = storage_url
    for step, params in step_params.items():
        raw["workflows"]["words"]["steps"][step].setdefault("params", {}).update(params)
    return Runner(SpecFile(raw, tmp_path / "workflows.yaml").workflow("words"))


def read(url: str) -> str:
    with fsspec.open(url, "r") as f:
        return f.read()


@pytest.fixture(autouse=True)
def calls():
    runner_kinds.CALLS.clear()
    yield runner_kinds.CALLS


@pytest.fixture(params=["local", "memory", "s3"])
def storage_url(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "runs")
    if request.param == "memory":
        return f"memory://bertflow-{uuid.uuid4().hex[:8]}"
    return request.getfixturevalue("s3_bucket") + "/runs"


def test_runs_then_reuses_every_step(storage_url, tmp_path, calls):
    r = make_runner(storage_url, tmp_path)
    first = r.run()
    assert [o.action for o in first] == ["ran"] * 5
    assert sorted(calls) == sorted(["hello", "world", "title", "joined", "again"])
    assert read(f"{r.output('again')}/text.txt") == "GREETING hello hello world"
    manifest = storage.read_json(f"{r.output('joined')}/{SUCCESS}")
    assert manifest["counters"] == {"parts": 3}
    assert set(manifest["files"]) >= {"text.txt", "part-0.txt"}
    assert manifest["files"]["text.txt"] == len("GREETING hello hello world")
    assert manifest["params"] == {"separator": " ", "fail": False, "hang": False}

    calls.clear()
    second = make_runner(storage_url, tmp_path).run()
    assert [o.action for o in second] == ["reused"] * 5
    assert calls == []
    # Every run leaves a record of what ran and what was reused.
    records = storage.list_files(storage.join(r.root, "_runs", "words"))
    assert len(records) == 2
    record = storage.read_json(storage.join(r.root, "_runs", "words", sorted(records)[-1]))
    assert {s["action"] for s in record["steps"].values()} == {"reused"}
    assert record["spec"]["steps"]["again"]["params"]["separator"] == "|"
    assert record["spec"]["steps"]["again"]["output"] == r.output("again")
    assert record["versions"]["apache-beam"] and "git" in record


def test_changed_parameter_reruns_that_step_and_its_readers_only(tmp_path, calls):
    url = str(tmp_path / "runs")
    before = make_runner(url, tmp_path)
    before.run()
    calls.clear()
    after = make_runner(url, tmp_path, world={"text": "there"})
    outcomes = {o.name: o.action for o in after.run()}
    assert outcomes == {"hello": "reused", "title": "reused", "world": "ran", "joined": "ran", "again": "ran"}
    assert sorted(calls) == ["again", "joined", "world"]
    assert after.output("hello") == before.output("hello")
    assert after.output("joined") != before.output("joined")
    assert read(f"{after.output('again')}/text.txt") == "GREETING hello hello there"
    # The old outputs are still there: changing a parameter never destroys work.
    assert storage.exists(f"{before.output('again')}/{SUCCESS}")


def test_resources_do_not_change_the_hash(tmp_path):
    raw = json.loads(json.dumps(SPEC))
    a = Runner(SpecFile(raw, tmp_path / "w.yaml").workflow("words"))
    raw["workflows"]["words"]["steps"]["hello"]["resources"] = {"workers": 2}
    b = Runner(SpecFile(raw, tmp_path / "w.yaml").workflow("words"))
    assert a.hashes == b.hashes


def test_operational_parameters_do_not_change_the_hash(tmp_path, calls):
    # How long a step takes is not what it writes: a done step is reused, and a failed one
    # would resume in its own folder, whatever the operational settings say.
    url = str(tmp_path / "runs")
    before = make_runner(url, tmp_path)
    before.run()
    calls.clear()
    after = make_runner(url, tmp_path, hello={"sleep": 0.01})
    assert after.hashes == before.hashes
    assert {o.action for o in after.run()} == {"reused"} and calls == []
    assert storage.read_json(f"{before.output('hello')}/{SUCCESS}")["params"]["sleep"] == 0


def test_manifest_is_written_before_the_status_says_done(tmp_path, monkeypatch):
    written: list[str] = []
    write_json = storage.write_json

    def recording(url, obj):
        written.append(f"{url.rsplit('/', 1)[1]}:{obj.get('state', '')}")
        write_json(url, obj)

    monkeypatch.setattr(storage, "write_json", recording)
    r = make_runner(str(tmp_path / "runs"), tmp_path)
    r.run(only="hello")
    hello = [w for w in written if not w.startswith("2")]  # not the run record
    assert hello == ["_status.json:running", "_SUCCESS.json:", "_status.json:done"]


def test_failed_step_leaves_no_manifest_and_is_redone(tmp_path, calls):
    url = str(tmp_path / "runs")
    r = make_runner(url, tmp_path, joined={"fail": True})
    with pytest.raises(StepFailed) as e:
        r.run()
    assert "asked to fail" in str(e.value) and "log:" in str(e.value)
    out = r.output("joined")
    assert storage.exists(f"{out}/part-0.txt")  # half-written...
    assert not storage.exists(f"{out}/{SUCCESS}")  # ...and never read as done
    status = {row["step"]: row for row in r.status()}
    assert status["joined"]["state"] == "failed" and "asked to fail" in status["joined"]["error"]
    assert status["again"]["state"] == "not done" and status["hello"]["state"] == "done"
    assert "asked to fail" in Path(e.value.outcome.log).read_text()
    assert [p.reason for p in r.plan() if p.name == "joined"] == ["failed before"]

    # Fixing the cause is a parameter change; the same params again would redo the step.
    calls.clear()
    again = Runner(r.wf)
    with pytest.raises(StepFailed):
        again.run()
    assert calls == ["joined"]


def test_only_runs_the_step_and_what_it_needs(tmp_path, calls):
    r = make_runner(str(tmp_path / "runs"), tmp_path)
    outcomes = r.run(only="joined")
    assert [o.name for o in outcomes] == ["hello", "world", "title", "joined"]
    assert "again" not in calls


def test_force_redoes_the_step_and_its_readers(tmp_path, calls):
    r = make_runner(str(tmp_path / "runs"), tmp_path)
    r.run()
    calls.clear()
    outcomes = {o.name: o.action for o in make_runner(str(tmp_path / "runs"), tmp_path).run(force=["joined"])}
    assert outcomes == {"hello": "reused", "world": "reused", "title": "reused", "joined": "ran", "again": "ran"}


def test_independent_steps_run_side_by_side(tmp_path):
    raw = {
        "storage": str(tmp_path / "runs"),
        "parallel_steps": 2,
        "workflows": {"w": {"steps": {
            "a": {"kind": "test_text", "params": {"text": "a", "sleep": 1.0}},
            "b": {"kind": "test_text", "params": {"text": "b", "sleep": 1.0}},
        }}},
    }
    r = Runner(SpecFile(raw, tmp_path / "w.yaml").workflow("w"))
    r.run()
    (a0, a1), (b0, b1) = (json.loads(read(f"{r.output(s)}/times.json")) for s in "ab")
    assert a0 < b1 and b0 < a1  # the two intervals overlap


def write_spec(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "workflows.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.runner_kinds", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw,
    )


def wait_for_hang(proc: subprocess.Popen) -> None:
    for line in proc.stdout:
        if "HANGING" in line:
            return
    raise AssertionError(f"the step never started (exit {proc.wait()})")


@pytest.mark.parametrize("how", ["SIGKILL"])  # Ctrl-C: test_runner_faults.py
def test_killed_run_leaves_no_manifest_and_resumes(tmp_path, how):
    raw = json.loads(json.dumps(SPEC))
    raw["storage"] = str(tmp_path / "runs")
    raw["workflows"]["words"]["steps"]["joined"]["params"] = {"hang": True}
    spec = write_spec(tmp_path, raw)
    proc = cli("run", "words", "-f", str(spec))
    wait_for_hang(proc)
    proc.send_signal(getattr(signal, how))
    rest = proc.communicate(timeout=60)[0]
    if how == "SIGINT":
        assert proc.returncode == 130, rest
        assert "run the same command again" in rest
    else:
        assert proc.returncode == -signal.SIGKILL

    r = Runner(SpecFile(raw, spec).workflow("words"))
    out = r.output("joined")
    assert storage.exists(f"{out}/part-0.txt") and not storage.exists(f"{out}/{SUCCESS}")
    state = {row["step"]: row["state"] for row in r.status()}
    assert state["hello"] == "done"
    assert state["joined"] == ("interrupted" if how == "SIGINT" else "died")

    # Run again without the hang: the done steps are reused, the killed one is redone.
    raw["workflows"]["words"]["steps"]["joined"]["params"] = {}
    spec = write_spec(tmp_path, raw)
    proc = cli("run", "words", "-f", str(spec))
    out_text = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out_text
    assert "reused  hello" in out_text and "ran     joined" in out_text


def test_cli_dry_run_changes_nothing(tmp_path, capsys):
    raw = json.loads(json.dumps(SPEC))
    raw["storage"] = str(tmp_path / "runs")
    spec = write_spec(tmp_path, raw)
    assert main(["run", "words", "-f", str(spec), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("run ") == 5 and str(tmp_path / "runs") in out
    assert not (tmp_path / "runs").exists()

    assert main(["run", "words", "-f", str(spec), "--only", "hello"]) == 0
    capsys.readouterr()
    assert main(["run", "words", "-f", str(spec), "--dry-run"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("run", "reuse"))]
    assert [line.split()[:2] for line in lines] == [
        ["reuse", "hello"], ["run", "world"], ["run", "title"], ["run", "joined"], ["run", "again"]
    ]


def test_cli_exit_codes_set_and_status(tmp_path, capsys):
    raw = json.loads(json.dumps(SPEC))
    raw["storage"] = str(tmp_path / "runs")
    spec = write_spec(tmp_path, raw)
    assert main(["run", "words", "-f", str(spec), "--set", "joined.fail=true"]) == 1
    err = capsys.readouterr().err
    assert "step 'joined' failed: RuntimeError: asked to fail" in err and "log:" in err
    assert main(["status", "words", "-f", str(spec), "--set", "joined.fail=true"]) == 1  # a failed step
    out = capsys.readouterr().out
    assert "failed" in out and "asked to fail" in out and "done" in out
    assert main(["run", "words", "-f", str(spec), "--set", "world.copies=0"]) == 2
    assert "workflows.words.steps.world.params.copies: must be >= 1" in capsys.readouterr().err
    assert main(["run", "nosuch", "-f", str(spec)]) == 2
    assert main(["run", "words", "-f", str(spec), "--only", "nosuch"]) == 2
    assert main(["run", "words", "-f", str(spec)]) == 0
    capsys.readouterr()  # the run's own lines (on stdout) say "done" too
    assert main(["status", "words", "-f", str(spec)]) == 0
    out = capsys.readouterr().out
    assert out.count("done") == 5 and "parts=3" in out
