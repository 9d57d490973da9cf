"""A step's lease: one run at a time writes a step's folder, on any fsspec store.

The lease is ``_lease.json`` in the step's folder: the run id, host, pid and a heartbeat
(wall-clock seconds) that a thread of the holder rewrites every ``interval`` seconds.
Taking it is safe against a race: on a local disk the file is created exclusively (a
complete file hard-linked into place, which fails when one is there); on S3 every write
of it is conditional (PutObject with ``If-None-Match: *`` to create it, ``If-Match`` on the
ETag read to take over an expired one or to beat the heartbeat), so of racing writers
exactly one succeeds however long the others stalled; on another object store, which
fsspec gives no exclusive create, a run writes it, waits ``settle`` seconds and reads it
back: it holds the lease only if the run id there is its own (the last writer wins, and
every writer but the last sees another's id). A holder that died leaves a lease that
expires: its heartbeat is older than ``expire_after`` seconds, or its pid is gone on this
host. A heartbeat that finds another run's id (on S3: a lease changed since its last
write) has lost the lease; ``lost`` says so.

    lease = Lease(storage.join(output, LEASE), run_id)
    lease.acquire(wait=None, on_wait=log_holder)   # blocks; LeaseHeld after ``wait`` s
    ...
    lease.release()
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from typing import Callable

from bertflow.contracts import storage

LEASE = "_lease.json"


class LeaseHeld(Exception):
    """Another live run holds the lease; ``holder`` is its lease file's content."""

    def __init__(self, url: str, holder: dict, waited: float):
        self.url, self.holder = url, holder
        super().__init__(f"{url} is held by {describe(holder)}; waited {waited:.0f}s")


def describe(holder: dict) -> str:
    age = time.time() - float(holder.get("heartbeat", 0))
    if holder.get("run_id") is None:
        return f"a lease file that is not one a run wrote (last written {age:.0f}s ago)"
    return (f"run {holder.get('run_id')} (host {holder.get('host')}, pid {holder.get('pid')}, "
            f"since {holder.get('taken')}, heartbeat {age:.0f}s ago)")


class Lease:
    def __init__(self, url: str, run_id: str, interval: float = 10.0, expire_after: float | None = None,
                 settle: float = 1.0):
        self.url, self.run_id = url, run_id
        self.interval = interval
        self.expire_after = expire_after if expire_after is not None else 6 * interval
        self.settle = settle
        self.local = storage.is_local(url)
        self.conditional = _conditional_store(url)
        self._etag: str | None = None  # on S3, the ETag of our last write of the lease
        self.lost: dict | None = None  # the run that took the lease from us, if one did
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._taken = ""

    # -- reading -----------------------------------------------------------------------

    def holder(self) -> dict | None:
        """The lease file's content; None when there is none (or it went between looking
        and reading)."""
        for attempt in range(5):
            try:
                return storage.read_json(self.url)
            except FileNotFoundError:
                return None
            except json.JSONDecodeError:
                return self._damaged()
            except OSError as e:
                # s3fs reads an object with If-Match on the ETag it first saw: a lease
                # rewritten meanwhile (a heartbeat, a takeover) is read again.
                if not _precondition_refused(e) or attempt == 4:
                    raise
        return None  # not reached: the last attempt returns or raises

    def _damaged(self) -> dict:
        # Not a complete lease (writes are atomic, so a damaged one): held by no known run,
        # and it expires as a silent holder's does, by its age.
        fs, path = storage.fs_for(self.url)
        try:
            return {"run_id": None, "heartbeat": fs.modified(path).timestamp()}
        except (OSError, NotImplementedError):
            return {"run_id": None, "heartbeat": time.time()}

    def expired(self, holder: dict) -> str | None:
        """Why ``holder``'s lease no longer counts, or None while it does."""
        if holder.get("host") == socket.gethostname() and not _pid_alive(holder.get("pid")):
            return f"its process {holder.get('pid')} on this host is gone"
        age = time.time() - float(holder.get("heartbeat", 0))
        if age > self.expire_after:
            return f"its heartbeat is {age:.0f}s old"
        return None

    # -- taking ------------------------------------------------------------------------

    def try_take(self) -> dict | None:
        """Take the lease if it is free or expired: None when taken, else its holder."""
        # The ETag before the content: a write between the two fails our If-Match below.
        tag = self._current_etag() if self.conditional else None
        current = self.holder()
        if current is not None and current.get("run_id") != self.run_id and not self.expired(current):
            return current
        self._taken = self._taken or _now()
        body = self._body()
        if current is None and self.local:
            if self._create_exclusive(body):
                return None
            return self.holder() or {"run_id": None, "heartbeat": time.time()}
        if self.conditional:
            if (tag is None) == (current is None) and self._put_conditional(body, tag):
                return None
            return self.holder() or {"run_id": None, "heartbeat": time.time()}
        # An object store (or an expired lease): write, let racing writers land, read back.
        storage.write_json(self.url, body)
        time.sleep(self.settle)
        back = self.holder()
        if back is not None and back.get("run_id") == self.run_id:
            return None
        return back or {"run_id": None, "heartbeat": time.time()}

    def acquire(self, wait: float | None = None, on_wait: Callable[[dict], None] | None = None,
                cancel: threading.Event | None = None) -> bool:
        """Block until the lease is ours, then keep it alive. ``on_wait(holder)`` is called
        when another run is found holding it (again when the holder changes). Raises
        LeaseHeld after ``wait`` seconds (None: as long as it takes); returns whether it
        waited for another run."""
        t0, seen, waited = time.time(), object(), False
        poll = min(self.interval, 2.0)
        while True:
            holder = self.try_take()
            if holder is None:
                self._start_heartbeat()
                return waited
            waited = True
            if holder.get("run_id") != seen:
                seen = holder.get("run_id")
                if on_wait:
                    on_wait(holder)
            if wait is not None and time.time() - t0 >= wait:
                raise LeaseHeld(self.url, holder, time.time() - t0)
            if cancel is not None and cancel.wait(poll):
                raise KeyboardInterrupt
            if cancel is None:
                time.sleep(poll)

    def release(self) -> None:
        """Stop the heartbeat and remove the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        current = self.holder()
        if current and current.get("run_id") == self.run_id:
            fs, path = storage.fs_for(self.url)
            fs.rm(path)

    # -- internals ---------------------------------------------------------------------

    def _body(self) -> dict:
        return {"run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid(),
                "taken": self._taken, "heartbeat": time.time(), "interval": self.interval}

    def _create_exclusive(self, body: dict) -> bool:
        # A hard link fails when the name exists, and what it links is already complete.
        tmp = os.path.join(os.path.dirname(self.url), f"_tmp.{uuid.uuid4().hex}.{LEASE}")
        with open(tmp, "w") as f:
            json.dump(body, f)
        try:
            os.link(tmp, self.url)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def _current_etag(self) -> str | None:
        fs, path = storage.fs_for(self.url)
        try:
            return fs.info(path, refresh=True)["ETag"]
        except FileNotFoundError:
            return None

    def _put_conditional(self, body: dict, etag: str | None) -> bool:
        """Write the lease on S3 only if it is not there (``etag`` None) or is still the
        object of that ETag; False when another writer got there first."""
        fs, path = storage.fs_for(self.url)
        condition = {"mode": "create"} if etag is None else {"IfMatch": etag}
        try:
            out = fs.pipe_file(path, json.dumps(body).encode(), **condition)
        except FileExistsError:  # If-None-Match: * refused (412)
            return False
        except OSError as e:
            if _precondition_refused(e):
                return False
            raise
        self._etag = (out or {}).get("ETag") or self._current_etag()
        return True

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{os.path.basename(os.path.dirname(self.url))}",
                                        daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                current = self.holder()
                if current and current.get("run_id") not in (self.run_id, None):
                    self.lost = current
                    return
                if self.conditional:
                    # Only over our own last write: a run that took the lease over wrote since.
                    if not self._put_conditional(self._body(), self._etag):
                        self.lost = self.holder() or {"run_id": None, "heartbeat": time.time()}
                        return
                    continue
                storage.write_json(self.url, self._body())
            except Exception:  # noqa: BLE001 - a missed beat is retried; expiry allows several
                continue


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _conditional_store(url: str) -> bool:
    """Whether the lease's store takes conditional writes through fsspec: S3 (s3fs's
    ``mode="create"`` is PutObject with If-None-Match: *, and its keywords reach PutObject,
    so If-Match too). GCS has the same (``ifGenerationMatch``) but no emulator here to test
    it against, so it stays on write, settle, read back."""
    if "://" not in url:
        return False
    return url.split("://", 1)[0].lower() in ("s3", "s3a")


def _precondition_refused(e: BaseException) -> bool:
    """An S3 error that says a conditional write lost: 412 PreconditionFailed, or 409
    ConditionalRequestConflict (S3's answer to conditional writes racing on one key)."""
    while e is not None:
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412)
        e = e.__cause__
    return False


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    except (OSError, TypeError, ValueError):
        return False
