"""The table of fine-tuning task types: a type's name and the module of this package that
holds its ``Config`` and implementation (see ``base``). A new type is its module plus its
line here; the ``finetune`` step's ``tasks:`` then take it, with its settings checked."""

from __future__ import annotations

from importlib import import_module
from typing import Annotated, Any, Union

from pydantic import Field

from .base import Split, Task, TaskConfig


def _config(module: str) -> type[TaskConfig]:
    config = import_module(f"{__name__}.{module}").Config
    if config.model_fields["type"].default != module:
        raise TypeError(f"{module}.Config: its type must be Literal[{module!r}] = {module!r}")
    return config


TASK_TYPES: dict[str, type[TaskConfig]] = {
    "classification": _config("classification"),
    "ner": _config("ner"),
    "qa": _config("qa"),
    "regression": _config("regression"),
    "multiple_choice": _config("multiple_choice"),
}

# Any task's settings, told apart by `type` (an unknown type is an error naming the known ones).
AnyTaskConfig = Annotated[Union[tuple(TASK_TYPES.values())], Field(discriminator="type")]


def task_type(name: str) -> type[TaskConfig]:
    try:
        return TASK_TYPES[name]
    except KeyError:
        raise ValueError(f"unknown task type {name!r}; the types are {sorted(TASK_TYPES)}") from None


def task_config(settings: dict[str, Any]) -> TaskConfig:
    """A task's validated settings, of the type its ``type`` names."""
    return task_type(settings.get("type")).model_validate(settings)


__all__ = ["TASK_TYPES", "AnyTaskConfig", "Split", "Task", "TaskConfig", "task_config", "task_type"]
