"""The built wheel, as a user gets it: outside the repo, offline, without the GCP and S3 extras.

The wheel is built from the files the build reads (a copy, so that a stale build/ in the
repo cannot leak into it), installed with `pip install --no-deps --target` into a temp
folder, and run from another temp folder with this venv's Python and PYTHONPATH set to
that folder: `bertflow init`, `validate`, `run --dry-run` and a real run of the demo's
first step. gcsfs and s3fs are made unimportable there (``None`` in ``sys.modules``, what
Python does for a package that is not installed, set by a sitecustomize that every child
process, Beam's and Ray's workers included, also runs), so local use is shown to need
neither extra and a gs:// or s3:// URL to say which one to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from bertflow.infra.starter import WORKFLOWS

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("gcsfs", "s3fs")  # what the [gcp] and [s3] extras bring for fsspec
# Modules of the stores' client libraries; `google` and `google.cloud` themselves are
# namespaces that an installed google-cloud package's .pth creates at every start.
STORE_CLIENTS = ("gcsfs", "s3fs", "google.cloud.storage", "google.auth", "botocore", "boto3", "aiobotocore")


def pip(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    # What the build reads, as the deploy Dockerfiles COPY it.
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("bertflow", "data"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip("wheel", "--no-index", "--no-deps", "--no-build-isolation", str(src), "-w", str(tmp / "wheel"))
    (wheel,) = (tmp / "wheel").glob("bertflow-*.whl")
    site = tmp / "site"
    pip("install", "--no-index", "--no-deps", "--target", str(site), str(wheel))
    blocker = tmp / "without-extras"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(f"import sys\nsys.modules.update(dict.fromkeys({BACKENDS!r}))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(blocker)])
    env["BERTFLOW_CACHE"] = str(tmp / "cache")
    return {"wheel": wheel, "site": site, "env": env, "bertflow": site / "bin" / "bertflow"}


def bertflow(installed: dict, cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The installed console script, run as a user runs it."""
    return subprocess.run([str(installed["bertflow"]), *args], cwd=cwd, env=installed["env"],
                          capture_output=True, text=True, timeout=timeout)


def python(installed: dict, cwd: Path, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=installed["env"],
                          capture_output=True, text=True, timeout=300)


def test_the_wheel_holds_every_package_and_the_sample_data(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    folders = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "bertflow").rglob("*.py")
               if "__pycache__" not in p.parts}
    missing = sorted(f for f in folders if not any(n.startswith(f + "/") and n.endswith(".py") for n in names))
    assert not missing, f"pyproject's [tool.setuptools] packages leave out {missing}"
    data = {str(p.relative_to(ROOT / "data")) for p in (ROOT / "data").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}
    shipped = {n.removeprefix("bertflow/sample_data/") for n in names if n.startswith("bertflow/sample_data/")}
    assert shipped == data
    assert not any(n.startswith(("tests/", "benchmarks/", "data/")) for n in names)
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "bertflow = bertflow.infra.cli:main" in zipfile.ZipFile(installed["wheel"]).read(entry).decode()


def test_outside_the_repo_init_validate_plan_and_run_a_step(installed, tmp_path):
    home = tmp_path / "work"
    home.mkdir()
    where = python(installed, home, "import bertflow, bertflow.sample_data as s; print(bertflow.__file__); "
                                    "print(*s.__path__)")
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert Path(line).is_relative_to(installed["site"]), f"imported from {line}, not the wheel"

    version = bertflow(installed, home, "--version")
    assert version.returncode == 0 and version.stdout.strip() == "bertflow 0.1.0", version.stdout + version.stderr

    init = bertflow(installed, home, "init", "my-bert")
    assert init.returncode == 0, init.stderr
    project = home / "my-bert"
    assert (project / "workflows.yaml").read_text() == WORKFLOWS
    for rel in ("wikipedia/enwiki-sample.xml.bz2", "books/austen-emma.txt", "finetune/qa/squad-sample.json", "README.md"):
        assert (project / "data" / rel).read_bytes() == (ROOT / "data" / rel).read_bytes()
    assert "cd my-bert" in init.stdout and "bertflow run demo" in init.stdout
    copied = {str(p.relative_to(project / "data")) for p in (project / "data").rglob("*") if p.is_file()}
    assert "__init__.py" not in copied and "README.md" in copied

    again = bertflow(installed, home, "init", "my-bert")
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"error: {Path('my-bert') / 'workflows.yaml'} exists: init writes a new workflows.yaml only; "
        "move it away, or give init another folder (bertflow init DIR)"]

    valid = bertflow(installed, project, "validate", "demo")
    assert valid.returncode == 0 and "workflows.yaml: valid" in valid.stdout, valid.stdout + valid.stderr
    assert not valid.stderr  # no warning: every data path is there, no store

    # The plan, in one process that then lists what it imported: no store's client.
    plan = python(installed, project, "import sys\nfrom bertflow.infra.cli import main\n"
                                      "rc = main(['run', 'demo', '--dry-run'])\n"
                                      f"print('imported:', *sorted(m for m, v in sys.modules.items() if v and m.startswith({STORE_CLIENTS!r})))\n"
                                      "sys.exit(rc)")
    assert plan.returncode == 0, plan.stderr
    *plan_lines, imported = plan.stdout.splitlines()
    for step in ("wiki", "books", "vocab", "examples", "pretrain", "finetune"):
        assert any(f"{project / 'runs' / step}-" in line for line in plan_lines), plan.stdout
    assert imported == "imported:"

    # The demo's first step for real (Beam's local runner, its worker processes), then reused.
    run = bertflow(installed, project, "run", "demo", "--only", "wiki")
    assert run.returncode == 0, run.stdout + run.stderr
    (manifest,) = (project / "runs").glob("wiki-*/_SUCCESS.json")
    assert len(list(manifest.parent.glob("documents-*.parquet"))) == 4
    done = manifest.stat().st_mtime_ns
    rerun = bertflow(installed, project, "run", "demo", "--only", "wiki")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert manifest.stat().st_mtime_ns == done and "reused" in rerun.stdout + rerun.stderr


@pytest.mark.parametrize("url,extra", [("gs://bucket/bert", "gcp"), ("s3://bucket/bert", "s3")])
def test_a_store_without_its_extra_is_one_line_naming_it(installed, tmp_path, url, extra):
    (tmp_path / "workflows.yaml").write_text(WORKFLOWS)
    run = bertflow(installed, tmp_path, "run", "demo", "--dry-run", "--storage", url)
    scheme = url.split(":")[0]
    needs = f"{url}: {scheme}:// needs {dict(gcp='gcsfs', s3='s3fs')[extra]}, which is not installed: pip install 'bertflow[{extra}]'"
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.splitlines() == [f"error: storage {needs}"]
    valid = bertflow(installed, tmp_path, "validate", "demo", "--storage", url)
    assert valid.returncode == 0
    assert f"warning: storage: {needs}" in valid.stderr


def test_the_starter_is_the_repos_demo():
    """init writes the demo of the repo's workflows.yaml, with the same defaults."""
    ours, repo = yaml.safe_load(WORKFLOWS), yaml.safe_load((ROOT / "workflows.yaml").read_text())
    assert ours["workflows"] == {"demo": repo["workflows"]["demo"]}
    assert {k: v for k, v in ours.items() if k != "workflows"} == {k: v for k, v in repo.items() if k != "workflows"}
