"""The registry of step kinds.

The kinds bertflow ships register here. Tests may register their own with
``register``; the CLI only ever sees what is registered.
"""

from __future__ import annotations

from .base import Input, Params, Resources, StepContext, StepKind

# Every kind of DESIGN.md; those not yet built are reported plainly by `validate`.
PLANNED = ("wikipedia", "books", "vocab", "pretraining_data", "pretrain", "finetune")

KINDS: dict[str, type[StepKind]] = {}


def register(kind: type[StepKind]) -> type[StepKind]:
    KINDS[kind.name] = kind
    return kind


def _register_shipped() -> None:
    # Imported lazily so that `bertflow validate` does not pay for torch or Beam.
    import importlib

    for module in ("corpus", "vocab", "examples", "pretrain", "finetune"):
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{module}":
                raise


_register_shipped()

__all__ = ["KINDS", "PLANNED", "Input", "Params", "Resources", "StepContext", "StepKind", "register"]
