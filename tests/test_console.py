"""The console of `bertflow run` (issue 18.2), through the real CLI in a subprocess whose
stdout is a pipe: the runner's own lines only (no colour, no Ray/Ray Train/Beam lines),
those in the steps' logs instead, a bounded line count; `--verbose` brings them back.
A Beam step (books) and a Ray Train step (pretrain) on a local Ray, both real."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from bertflow.infra.console import Console, plain
from bertflow.infra.kinds import KINDS
from bertflow.infra.runner import LOG, Runner
from bertflow.infra.spec import SpecFile
from tests import runner_kinds  # noqa: F401 - registers the test kinds (test_examples)

ROOT = Path(__file__).resolve().parents[1]
ENGINE = re.compile(r"pid=|TrainingReport|Failed to query|PreemptionWatcher|apache_beam|Ray Train|"
                    r"\bINFO\b|\bWARNING\b|Traceback|\x1b\[")


def spec(tmp_path: Path) -> tuple[dict, Path]:
    book = tmp_path / "books" / "persuasion.txt"
    book.parent.mkdir()
    text = (ROOT / "data" / "books" / "austen-persuasion.txt").read_text(encoding="utf-8")
    book.write_text(text[:20000], encoding="utf-8")
    raw = {"storage": str(tmp_path / "runs"), "beam": {"runner": "DirectRunner"}, "ray": {"num_cpus": 1},
           "workflows": {"c": {"steps": {
               "books": {"kind": "books", "params": {"files": str(book), "num_shards": 1}},
               "examples": {"kind": "test_examples"},
               "pretrain": {"kind": "pretrain", "inputs": {"examples": "examples"},
                            "params": {"model": "tiny", "steps": 20, "batch_size": 4, "log_every": 2,
                                       "max_seq_length": 32},
                            "resources": {"workers": 1, "cpus_per_worker": 1}},
           }}}}
    path = tmp_path / "workflows.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return raw, path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.runner_kinds", "run", *args], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)


def test_run_shows_its_own_lines_and_the_engines_go_to_the_step_logs(tmp_path):
    raw, path = spec(tmp_path)
    done = run("c", "-f", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert not [line for line in lines if ENGINE.search(line)], done.stdout
    assert done.stderr == "", done.stderr
    assert len(lines) < 30, done.stdout
    for step in ("books", "examples", "pretrain"):
        assert any(re.match(rf"\d\d:\d\d:\d\d step {step} done in [\d.]+s", line) for line in lines), done.stdout
    assert any(line.startswith("[pretrain] step ") and "/20 (" in line for line in lines), done.stdout
    assert any(line.startswith("training curves: tensorboard --logdir_spec pretrain:") for line in lines)

    r = Runner(SpecFile(raw, path).workflow("c"))
    beam_log = Path(r.output("books"), LOG).read_text()
    ray_log = Path(r.output("pretrain"), LOG).read_text()
    assert "apache_beam" in beam_log
    # what the Ray Train worker printed, relayed by the local Ray to the driver
    assert "[pretrain] 1 workers on cpu" in ray_log
    # Ray Train's placement-group cleaner is not started on a local Ray: no State API polls
    assert "Failed to query" not in ray_log

    verbose = run("c", "-f", str(path), "--force", "pretrain", "-v")
    assert verbose.returncode == 0, verbose.stdout + verbose.stderr
    shown = verbose.stdout + verbose.stderr
    assert "[pretrain] 1 workers on cpu" in shown and "pid=" in shown, shown
    assert "reused  books" in verbose.stdout and "ran     pretrain" in verbose.stdout


def test_progress_on_a_pipe_is_a_line_every_so_often(tmp_path):
    from bertflow.trainer.metrics_log import MetricsLog

    log = MetricsLog(str(tmp_path), start_step=0)
    log.write(10, {"loss": 7.25, "sequences_per_s": 64.0, "tokens_per_s": 2048.0})
    log.close()
    p = KINDS["pretrain"].progress(str(tmp_path), {"steps": 100, "batch_size": 16})
    assert p == {"n": 10, "total": 100, "unit": "step", "text": "loss 7.250 | tok/s 2048 | ETA 0.4 min"}
    assert plain("pretrain", p) == "[pretrain] step 10/100 (10%) | loss 7.250 | tok/s 2048 | ETA 0.4 min"

    class Pipe(list):
        def write(self, s):
            self.append(s)

        def flush(self):
            pass

    out = Pipe()
    console = Console(out)
    watched = {"name": "pretrain", "read": lambda: p, "bar": None, "shown": 0.0}
    for _ in range(3):  # three polls in a row: one line, not three
        console._show("pretrain", watched, p)
    assert "".join(out) == plain("pretrain", p) + "\n" and "\r" not in "".join(out)


def test_finetune_progress_counts_epochs_over_the_trials(tmp_path):
    from bertflow.trainer.metrics_log import MetricsLog

    params = {"tasks": [{"name": "sentiment", "type": "classification", "train": "t.csv", "dev": "d.csv",
                         "epochs": 2}], "grid": {"lr": [1e-4, 3e-4]}}
    trials = tmp_path / "trials" / "sentiment"
    first = MetricsLog(str(trials / "lr-0.0001"), start_step=0)
    first.write(4, {"train/loss": 0.7}, epoch=0.5)
    first.write(8, {"train/epoch_loss": 0.6, "dev/accuracy": 0.75}, epoch=1)
    first.close()
    (trials / "lr-0.0003").mkdir(parents=True)
    (trials / "lr-0.0003" / "result.json").write_text(json.dumps({"status": "ok"}))
    p = KINDS["finetune"].progress(str(tmp_path), params)
    assert p == {"n": 3.0, "total": 4, "unit": "epoch", "text": "trials 1/2 done | sentiment dev accuracy 75.0"}
