"""What a step's input data holds, for its hash: a dump or a book that changes under the
same name must rerun the steps that read it.

A step's ``data_path`` parameters (``bertflow.contracts.config.data_paths``: a dump, a folder of
books, a task's train file, a model folder to start from) are each reduced to an identity:

- a local file: its size and the SHA-256 of its bytes. The digest is computed once and
  cached in ``$BERTFLOW_CACHE`` (default ``~/.cache/bertflow``) under ``digests/``, keyed
  by the file's absolute path, size, modification time (ns), inode and device, so a large
  dump is read again only when it was written again. Only the bytes reach the hash: a
  copy or a ``touch`` of the same bytes reuses the step.
- an object in a store: the store's own identity (S3's ETag and version id, GCS's
  generation and MD5) and its size; nothing is read. A store that gives neither (``memory://``)
  is read.
- a folder or a glob: the sorted listing of its files (names relative to it), each as above.
- a path with nothing there: ``missing`` (the step then fails with its own message).

    ident = identity("data/books/*.txt")       # {"digest": "…", "files": {"austen-emma.txt": {...}}}
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from pathlib import Path

from bertflow.contracts import storage

# The keys by which object stores name a version of an object (s3fs, gcsfs, adlfs).
STORE_VERSION_KEYS = ("ETag", "etag", "VersionId", "generation", "md5Hash", "content_md5", "version_id")
GLOB_CHARS = "*?["
CHUNK = 1 << 20


def cache_dir() -> Path:
    return Path(os.environ.get("BERTFLOW_CACHE") or Path.home() / ".cache" / "bertflow")


def identity(url: str) -> dict:
    """``{"digest": str, "files": {name: {...}}}`` for the file, folder or glob ``url``."""
    fs, path = storage.fs_for(url)
    files = _listing(fs, path)
    if not files:
        entries: dict = {}
        digest = _json_digest({"missing": url})
    else:
        entries = {name: _file_identity(fs, p, info) for name, (p, info) in files.items()}
        digest = _json_digest(entries)
    return {"url": url, "digest": digest, "files": entries}


def _listing(fs, path: str) -> dict[str, tuple[str, dict]]:
    """``{name: (path, info)}`` of the files ``path`` names, sorted by name."""
    if any(c in path for c in GLOB_CHARS):
        root = posixpath.dirname(path[:min(path.index(c) for c in GLOB_CHARS if c in path)])
        found = {}
        for p, info in fs.glob(path, detail=True).items():
            found.update(fs.find(p, detail=True) if info.get("type") == "directory" else {p: info})
    elif fs.isdir(path):
        root, found = path, fs.find(path, detail=True)
    elif fs.exists(path):
        root, found = posixpath.dirname(path), {path: fs.info(path)}
    else:
        return {}
    prefix = root.rstrip("/") + "/"
    return {
        (p[len(prefix):] if p.startswith(prefix) else p): (p, info)
        for p, info in sorted(found.items())
        if info.get("type", "file") == "file"
    }


def _file_identity(fs, path: str, info: dict) -> dict:
    size = int(info.get("size") or 0)
    if storage.is_local_fs(fs):
        return {"size": size, "sha256": _local_digest(path)}
    versions = {k: str(info[k]).strip('"') for k in STORE_VERSION_KEYS if info.get(k)}
    if versions:
        return {"size": size, **versions}
    return {"size": size, "sha256": _digest(fs.open(path, "rb"))}


def _json_digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _digest(f) -> str:
    h = hashlib.sha256()
    with f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _local_digest(path: str) -> str:
    st = os.stat(path)
    key = json.dumps([os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev])
    entry = cache_dir() / "digests" / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")
    try:
        cached = json.loads(entry.read_text())
        if cached.get("key") == key:
            return cached["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = _digest(open(path, "rb"))
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "sha256": digest}))
        os.replace(tmp, entry)
    except OSError:
        pass  # an unwritable cache only costs a re-read next time
    return digest


def by_name(data: dict[str, dict], params: dict) -> dict[str, dict]:
    """A step's data identities (by data path key: ``tasks.0.train``) keyed by the names of
    the list items their keys go through, where an item in ``params`` (as JSON) has a
    ``name`` (``tasks.sentiment.train``): comparing two runs' data then pairs a task with
    itself, not with whichever task took its place in the list."""
    out = {}
    for key, ident in data.items():
        node, parts = params, []
        for part in key.split("."):
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
                name = node.get("name") if isinstance(node, dict) else None
                parts.append(name if isinstance(name, str) else part)
            else:
                node = node.get(part) if isinstance(node, dict) else None
                parts.append(part)
        out[".".join(parts)] = ident
    return out


def changes(before: dict, after: dict) -> list[str]:
    """What differs between two identities of the same input, a line per file:
    ``austen-emma.txt changed (size 912345 -> 912399)``, ``added``, ``removed``."""
    old, new = before.get("files", {}), after.get("files", {})
    lines = []
    for name in sorted(set(old) | set(new)):
        if name not in old:
            lines.append(f"{name} added")
        elif name not in new:
            lines.append(f"{name} removed")
        elif old[name] != new[name]:
            a, b = old[name].get("size"), new[name].get("size")
            lines.append(f"{name} changed" + (f" (size {a} -> {b})" if a != b else " (same size, other bytes)"))
    return lines
