"""A local job's worker process: Beam's SDK worker, which ends when the job's process does.

    python -m pipelines.local_worker      # what local_runner.LocalRunner starts per worker

The FnApiRunner starts each worker through ``/bin/sh -c``, so a worker's parent is a
shell that outlives the job's process when that is killed (``kill -9``, the OOM killer),
and a worker still starting then waits on the job's gone gRPC servers for minutes. So,
before Beam is imported: a daemon thread waits on a pidfd of the job's process (its pid
in ``RUNNER_PID``), which the kernel makes readable when that process exits (no polling;
a pidfd never stands for a process that reused the pid), and ends the worker.
``PR_SET_PDEATHSIG`` would not do: it watches the direct parent, the shell. Where pidfds
are missing (not Linux), the thread polls whether the pid still lives.
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time

RUNNER_PID = "BERTFLOW_BEAM_RUNNER_PID"
POLL_SECONDS = 1.0


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])  # the field after "(name) state"
    except (OSError, ValueError, IndexError):
        return None


def _is_ancestor(pid: int) -> bool:
    """Whether the job's process ``pid`` is this worker's parent or its shell's parent."""
    parent = os.getppid()
    return parent == pid or _parent_of(parent) == pid


def _wait_for_exit(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):  # no pidfds here
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                pass
            time.sleep(POLL_SECONDS)
    # Checked once the pidfd is held: a pid reused by now is not our ancestor.
    if os.path.isdir("/proc/self") and not _is_ancestor(pid):
        return
    select.select([fd], [], [])


def _end_with(pid: int) -> None:
    _wait_for_exit(pid)
    os._exit(1)


def watch() -> None:
    """End this process when the job's process has ended (a no-op outside a local job's
    worker)."""
    pid = int(os.environ.get(RUNNER_PID) or 0)
    if not pid or pid == os.getpid():
        return
    threading.Thread(target=_end_with, args=(pid,), name="end-with-job", daemon=True).start()


def main() -> None:
    watch()
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(sys.argv)


if __name__ == "__main__":
    main()
