"""Faults and clocks put into pretraining's Ray Train workers by the tests, not by the trainer.

A test swaps ``bertflow.trainer.pretrain.train_loop`` (what ``pretrain`` hands to Ray Train) for one
of these, bound with ``functools.partial``; in the worker it patches the real loop's
surroundings and then runs it:

    monkeypatch.setattr(bertflow.trainer.pretrain, "train_loop", partial(crash_after, steps=[3, 6]))
"""

from __future__ import annotations

import os
import time
import types

# The controller polls the workers every this many seconds (2 by default): a quicker
# failure detection, and a shorter wait before a crash.
HEALTH_CHECK_S = 0.5
os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = str(HEALTH_CHECK_S)


def crash_after(config: dict, steps: list[int]) -> None:
    """The loop, with a worker that exits hard (``os._exit``: no exception, no cleanup)
    right after reporting the checkpoint of each step in ``steps``, once per output folder
    (a marker file there), so the restarted worker group goes on."""
    import fsspec
    import ray.train

    import bertflow.trainer.pretrain

    report = ray.train.report
    output = config["run"]["output"].rstrip("/")

    def reporting(metrics, **kwargs):
        report(metrics, **kwargs)
        step = metrics.get("step")
        context = ray.train.get_context()
        rank, world = context.get_world_rank(), context.get_world_size()
        if step not in steps or rank != min(1, world - 1):
            return
        fs, marker = fsspec.core.url_to_fs(f"{output}/_crashed_after_{step}")
        if fs.exists(marker):
            return
        fs.pipe(marker, b"%d\n" % step)
        # let Ray Train record the checkpoint just reported before the worker dies
        time.sleep(2 * HEALTH_CHECK_S + 1)
        print(f"[test] worker {rank} exits hard after step {step}", flush=True)
        os._exit(1)

    ray.train.report = reporting
    bertflow.trainer.pretrain.train_loop(config)


class StepClock:
    """A ``time`` module whose ``perf_counter`` moves on only when told."""

    def __init__(self):
        self.now = 0.0
        self.time, self.strftime = time.time, time.strftime

    def perf_counter(self) -> float:
        return self.now


def step_clock(config: dict) -> None:
    """The loop, timed by a ``StepClock`` in which a step lasts one second and nothing
    else (logging, evaluation, checkpoints) takes any time."""
    import bertflow.trainer.pretrain

    clock = StepClock()
    train_step = bertflow.trainer.pretrain.train_step

    def timed_step(w, step, window):
        train_step(w, step, window)
        clock.now += 1.0

    bertflow.trainer.pretrain.time = clock
    bertflow.trainer.pretrain.train_step = timed_step
    bertflow.trainer.pretrain.train_loop(config)
