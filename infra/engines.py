"""The two engines: Beam pipeline options and the Ray connection, from the spec.

Local Beam runs use the portable FnApiRunner in multi-processing mode, one worker per
core. We name the FnApiRunner class itself: recent Beam's ``DirectRunner`` may hand a
pipeline to Prism, which downloads a runner binary at run time.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pipelines.local_runner import FN_API_RUNNER, running_mode

log = logging.getLogger(__name__)

# A local Ray's GCS and raylet are started with PR_SET_PDEATHSIG: Linux kills them when
# the *thread* that started them ends. Steps run in threads of their own, so Ray is
# started from this thread instead, which lives as long as the process.
_RAY_STARTER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ray-starter")

LOCAL_RUNNERS = {"directrunner", "direct", "fnapirunner", FN_API_RUNNER.lower()}


def beam_options(runner: str = "DirectRunner", options: dict[str, Any] | None = None, **overrides):
    """``PipelineOptions`` for ``runner`` with ``options`` passed through as Beam flags.

    ``beam_options()`` is the local multi-process runner with one worker per core;
    ``beam_options("DataflowRunner", {"project": "p", "region": "us-central1",
    "temp_location": "gs://b/tmp"})`` runs on Dataflow (and likewise Flink, Spark).
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    flags: dict[str, Any] = {**(options or {}), **overrides}
    if runner.lower() in LOCAL_RUNNERS:
        flags.setdefault("direct_num_workers", os.cpu_count() or 1)
        flags.setdefault("direct_running_mode", running_mode(int(flags["direct_num_workers"])))
        runner = FN_API_RUNNER
    # flags=[]: never parse this process's own command line as Beam flags.
    return PipelineOptions(flags=[], runner=runner, **flags)


def ray_init(address: str | None = None, num_cpus: float | None = None, num_gpus: float | None = None) -> None:
    """Connect this process to Ray once: to ``address`` (``auto``, ``ray://head:10001``, or
    ``RAY_ADDRESS`` when set) or to a new local Ray with exactly ``num_cpus``/``num_gpus``
    (never all cores by surprise)."""
    import ray

    # Inside a job submitted to a cluster (`bertflow submit`), Ray says where it is.
    address = address or os.environ.get("RAY_ADDRESS")

    def start() -> None:
        if ray.is_initialized():  # another step got here first
            return
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            # "local": a new Ray of our own, not whatever `ray start` left on this machine.
            ray.init(
                address="local",
                num_cpus=num_cpus if num_cpus is not None else (os.cpu_count() or 1),
                num_gpus=num_gpus or 0,
                include_dashboard=False,
                log_to_driver=True,
            )

    _RAY_STARTER.submit(start).result()
    log.info("ray: %s", ray.cluster_resources())
