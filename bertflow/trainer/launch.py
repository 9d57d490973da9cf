"""Starting training on Ray: the one Ray connection, the one ``TorchTrainer`` builder and
the one way to run it.

    from bertflow.trainer.launch import connect_ray, train

    connect_ray()                                   # a new local Ray with every core
    connect_ray(num_cpus=2)                         # ... with exactly 2 CPUs
    connect_ray("ray://head:10001")                 # a cluster (RAY_ADDRESS is honoured too)

    result = train(train_loop, {"lr": 1e-4}, output="s3://b/run", name="checkpoints",
                   workers=2, cpus_per_worker=1, gpus_per_worker=0,
                   max_failures=2, keep_checkpoints=2, callbacks=[...])
    result = train(trial_loop, config, output=None, name="trial-x", workers=1, cpus_per_worker=1)

``connect_ray`` may be called from any thread, any number of times: the first call
connects, later ones do nothing. ``train`` runs ``train_fn(config)`` on ``workers`` Ray
Train workers (DDP over gloo on CPU, NCCL when the workers have GPUs) through the trainer
``torch_trainer`` builds; what the workers report with a checkpoint lands in
``{output}/{name}/`` (any fsspec URL every worker sees), and Ray Train resumes from the
last of them after a failure. ``output=None``: the caller keeps its checkpoints itself, and
Ray Train's run folder is scratch. Nothing a run stages on a node's disk outlives it (see
``train``); a failed run raises ``TrainingFailed``, whose text is one line.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable

from bertflow.contracts.storage import fs_for, is_local

log = logging.getLogger(__name__)

# A local Ray's GCS and raylet are started with PR_SET_PDEATHSIG: Linux kills them when
# the *thread* that started them ends. Steps may run in threads of their own, so Ray is
# started from this thread instead, which lives as long as the process.
_RAY_STARTER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ray-starter")
# Set in this process, and so in every process of the local Ray it starts (its raylet
# inherits the environment, its workers the raylet's): Ray is ours alone and ends with us.
LOCAL_RAY = "BERTFLOW_LOCAL_RAY"

# glibc's malloc gives each freed activation of more than its (adaptive) mmap threshold back
# to the kernel and faults it in again, zeroed, on the next step; training workers keep
# their blocks instead. A value the user exports wins.
WORKER_ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(2 << 30)}


def connect_ray(address: str | None = None, num_cpus: float | None = None, num_gpus: float | None = None) -> None:
    """Connect this process to Ray once: to ``address`` (``auto``, ``ray://head:10001``, or
    ``RAY_ADDRESS`` when set) or to a new local Ray with exactly ``num_cpus``/``num_gpus``
    (all cores when ``num_cpus`` is not given, no GPUs when ``num_gpus`` is not)."""
    import ray

    # Inside a job submitted to a cluster (`bertflow submit`), Ray says where it is.
    address = address or os.environ.get("RAY_ADDRESS")

    def start() -> None:
        if ray.is_initialized():  # another step got here first
            return
        # configure_logging=False: Ray's records go through this process's logging (the
        # step's log; the terminal with `bertflow run -v`), not a stderr handler of its own;
        # log_to_driver: what the workers print is relayed here, to land in the same place.
        if address:
            ray.init(address=address, log_to_driver=True, configure_logging=False)
        else:
            os.environ[LOCAL_RAY] = "1"
            # "local": a new Ray of our own, not whatever `ray start` left on this machine.
            ray.init(
                address="local",
                num_cpus=num_cpus if num_cpus is not None else (os.cpu_count() or 1),
                num_gpus=num_gpus or 0,
                include_dashboard=False,
                log_to_driver=True,
                configure_logging=False,
            )
        logging.getLogger("ray").propagate = True  # configure_logging=False drops Ray's handler, not its propagate=False

    _RAY_STARTER.submit(start).result()
    log.info("ray: %s", ray.cluster_resources())


def trainer_class():
    """Ray Train's ``TorchTrainer``; on a local Ray without its placement-group cleaner.

    Ray Train (2.60) starts, for every ``fit``, a detached ``PlacementGroupCleaner``
    actor (one more worker process) that asks the State API each second whether the
    controller is alive, to free its placement group should the controller die. The State
    API is served by the dashboard, which a local Ray here runs without: each ask fails
    with a warning. And a local Ray ends with this process, placement groups and all, so
    there is nothing for it to clean; on a cluster it stays."""
    from ray.train.torch import TorchTrainer

    if os.environ.get(LOCAL_RAY) != "1":
        return TorchTrainer
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    class LocalTorchTrainer(TorchTrainer):
        def _create_default_callbacks(self):
            return [c for c in super()._create_default_callbacks() if not isinstance(c, PlacementGroupCleanerCallback)]

    return LocalTorchTrainer


def ray_storage(url: str):
    """(storage_path, storage_filesystem) for Ray Train's ``RunConfig``: a local absolute
    path as is; anything else through a pyarrow filesystem wrapping the fsspec one, so every
    fsspec backend (s3 with a custom endpoint, gcs, ...) works the same."""
    if url.startswith("memory://"):
        raise ValueError(f"{url}: Ray Train's storage must be one every worker sees (a local path, s3://, gs://), "
                         "not memory://")
    fs, path = fs_for(url)
    if is_local(url):
        return os.path.abspath(path), None
    import pyarrow.fs as pafs

    return path, pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def torch_trainer(
    train_fn: Callable[[dict], None],
    config: dict[str, Any],
    *,
    output: str,
    name: str,
    workers: int,
    cpus_per_worker: float,
    gpus_per_worker: float = 0,
    max_failures: int = 0,
    keep_checkpoints: int | None = None,
    callbacks: Iterable = (),
):
    """A ``TorchTrainer`` running ``train_fn(config)`` on ``workers`` workers of
    ``cpus_per_worker`` CPUs (and ``gpus_per_worker`` GPUs: NCCL, else gloo). Its run
    folder is ``{output}/{name}``; Ray Train restarts the worker group up to
    ``max_failures`` times and keeps the last ``keep_checkpoints`` reported checkpoints
    (all when None). Ray must be connected (``connect_ray``)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig

    storage_path, storage_fs = ray_storage(output)
    worker_env = {k: v for k, v in WORKER_ALLOCATOR_ENV.items() if k not in os.environ}
    use_gpu = gpus_per_worker > 0
    resources = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if use_gpu else {})}
    return trainer_class()(
        train_fn,
        train_loop_config=config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints),
            callbacks=list(callbacks),
            worker_runtime_env={"env_vars": worker_env} if worker_env else None,
        ),
    )


# --------------------------------------------------------------------------- running


class TrainingFailed(RuntimeError):
    """A Ray Train run that failed; its text is one line (``failure_line``). The Ray Train
    error, with the workers' tracebacks, is its ``__cause__``."""


def failure_line(error: BaseException) -> str:
    """A Ray Train ``TrainingFailedError`` in one line: the controller's error, or each
    failed worker's (each distinct one once, after the ranks it stopped: the worker that
    crashed and the ones that lost it say different things); an error as its type's name
    and its text with the line breaks taken out."""
    from ray.train import ControllerError, WorkerGroupError

    def line(e: BaseException) -> str:
        text = " ".join(str(e).split())
        return f"{type(e).__name__}: {text}" if text else type(e).__name__

    if isinstance(error, ControllerError):
        return f"Ray Train's controller failed: {line(error.controller_failure)}"
    if isinstance(error, WorkerGroupError) and error.worker_failures:
        ranks: dict[str, list[int]] = {}
        for rank, e in sorted(error.worker_failures.items()):
            # Ray Train wraps a worker's exception in one whose text is the whole traceback
            ranks.setdefault(line(getattr(e, "_base_exc", e)), []).append(rank)
        return "; ".join(f"worker{'s' if len(r) > 1 else ''} {', '.join(map(str, r))} failed: {text}"
                         for text, r in ranks.items())
    return line(error)


SCRATCH_PREFIX = "bertflow-train-"


def scratch_folder(name: str) -> str:
    """The folder ``name`` in this node's temporary directory, created if need be."""
    folder = os.path.join(tempfile.gettempdir(), name)
    os.makedirs(folder, exist_ok=True)
    return folder


def in_scratch(train_fn: Callable[[dict], None], scratch: str) -> Callable[[dict], None]:
    """``train_fn`` run with every temporary file of the worker in the run's scratch folder
    on its node: checkpoint staging, the metrics mirror, copies of remote folders, and what
    the libraries make. A Ray Train worker process is started for one run and ends with it,
    so its ``tempfile.tempdir`` is the run's to set. Torch's compile cache is the exception:
    it stays where torch keeps it across runs, so that a rerun compiles from it."""

    @functools.wraps(train_fn)
    def staged(config: dict) -> None:
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        cache_dir()  # torch's choice, pinned in TORCHINDUCTOR_CACHE_DIR before the temporary directory moves
        tempfile.tempdir = scratch_folder(scratch)
        train_fn(config)

    return staged


def _remove_here(name: str) -> None:
    shutil.rmtree(os.path.join(tempfile.gettempdir(), name), ignore_errors=True)


def remove_scratch(name: str) -> None:
    """Remove the scratch folder ``name`` from this node and, on a cluster, from every node
    (a worker that Ray Train killed, a failed run's or one of a restarted group, left its
    files there: nothing in it ran to clean them up)."""
    _remove_here(name)
    if os.environ.get(LOCAL_RAY) == "1":
        return  # a local Ray's workers are this machine's processes: the folder was this one
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remove = ray.remote(num_cpus=0, max_retries=0)(_remove_here)
    refs = [remove.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(name)
            for node in ray.nodes() if node["Alive"]]
    _, pending = ray.wait(refs, num_returns=len(refs), timeout=60)
    if pending:
        log.warning("%d node(s) did not remove the training run's scratch folder %s in their temporary "
                    "directory within 60 s", len(pending), name)


def train(train_fn: Callable[[dict], None], config: dict[str, Any], *, output: str | None, name: str, **settings):
    """Run ``train_fn(config)`` on a ``torch_trainer(..., **settings)`` and return Ray
    Train's result. What the run stages on the nodes' disks is in its scratch folder (a
    ``bertflow-train-*`` folder of each node's temporary directory: the workers' temporary
    files, see ``in_scratch``, and with ``output=None`` Ray Train's own run folder), which
    is removed when the run ends, whatever the end. A failed run raises ``TrainingFailed``."""
    from ray.train import TrainingFailedError

    scratch = f"{SCRATCH_PREFIX}{uuid.uuid4().hex[:12]}"
    try:
        trainer = torch_trainer(in_scratch(train_fn, scratch), config, output=output or scratch_folder(scratch),
                                name=name, **settings)
        try:
            return trainer.fit()
        except TrainingFailedError as e:
            raise TrainingFailed(failure_line(e)) from e
    finally:
        try:
            remove_scratch(scratch)
        except Exception as e:  # noqa: BLE001 - the run's own outcome is what the caller must see
            log.warning("could not remove the training run's scratch folder %s: %s: %s", scratch,
                        type(e).__name__, e)
