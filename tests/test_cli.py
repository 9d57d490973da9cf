"""The `bertflow` command as a user meets it: its conventions, `validate`'s warnings,
`status` (rounded counters, progress, exit code, the last run), and stores or a cluster
that cannot be reached (one line, after one connection attempt). In-process through bertflow.infra.cli.main."""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import pytest
import yaml

from bertflow.infra import cli, runner
from bertflow.infra.cli import main
from bertflow.infra.runner import Runner
from bertflow.infra.spec import load
from tests import runner_kinds  # noqa: F401 - registers the test kinds
from tests.loopback import closed_port, connects_to

ROOT = Path(__file__).resolve().parents[1]


def write_spec(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "workflows.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def words_spec(tmp_path: Path, storage: str | None = None, **hello) -> Path:
    return write_spec(tmp_path, {
        "storage": storage or str(tmp_path / "runs"),
        "workflows": {"words": {"steps": {
            "hello": {"kind": "test_text", "params": {"text": "hello", "copies": 2, **hello}},
            "joined": {"kind": "test_join", "inputs": {"parts": ["hello"]}},
        }}},
    })


def test_conventions_version_file_before_the_command_a_workflow_to_validate_and_help(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("bertflow ")

    spec = words_spec(tmp_path)
    assert main(["-f", str(spec), "validate", "words"]) == 0
    assert "words: 2 steps (hello, joined)" in capsys.readouterr().out
    assert main(["validate", "-f", str(spec)]) == 0
    assert main(["-f", str(spec), "validate", "nosuch"]) == 2
    assert "workflows.nosuch: no such workflow" in capsys.readouterr().err
    # After the command wins over before it.
    assert main(["-f", str(tmp_path / "absent.yaml"), "validate", "-f", str(spec)]) == 0
    assert main(["--storage", str(tmp_path / "elsewhere"), "run", "words", "-f", str(spec), "--dry-run"]) == 0
    assert f"{tmp_path}/elsewhere/hello-" in capsys.readouterr().out

    parser = cli._parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        assert sub.format_usage().startswith(f"usage: bertflow {name} "), sub.format_usage()
        unexplained = [a.dest for a in sub._actions if not a.help]
        assert unexplained == [], f"{name}: flags without help: {unexplained}"
    assert [a.dest for a in parser._actions if not a.help] == []


def test_validate_warns_about_placeholders_and_missing_local_data(tmp_path, capsys):
    spec = write_spec(tmp_path, {
        "storage": "gs://YOUR-BUCKET/bertflow",
        "workflows": {"w": {"steps": {
            "wiki": {"kind": "wikipedia", "params": {"dump": "data/enwiki-missing.xml.bz2"}},
            "books": {"kind": "books", "params": {"files": "gs://b/books/*.txt"}},
            "more": {"kind": "books", "params": {"files": str(ROOT / "data/books/*.txt")}},
        }}},
    })
    assert main(["validate", "-f", str(spec)]) == 0  # warnings, not errors
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: storage: 'gs://YOUR-BUCKET/bertflow' looks like a placeholder: put in your own value (line 1)",
        f"warning: workflows.w.steps.wiki.params.dump: {tmp_path}/data/enwiki-missing.xml.bz2: "
        "no such file or folder (line 8)",
    ]
    assert "valid" in captured.out

    # The cluster recipe shipped in workflows.yaml: its bucket, project and registry.
    assert main(["validate", "bert-base", "-f", str(ROOT / "workflows.yaml")]) == 0
    err = capsys.readouterr().err
    assert "workflows.bert-base.storage: 'gs://YOUR-BUCKET/bertflow' looks like a placeholder" in err
    assert "workflows.bert-base.beam.options.sdk_container_image: 'REGISTRY/bertflow-beam:0.1'" in err
    assert "workflows.bert-base.beam.options.project: 'YOUR-PROJECT'" in err


def test_counters_read_as_numbers():
    assert runner.counters_text({"documents_read": 111.0, "loss": 2.3456789, "tokens": 1234567.8, "shards": 4, "x": 1}) \
        == "documents_read=111, loss=2.346, tokens=1.235e+06, shards=4"


def test_progress_of_a_pretraining_step_from_its_metrics(tmp_path):
    from bertflow.infra.kinds.pretrain import last_metrics
    from bertflow.trainer.metrics_log import MetricsLog

    metrics = MetricsLog(str(tmp_path), start_step=0)
    metrics.write(10, {"loss": 7.0, "sequences_per_s": 64.0})
    metrics.write(20, {"loss": 6.5, "sequences_per_s": 32.0})
    metrics.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 3')  # a line still being written
    progress, last = last_metrics(str(tmp_path), {"steps": 100, "batch_size": 16})
    assert progress == {"step": 20, "total": 100, "eta_s": 40.0} and last["loss"] == 6.5
    assert last_metrics(str(tmp_path / "nothing"), {"steps": 100}) is None


def test_status_exits_1_on_a_failed_step_and_shows_the_last_run_whatever_its_flags(tmp_path, capsys):
    spec = words_spec(tmp_path)
    assert main(["run", "words", "-f", str(spec), "--set", "joined.fail=true"]) == 1
    capsys.readouterr()
    # The same flags: the failed step, exit 1.
    assert main(["status", "words", "-f", str(spec), "--set", "joined.fail=true"]) == 1
    out = capsys.readouterr().out
    assert "failed" in out and "asked to fail" in out and "words=2" in out
    # Other flags (none): other folders, nothing failed there.
    assert main(["status", "words", "-f", str(spec)]) == 0
    assert "failed" not in capsys.readouterr().out
    # --run latest: the folders the last run wrote, whatever flags it had.
    assert main(["status", "words", "-f", str(spec), "--run", "latest"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("run ") and "--set joined.fail=true" not in out.splitlines()[1]
    assert "asked to fail" in out and "done" in out

    (tmp_path / "other").mkdir()
    assert main(["status", "words", "-f", str(words_spec(tmp_path / "other")), "--run", "latest"]) == 1
    assert "no run of workflow 'words' recorded" in capsys.readouterr().err


def test_status_of_a_running_step_says_since_when(tmp_path, capsys):
    gate = tmp_path / "gate"
    spec = words_spec(tmp_path, gate=str(gate))
    runner = Runner(load(spec).workflow("words"))
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not any(row["state"] == "running" for row in runner.status()):
            assert time.time() < deadline
            time.sleep(0.05)
        assert main(["status", "words", "-f", str(spec)]) == 0
        lines = capsys.readouterr().out.splitlines()
        at = next(i for i, line in enumerate(lines) if line.startswith("running"))
        assert "no progress recorded, since 20" in lines[at + 1] and " min)" in lines[at + 1]
    finally:
        gate.touch()
        thread.join(30)


@pytest.mark.parametrize("store,env", [
    ("gs://bucket/bertflow", "STORAGE_EMULATOR_HOST"),
    ("s3://bucket/bertflow", "AWS_ENDPOINT_URL_S3"),
])
def test_an_unreachable_store_is_one_line_after_one_connect(tmp_path, capsys, monkeypatch, store, env):
    """Left to itself a client library retries a refused store for a minute (gcsfs 11
    connects, botocore 5); the preflight makes one connect per endpoint and stops."""
    port = closed_port()
    monkeypatch.setenv(env, f"http://127.0.0.1:{port}")
    raw = yaml.safe_load(words_spec(tmp_path, storage=store).read_text())
    # A data path on the same store: its endpoint is the root's, tried once for both.
    raw["workflows"]["words"]["steps"]["wiki"] = {"kind": "wikipedia", "params": {"dump": f"{store}/raw/dump.xml.bz2"}}
    spec = write_spec(tmp_path, raw)
    for command in (["run", "words", "--dry-run"], ["status", "words"]):
        with connects_to(port) as attempts:
            assert main([*command, "-f", str(spec)]) == 1
        assert attempts == [("127.0.0.1", port)], command
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0] == lines[1]
    assert lines[0].startswith(f"error: storage {store}: cannot reach 127.0.0.1:")
    assert ("GOOGLE_APPLICATION_CREDENTIALS" if store.startswith("gs") else "AWS_ACCESS_KEY_ID") in lines[0]


def test_a_store_that_refuses_is_one_line_naming_the_credentials(tmp_path, capsys, monkeypatch):
    """A GCS endpoint that answers 401 to an anonymous caller, as GCS does without credentials."""
    import http.server
    import json

    class Refuses(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"error": {"code": 401, "message": "Anonymous caller does not have "
                                         "storage.objects.list access to the Google Cloud Storage bucket."}}).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass  # a client that hangs up mid-reply (gcsfs giving up) is this server's business, not stderr's

    server = Server(("127.0.0.1", 0), Refuses)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{server.server_port}")
        assert main(["status", "words", "-f", str(words_spec(tmp_path, storage="gs://private/bertflow"))]) == 1
    finally:
        server.shutdown()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: storage gs://private/bertflow: HttpError: Anonymous caller")
    assert "GOOGLE_APPLICATION_CREDENTIALS" in err[0] and "gcloud auth application-default login" in err[0]


def test_submit_refuses_local_storage_and_an_unreachable_address(tmp_path, capsys):
    spec = words_spec(tmp_path)
    port = closed_port()
    address = f"http://127.0.0.1:{port}"
    assert main(["submit", "words", "-f", str(spec), "--address", address]) == 2
    err = capsys.readouterr().err
    assert f"storage {tmp_path}/runs is a folder on this machine" in err and "--local-storage" in err

    assert main(["submit", "words", "-f", str(spec), "--address", address, "--storage", "memory://x"]) == 2
    assert "storage memory://x lives in this process" in capsys.readouterr().err

    # One connect to the dashboard's port, and Ray's job client (which retries) never started.
    with connects_to(port) as attempts:
        assert main(["submit", "words", "-f", str(spec), "--address", address, "--local-storage"]) == 1
    assert attempts == [("127.0.0.1", port)]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot reach the Ray dashboard at {address}")
    assert "Connection refused" in err[0]
