"""A local job's worker process: Beam's SDK worker, which ends when the job's process does.

    python -m bertflow.pipelines.local_worker      # the command local_runner.LocalRunner gives its workers

Otherwise a worker outlives a killed job (``kill -9``, the OOM killer): the FnApiRunner's
workers are children of a shell that outlives the job, and one still starting waits
minutes on the job's gone gRPC servers. So, before Beam is imported, a daemon thread
waits on a pidfd of the job's process (its pid in ``RUNNER_PID``), which the kernel makes
readable when that process exits (no polling; a pidfd never stands for a process that
reused the pid), and ends the worker. Not ``PR_SET_PDEATHSIG``: it fires when the thread
that started the child ends, and only for the direct parent (a shell, unless the command
execs), so it hangs on how Beam starts its workers and may end one early; the watcher
needs only the job's pid. (A worker inside a long C call that holds the GIL ends when the
call returns.) Where pidfds are missing (not Linux), the thread polls the pid.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time

import psutil

RUNNER_PID = "BERTFLOW_BEAM_RUNNER_PID"
POLL_SECONDS = 1.0


def _wait_for_exit(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):  # no pidfds here
        fd = None
    # Checked once the pidfd is held: a pid reused by now is not our parent or the shell's.
    if pid not in {p.pid for p in psutil.Process().parents()}:
        return
    if fd is None:
        while psutil.pid_exists(pid):
            time.sleep(POLL_SECONDS)
    else:
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
    # A terminal's Ctrl-C reaches the whole process group: the job's process handles it
    # (and its end ends this worker); a worker that took it would print its tracebacks.
    # LocalRunner's command starts it ignored already; this covers a worker started otherwise.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch()
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(sys.argv)


if __name__ == "__main__":
    main()
