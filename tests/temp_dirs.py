"""A temporary directory of the test's own, so that "a run leaves nothing in it" is checked
exactly, undisturbed by other processes of the machine.

    with own_temp_dir(tmp_path / "tmp") as tmp:    # TMPDIR and tempfile.tempdir, before Ray starts
        ...run...
    assert leftovers(tmp) == []

    env = {**os.environ, **temp_env(tmp, ray_dir)}  # the same for a child process

Two engines keep folders of their own there by design, across runs, and are sent elsewhere:
Ray's session folder (its logs and sockets: ``RAY_TMPDIR``, a short path, as a socket's
path has at most 107 bytes) and torch's compile cache (``TORCHINDUCTOR_CACHE_DIR``, which
any ``torch.optim.AdamW`` creates).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def temp_env(tmp: Path, engines: Path) -> dict[str, str]:
    return {"TMPDIR": str(tmp), "RAY_TMPDIR": str(engines / "ray"),
            "TORCHINDUCTOR_CACHE_DIR": str(engines / "torchinductor")}


@contextlib.contextmanager
def engines_dir():
    """A short folder (the system's temporary directory's) for the engines' own folders,
    removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="bertflow-test-engines-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def own_temp_dir(tmp: Path):
    """``tmp`` (created) as this process's temporary directory, and that of every process
    started meanwhile (a local Ray's, whose workers inherit its environment)."""
    tmp.mkdir(parents=True, exist_ok=True)
    with engines_dir() as engines:
        env = temp_env(tmp, engines)
        saved, saved_tempdir = {k: os.environ.get(k) for k in env}, tempfile.tempdir
        os.environ.update(env)
        tempfile.tempdir = str(tmp)
        try:
            yield tmp
        finally:
            tempfile.tempdir = saved_tempdir
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def leftovers(tmp: Path) -> list[str]:
    """What is in ``tmp``, every file and folder, relative to it."""
    return sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*"))
