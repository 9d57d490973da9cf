"""The contract between the runner and a step kind.

A kind is a class with a name, a code version (bump it when the kind's output changes
meaning: it is part of every output hash), a pydantic ``Params`` model (the kind's own
schema for ``params:`` in workflows.yaml), the inputs it reads, and ``run``.

``run`` writes data files into ``ctx.output`` (an fsspec URL of the step's folder) and
returns counters (a flat ``{name: number}``). The folder may hold what an earlier, dead
attempt left (no manifest was written for it): overwrite it, or resume from it. The runner writes ``_SUCCESS.json`` after
``run`` returns; a kind never writes it. The real work lives in ``bertflow/pipelines/`` or
``bertflow/trainer/``; a kind only maps the spec onto it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from bertflow.contracts import storage
from bertflow.contracts.config import Config


Params = Config  # a kind's parameters are its job's schema: unknown keys are errors


@dataclass(frozen=True)
class Input:
    """One named input of a kind: ``many`` takes a list of steps, else exactly one."""

    many: bool = False
    required: bool = True


@dataclass
class Resources:
    workers: int = 1
    cpus_per_worker: float = 1
    gpus_per_worker: float = 0


@dataclass
class StepContext:
    step: str  # the step's name in the workflow
    output: str  # fsspec URL of the step's output folder
    inputs: dict[str, list[str]]  # input name -> output URLs of the steps it reads
    params: Any  # the kind's validated Params
    resources: Resources
    base_dir: Path  # folder of the workflow file: relative data paths resolve against it
    # The engines' settings from the spec: a Beam kind passes `beam` to
    # pipelines.local_runner.pipeline_options, a Ray kind `ray` to trainer.launch.connect_ray.
    beam: dict[str, Any] = field(default_factory=dict)  # runner, options, job_name
    ray: dict[str, Any] = field(default_factory=dict)  # address, num_cpus, num_gpus
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("bertflow.step"))

    def input(self, name: str) -> str:
        """The one URL of a single-step input."""
        (url,) = self.inputs[name]
        return url

    def resolve_path(self, path: str) -> str:
        """A data path from the spec: URLs and absolute paths as given, relative ones
        against the workflow file's folder."""
        return storage.absolute(path, self.base_dir)


class StepKind:
    name: ClassVar[str]
    version: ClassVar[int] = 1
    Params: ClassVar[type[Params]] = Params
    inputs: ClassVar[dict[str, Input]] = {}

    @classmethod
    def check(cls, params: Params, inputs: set[str]) -> list[str]:
        """Errors of params and inputs together that neither shows alone (validated
        ``params``, the names of the step's ``inputs``): ``key.path: message`` lines,
        relative to the step (``params.init: ...``). ``bertflow validate`` reports them."""
        return []

    @classmethod
    def check_data(cls, params: Params, resolve: Callable[[str], str], remote: bool) -> list[str]:
        """Errors in what the step's data paths hold that would stop its run, found by
        reading a bounded head of each file (a header, the first records), never a whole
        dump: ``key.path: message`` lines as ``check``'s. ``resolve`` makes a data path
        absolute (against the workflow file's folder); ``remote``: read files in stores too
        (``run``, before any engine starts), else local files only (``validate``)."""
        return []

    def run(self, ctx: StepContext) -> dict[str, float]:
        raise NotImplementedError

    @classmethod
    def summary(cls, output: str) -> str | None:
        """What `bertflow run` prints about a done step's output at the end (a table of
        results, say); None for nothing."""
        return None

    @classmethod
    def progress(cls, output: str, params: dict) -> dict | None:
        """A running step's progress from what it has written so far (``params``: its
        parameters as JSON): ``{"n", "total" (None when unknown), "unit", "text"}``, or None
        while there is nothing to show. The console's bars and ``bertflow status`` read it.
        By default the files written under the output folder (a Beam job's shards and
        spill runs: a local Beam job shows no metrics until it ends)."""
        return files_written(output)

    @classmethod
    def artifacts(cls, output: str) -> dict[str, list[str]]:
        """What the end of `bertflow run` points to in a done step's folder: ``models``
        (transformers folders) and ``tensorboard`` (log folders)."""
        return {}


def files_written(output: str) -> dict | None:
    files = storage.list_files(output)
    # the job's files and its spill runs, not the runner's (_status.json, _lease.json, _logs/)
    found = {k: v for k, v in files.items() if not k.startswith("_") or k.startswith("_spill/")}
    if not found:
        return None
    return {"n": len(found), "total": None, "unit": "files", "text": f"{sum(found.values()) / 1e6:.1f} MB written"}
