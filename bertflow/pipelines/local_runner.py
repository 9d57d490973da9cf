"""Beam's pipeline options, and what the local runner's processes need.

Local runs use the portable FnApiRunner (``LocalRunner``, named by its class): recent
Beam's ``DirectRunner`` may hand a pipeline to Prism, which downloads a runner binary at
run time. Several workers are worker processes (multi-processing mode); one worker runs in
the runner's own process (in-memory mode), which spares a process, its imports and the
gRPC data plane (docs/benchmarks.md). The worker processes end when the job's process
ends, however it ends (``bertflow.pipelines.local_worker``).
"""

from __future__ import annotations

import gc
import os
import re
import shlex
import sys
from contextlib import contextmanager
from typing import Any

from apache_beam.portability import python_urns
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from bertflow.contracts.layout import DamagedShard
from bertflow.pipelines.local_worker import RUNNER_PID

FN_API_RUNNER = "bertflow.pipelines.local_runner.LocalRunner"
LOCAL_RUNNERS = {"directrunner", "direct", "fnapirunner", FN_API_RUNNER.lower(),
                 "apache_beam.runners.portability.fn_api_runner.fnapirunner"}
# exec: the shell the FnApiRunner starts it with becomes the worker. trap '' INT: the worker
# starts with Ctrl-C ignored (kept across exec), so one that is still importing prints no traceback.
WORKER_COMMAND = f"trap '' INT; exec {shlex.quote(sys.executable)} -m bertflow.pipelines.local_worker"


class LocalRunner(FnApiRunner):
    """The FnApiRunner, whose worker processes are ``bertflow.pipelines.local_worker``'s: Beam's
    SDK worker, which ends with the job's process."""

    def run_via_runner_api(self, pipeline_proto, options):
        for environment in pipeline_proto.components.environments.values():
            if environment.urn == python_urns.SUBPROCESS_SDK:  # the payload: a command line
                environment.payload = WORKER_COMMAND.encode()
        return super().run_via_runner_api(pipeline_proto, options)


def running_mode(workers: int) -> str:
    return "in_memory" if workers <= 1 else "multi_processing"


def pipeline_options(runner: str = "DirectRunner", options: dict[str, Any] | None = None, job_name: str | None = None,
                     **overrides):
    """``PipelineOptions`` for ``runner`` with ``options`` (and ``overrides``) passed through
    as Beam flags.

    ``pipeline_options()`` is the local multi-process runner with one worker per core
    (``direct_num_workers=1``: in the runner's process); ``pipeline_options("DataflowRunner",
    {"project": "p", "region": "us-central1", "temp_location": "gs://b/tmp"}, job_name=...)``
    runs on Dataflow (and likewise Flink, Spark). ``job_name`` names the job on a remote
    runner (local runs have no use for it).
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    flags: dict[str, Any] = {**(options or {}), **overrides}
    if runner.lower() in LOCAL_RUNNERS:
        flags.setdefault("direct_num_workers", os.cpu_count() or 1)
        flags.setdefault("direct_running_mode", running_mode(int(flags["direct_num_workers"])))
        runner = FN_API_RUNNER
    elif job_name:
        # Remote runners take lowercase letters, digits and hyphens.
        flags.setdefault("job_name", job_name.lower().replace("_", "-"))
    # flags=[]: never parse this process's own command line as Beam flags.
    return PipelineOptions(flags=[], runner=runner, **flags)


# glibc's settings for a job's worker processes (they inherit the environment when the
# job starts them; Arrow's own pool is jemalloc, see ``bertflow/pipelines/__init__.py``): without
# them a worker's memory grows with the corpus, as glibc's per-thread arenas keep what was
# freed (the SDK harness runs bundles on a thread pool). docs/benchmarks.md has the runs.
WORKER_ENV = {
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_MMAP_THRESHOLD_": str(4 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(8 << 20),
}


@contextmanager
def worker_environment():
    """``WORKER_ENV``, and this process's pid for ``local_worker`` to watch, in the
    environment while a job runs (its workers start then), and only then, so that
    processes started later (a next step's Ray workers) keep their defaults. A user's own
    setting of a glibc variable wins."""
    added = [name for name in WORKER_ENV if name not in os.environ]
    os.environ.update({name: WORKER_ENV[name] for name in added})
    runner_pid = os.environ.get(RUNNER_PID)
    os.environ[RUNNER_PID] = str(os.getpid())
    try:
        yield
    except Exception as e:
        failure = worker_failure(e)
        if failure is None:
            raise
        raise failure from e
    finally:
        for name in added:
            os.environ.pop(name, None)
        if runner_pid is None:
            os.environ.pop(RUNNER_PID, None)
        else:
            os.environ[RUNNER_PID] = runner_pid


# The last line of a worker's traceback that Beam carries in its error's text:
# "bertflow.contracts.layout.DamagedShard: /.../documents-00000.parquet does not read ... [while running 'Read']"
_WORKER_ERROR = re.compile(r"^([A-Za-z_][\w.]*): (.+?)(?: \[while running '[^']*'\])?$", re.M)


def worker_failure(e: Exception) -> Exception | None:
    """The error a Beam worker raised, from the failure of the job that Beam reports
    (whose text is the worker's whole traceback): a damaged shard as itself, naming the
    file and the step to redo; anything else as one line. None when ``e`` carries no
    worker traceback."""
    text = str(e)
    if "Traceback (most recent call last)" not in text:
        return None
    found = _WORKER_ERROR.findall(text)
    if not found:
        return None
    name, message = found[-1]
    if name.rsplit(".", 1)[-1] == DamagedShard.__name__:
        return DamagedShard(message)
    return RuntimeError(f"a Beam worker failed: {name}: {message}")


_heap_frozen = False


def freeze_heap() -> None:
    """Once per process: collect, then move every object the process holds by now (Beam,
    gRPC, the job's modules) to the collector's permanent generation, so that the
    interpreter's collections, the one at exit included, skip them. Our DoFns call it in
    ``setup`` (each worker, once its imports are done), the jobs' command lines once their
    arguments are read. Frozen objects are still freed when their last reference goes."""
    global _heap_frozen
    if not _heap_frozen:
        _heap_frozen = True
        gc.collect()
        gc.freeze()
