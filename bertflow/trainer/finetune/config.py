"""The settings of a fine-tuning run (the ``finetune`` step's ``params``) and of one trial.

``FinetuneConfig`` is the one schema: the step kind uses it as its ``params:`` model, and
``python -m bertflow.trainer.finetune`` makes its command line from it. Each task's settings are
its type's ``Config`` (``bertflow.trainer.finetune.tasks``); the ``grid`` sweeps any of them.
No torch here: ``bertflow validate`` checks a spec with this module alone.
"""

from __future__ import annotations

import itertools
import re
from typing import Any, Callable, Iterator

from pydantic import Field, ValidationError, model_validator

from bertflow.contracts.config import Config, data_path, operational

from .tasks import AnyTaskConfig, TaskConfig


def with_setting(task: TaskConfig, setting: dict[str, Any]) -> TaskConfig:
    """``task`` with the values of ``setting`` that are its settings, validated."""
    own = {k: v for k, v in setting.items() if k in type(task).model_fields}
    return type(task).model_validate({**task.model_dump(), **own})


def grid_settings(task: TaskConfig, grid: dict[str, list[Any]]) -> Iterator[dict[str, Any]]:
    """Every combination of the grid values of ``task``'s settings (keys sorted; ``seed``
    is not a setting but the seeds, see ``seeds_of``); one empty setting without them."""
    keys = sorted(k for k in grid if k in type(task).settings() and k != "seed")
    for values in itertools.product(*(grid[k] for k in keys)):
        yield dict(zip(keys, values))


def seeds_of(task: TaskConfig, grid: dict[str, list[Any]]) -> tuple[list[int], bool]:
    """The seeds each of ``task``'s settings trains with (its ``seeds``, else the grid's
    ``seed`` values, else its one seed), and whether they are swept (the trial folders
    then name their seed)."""
    if task.seeds:
        return list(task.seeds), True
    if "seed" in grid:
        return list(grid["seed"]), True
    return [task.seed], False


def setting_id(setting: dict[str, Any]) -> str:
    """A readable, filesystem- and URL-safe folder name: ``lr-5e-05_seed-1``."""
    if not setting:
        return "default"
    parts = [f"{k}-{v}" for k, v in sorted(setting.items())]
    return re.sub(r"[^A-Za-z0-9._-]+", "+", "_".join(parts))


class FinetuneConfig(Config):
    init: str | None = data_path(None, description="a transformers model folder to start from, when the step has no `model` input")
    tasks: list[AnyTaskConfig] = Field(min_length=1)
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="setting -> values, crossed")
    seed: int = Field(42, description="the seed of tasks that set none")
    max_concurrent_trials: int | None = operational(None, ge=1, description="default: as many as the cluster holds")
    # Only the table shows them: a done step's table keeps the ones it was written with.
    references: dict[str, float] = operational(
        {}, description="task -> a published dev score in percent of the task's metric (the "
                                          "paper's, say), shown beside ours as the difference")
    # What the trials make does not depend on it: switched on after a failed run, the rerun
    # accepts that run's trials in the same folder.
    allow_failed_trials: bool = operational(
        False, description="the step is done with some trials failed (the table shows them); else it fails "
                           "after writing results.md, and a rerun retries the failed trials")

    @model_validator(mode="after")
    def _check(self):
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        unknown = sorted(set(self.references) - set(names))
        if unknown:
            raise ValueError(f"references: {unknown} are not tasks of this step (its tasks: {names})")
        settings = set().union(*(type(t).settings() for t in self.tasks))
        for key, values in self.grid.items():
            if key not in settings:
                raise ValueError(f"grid.{key}: not a task setting; settings are {sorted(settings)}")
            if not values:
                raise ValueError(f"grid.{key}: needs at least one value")
        # Every setting a trial will train with is checked here, so that a bad value fails now,
        # not in a Ray worker; the grid keeps the values as the settings' types (YAML reads
        # `1e-4`, without a dot, as a string).
        coerced = {key: list(values) for key, values in self.grid.items()}
        for task in self.tasks:
            keys = sorted(k for k in self.grid if k in type(task).settings())
            for index in itertools.product(*(range(len(self.grid[k])) for k in keys)):
                setting = {k: self.grid[k][i] for k, i in zip(keys, index)}
                try:
                    trial = with_setting(task, setting)
                except ValidationError as e:
                    raise ValueError(_grid_error(task, setting, e)) from None
                for k, i in zip(keys, index):
                    coerced[k][i] = getattr(trial, k)
        self.grid = coerced
        return self

    def resolved(self, resolve: Callable[[str], str] = lambda path: path) -> list[TaskConfig]:
        """The tasks as trials run them: data paths through ``resolve``, the step's seed
        where a task sets none."""
        tasks = []
        for task in self.tasks:
            paths = {split: resolve(getattr(task, split)) for split in ("train", "test") if getattr(task, split) is not None}
            dev = task.dev_sets()
            paths["dev"] = resolve(task.dev) if isinstance(task.dev, str) else {k: resolve(v) for k, v in dev.items()}
            seed = {"seed": self.seed} if task.seed is None else {}
            tasks.append(task.model_copy(update={**paths, **seed}))
        return tasks


def _grid_error(task: TaskConfig, setting: dict[str, Any], error: ValidationError) -> str:
    messages = []
    for err in error.errors():
        field = err["loc"][0] if err["loc"] else None
        where = f"grid.{field}: value {setting[field]!r}" if field in setting else f"grid setting {setting}"
        messages.append(f"{where} for task {task.name!r}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(messages)


class TrialConfig(Config):
    """One trial: a task at one grid setting and one seed, where it starts from and writes."""

    task: AnyTaskConfig
    setting: dict[str, Any] = Field(default_factory=dict, description="the grid values of this trial")
    setting_id: str = "default"
    trial_id: str | None = Field(None, description="its folder's name: the setting's id, and its seed's when "
                                 "seeds are swept (default: setting_id)")
    init: str  # a transformers model folder (any fsspec URL)
    output: str  # the trial's folder: trials/<task>/<setting_id>
    workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1, gt=0)
    gpus_per_worker: float = Field(0, ge=0)

    @model_validator(mode="after")
    def _seeded(self):
        if self.task.seed is None:
            raise ValueError(f"trial {self.task.name}/{self.setting_id}: the task needs a seed "
                             "(FinetuneConfig.resolved gives it the step's)")
        if self.trial_id is None:
            self.trial_id = self.setting_id
        return self
