"""The base of every job's schema, and the command line made from it.

A job (a Beam pipeline, a trainer) owns one pydantic model of its settings. The step
kind uses that model as its ``params:`` schema, and the job's ``python -m`` command line
is generated from it (``add_arguments`` / ``parse``), so the settings, their defaults
and their checks are written once.

Fields marked ``operational`` (how the work is done or watched, never what it makes:
logging, checkpoint cadence, retries, work-unit sizes) are left out of a step's hash.
Fields marked ``data_path`` name data from outside the workflow (a dump, a folder of
books, a task's train file, a model to start from): the runner puts what is there, not
only the path, into the step's hash (``bertflow.infra.inputs``).

    class TrainConfig(Config):
        steps: int = Field(1000, ge=1)
        log_every: int = operational(10, ge=1)

    cfg = parse(TrainConfig, argv, parser)      # --steps 300 --log-every 5
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Config(BaseModel):
    """A job's settings: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


OPERATIONAL = "operational"


def operational(default: Any = ..., **kwargs) -> Any:
    """A ``Field`` that does not change what a step writes (left out of its hash)."""
    return Field(default, json_schema_extra={OPERATIONAL: True}, **kwargs)


def is_operational(field) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get(OPERATIONAL))


DATA_PATH = "data_path"


def data_path(default: Any = ..., **kwargs) -> Any:
    """A ``Field`` naming input data (a file, glob, folder or URL) whose contents the
    step's hash covers."""
    return Field(default, json_schema_extra={DATA_PATH: True}, **kwargs)


def data_paths(model: BaseModel, prefix: str = "") -> dict[str, str]:
    """``{key path: value}`` of every ``data_path`` field that is set, nested models' and
    lists of models' too: ``{"tasks.0.train": "data/finetune/ner/train.conll"}``."""
    found: dict[str, str] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get(DATA_PATH):
            # One path, or several (a list, or named ones: MNLI's two dev sets).
            items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else None
            if items is None:
                if value is not None:
                    found[prefix + name] = value
            else:
                found.update({f"{prefix}{name}.{k}": v for k, v in items if v is not None})
        elif isinstance(value, BaseModel):
            found.update(data_paths(value, f"{prefix}{name}."))
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    found.update(data_paths(item, f"{prefix}{name}.{i}."))
    return found


def hashed(model: BaseModel) -> dict:
    """``model`` as JSON, without its operational fields (nested models' too): what a
    step's hash covers."""

    def strip(value: Any, annotation_model: Any) -> Any:
        if isinstance(annotation_model, BaseModel):
            return {
                name: strip(value[name], getattr(annotation_model, name))
                for name, field in type(annotation_model).model_fields.items()
                if not is_operational(field)
            }
        if isinstance(annotation_model, list):
            return [strip(v, m) for v, m in zip(value, annotation_model)]
        if isinstance(annotation_model, dict):
            return {k: strip(value[k], annotation_model[k]) for k in value}
        return value

    return strip(model.model_dump(mode="json"), model)


# --- the command line ------------------------------------------------------------------


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _strip_none(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


def _argument(annotation: Any) -> dict[str, Any]:
    """argparse keywords for a field of type ``annotation``."""
    annotation = _strip_none(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if annotation in (int, float, str):
        return {"type": annotation}
    if origin is Literal:
        return {"choices": list(args), "type": type(args[0])}
    if origin is typing.Annotated:
        return _argument(args[0])
    if origin is list:
        return {**_argument(args[0]), "nargs": "+"}
    if origin in (typing.Union, types.UnionType):
        # A scalar or a list of it (`int | list[int]`): one or more values on the command line.
        kinds = [_argument(a) for a in args if a is not type(None)]
        lists = [k for k in kinds if k.get("nargs")]
        if lists:
            return {**lists[0], "_one_or_more": True}
    return {"type": json_or_text}


def json_or_text(text: str) -> Any:
    """A value given as JSON (``'{"hidden_size": 64}'``), or else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def add_arguments(parser: argparse.ArgumentParser, model: type[BaseModel], skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per field of ``model`` (bar ``skip``), with its description and
    default as help. Unset flags are left out of the namespace, so the model's own
    defaults apply."""
    group = parser.add_argument_group(f"{model.__name__} settings")
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        kwargs = _argument(field.annotation)
        kwargs.pop("_one_or_more", None)
        help_ = field.description or ""
        if not field.is_required():
            default = field.get_default(call_default_factory=True)
            help_ = f"{help_} (default: {default!r})" if help_ else f"default: {default!r}"
        group.add_argument(_flag(name), dest=name, default=argparse.SUPPRESS, required=field.is_required(),
                           help=help_, **kwargs)


def parse(model: type[BaseModel], namespace: argparse.Namespace | dict, parser: argparse.ArgumentParser,
          skip: tuple[str, ...] = ()):
    """``model`` from the parsed flags (the fields of ``model`` only, bar ``skip``); a bad
    value exits through ``parser.error`` naming the flag."""
    given = vars(namespace) if isinstance(namespace, argparse.Namespace) else dict(namespace)
    values = {}
    for name, field in model.model_fields.items():
        if name in given and name not in skip:
            value = given[name]
            # `--max-seq-length 128` for a field that takes one length or a list of them.
            if isinstance(value, list) and len(value) == 1 and _argument(field.annotation).get("_one_or_more"):
                value = value[0]
            values[name] = value
    try:
        return model.model_validate(values)
    except ValidationError as e:
        parser.error("; ".join(f"{_flag(str(err['loc'][0])) if err['loc'] else ''}: {err['msg']}" for err in e.errors()))
