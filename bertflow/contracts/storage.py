"""Every path through fsspec: local folders, gs://, s3://, memory://."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import posixpath
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import fsspec


def absolute(url: str, base_dir: Path) -> str:
    """A path from the spec as given when it is a URL or absolute, else taken from the
    workflow file's folder, so a run does not depend on the shell's directory."""
    if "://" in url or Path(url).is_absolute():
        return url
    return str((Path(base_dir) / url).resolve())


def resolve_root(url: str, base_dir: Path) -> str:
    """A storage root as an absolute URL (see ``absolute``)."""
    return absolute(url, base_dir).rstrip("/") if "://" in url else absolute(url, base_dir)


def join(root: str, *parts: str) -> str:
    return posixpath.join(root.rstrip("/"), *parts)


# The fsspec backend of each store and the extra that installs it: local use needs none.
BACKENDS = {"gs": ("gcsfs", "gcp"), "gcs": ("gcsfs", "gcp"), "s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3")}


class MissingBackend(ImportError):
    """A store's URL on an install without the extra that reads that store."""


def missing_backend(url: str) -> str:
    """"" when this install has the backend of ``url``'s store (or it needs none), else one
    line naming the extra to install. Looks the module up without importing it."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in BACKENDS:
        return ""
    module, extra = BACKENDS[scheme]
    if importlib.util.find_spec(module) is not None:
        return ""
    return f"{url}: {scheme}:// needs {module}, which is not installed: pip install 'bertflow[{extra}]'"


def fs_for(url: str):
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as e:
        problem = missing_backend(url)
        if problem:
            raise MissingBackend(problem) from e
        raise


def is_local(url: str) -> bool:
    """Whether ``url`` names this machine's file system (a plain path or file://)."""
    return is_local_fs(fs_for(url)[0])


def url_of(fs, path: str) -> str:
    """The URL of ``path`` on ``fs``: a plain path on the local disk, else with the
    store's protocol put back (fsspec's paths drop it)."""
    return path if is_local_fs(fs) else fs.unstrip_protocol(path)


def is_local_fs(fs) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def glob(url: str) -> list[str]:
    """The URLs matching the pattern ``url``, sorted."""
    fs, path = fs_for(url)
    return [url_of(fs, p) for p in sorted(fs.glob(path))]


def remove_tree(url: str) -> None:
    """Remove the folder ``url`` and all in it, if it is there."""
    fs, path = fs_for(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def read_text(url: str) -> str:
    with fsspec.open(url, "rt", encoding="utf-8") as f:
        return f.read()


@contextlib.contextmanager
def local_folder(url: str):
    """A local path holding the folder ``url`` (for readers of local files only): the
    folder itself when it is on this machine, else a temporary copy, removed afterwards."""
    fs, path = fs_for(url)
    if is_local_fs(fs):
        if not fs.isdir(path):
            raise FileNotFoundError(f"folder {url} does not exist")
        yield path
        return
    tmp = tempfile.mkdtemp(prefix="bertflow-copy-")
    try:
        fs.get(path.rstrip("/") + "/", tmp, recursive=True)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def exists(url: str) -> bool:
    fs, path = fs_for(url)
    return fs.exists(path)


def read_json(url: str) -> Any:
    with fsspec.open(url, "r") as f:
        return json.load(f)


@contextlib.contextmanager
def atomic_file(url: str):
    """A binary file that appears at ``url`` only once complete: written under a temporary
    name beside it (``_tmp.<uuid>.<name>``: no shard glob matches it, and two writers of the
    same file, say a retried Beam bundle and its first try, never share one), then renamed.
    A reader sees the old file or the new one; a failed write leaves the target alone."""
    fs, path = fs_for(url)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    tmp = posixpath.join(posixpath.dirname(path), f"_tmp.{uuid.uuid4().hex}.{posixpath.basename(path)}")
    try:
        with fs.open(tmp, "wb") as f:
            yield f
    except BaseException:
        if fs.exists(tmp):
            fs.rm(tmp)
        raise
    fs.mv(tmp, path)


def write_bytes_atomic(url: str, data: bytes) -> None:
    with atomic_file(url) as f:
        f.write(data)


def write_json(url: str, obj: Any) -> None:
    write_bytes_atomic(url, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def list_files(url: str) -> dict[str, int]:
    """``{relative path: size}`` of every file under ``url``."""
    fs, path = fs_for(url)
    if not fs.exists(path):
        return {}
    found = fs.find(path, detail=True)
    root = path.rstrip("/") + "/"
    return {
        p[len(root):] if p.startswith(root) else p: int(info.get("size") or 0)
        for p, info in sorted(found.items())
        if info.get("type", "file") == "file"
    }


def makedirs(url: str) -> None:
    fs, path = fs_for(url)
    fs.makedirs(path, exist_ok=True)


def put_file(local: str, url: str) -> None:
    fs, path = fs_for(url)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    fs.put_file(local, path)
