"""Beam's local runner, as every job here uses it when run on its own.

We name the portable FnApiRunner class itself: recent Beam's ``DirectRunner`` may hand a
pipeline to Prism, which downloads a runner binary at run time. Several workers are worker
processes (multi-processing mode); one worker runs in the runner's own process (in-memory
mode), which spares a process, its imports and the gRPC data plane: measured on the
Wikipedia benchmark's 3.2 M words, 9.6-10.0 CPU s in-memory against 11.3-11.9 for one
worker process, and 350 MB against 570 MB.
"""

from __future__ import annotations

import gc
import os
from contextlib import contextmanager

FN_API_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"


def running_mode(workers: int) -> str:
    return "in_memory" if workers <= 1 else "multi_processing"


def local_options(workers: int, **flags):
    """``PipelineOptions`` for ``workers`` local workers; ``flags=[]`` so that the job's own
    command line is never parsed as Beam flags."""
    from apache_beam.options.pipeline_options import PipelineOptions

    return PipelineOptions(
        flags=[], runner=FN_API_RUNNER, direct_running_mode=running_mode(workers), direct_num_workers=workers, **flags
    )


# glibc's settings for a job's worker processes (they inherit the environment when the
# job starts them; Arrow's own pool is jemalloc, see ``pipelines/__init__.py``). Without
# them a worker's RSS kept growing with the corpus though it holds one bucket at a time:
# glibc's per-thread arenas (the SDK harness runs bundles on a thread pool) keep what was
# freed. The mmap threshold is 4 MiB: at 128 KiB every numpy column of a batch was a
# fresh mmap whose pages the kernel zeroes, +2.7 CPU s on 14.5 at 10 MB with 2 workers for
# the same peak (361 vs 358 MB); at 32 MiB the peak grew to 419 MB. (One worker runs in
# this process, whose allocators were chosen when it started.)
WORKER_ENV = {
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_MMAP_THRESHOLD_": str(4 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(8 << 20),
}


@contextmanager
def worker_allocators():
    """``WORKER_ENV`` in the environment while a job runs (its workers start then), and
    only then, so that processes started later (a next step's Ray workers) keep their
    defaults. A user's own setting of a variable wins."""
    added = [name for name in WORKER_ENV if name not in os.environ]
    os.environ.update({name: WORKER_ENV[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


_heap_frozen = False


def freeze_heap() -> None:
    """Once per process: collect, then move every object the process holds by now (Beam,
    gRPC and the Google clients Beam imports, the job's modules) to the collector's
    permanent generation. Our DoFns call it in ``setup``, which runs in each worker once
    its imports are done, and the jobs' command lines once their arguments are read.

    Otherwise the interpreter's collections at exit traverse all of them: 0.5 s per
    process at the end of every job, and the local runner stops its workers one after
    another (examples job, 10 MB, 2 workers: 6.8-8.2 s wall against 8.1-9.7 without).
    Full collections during the run traverse less too. Frozen objects are still freed
    when their last reference goes; only cycles among them are kept."""
    global _heap_frozen
    if not _heap_frozen:
        _heap_frozen = True
        gc.collect()
        gc.freeze()
