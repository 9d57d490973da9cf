"""The registry of step kinds: the table below names every kind bertflow ships.

A kind's module imports no engine at the top (Beam, torch and Ray load inside ``run``),
so ``bertflow validate`` stays quick. Tests may ``register`` kinds of their own.
"""

from __future__ import annotations

import importlib

from .base import Input, Params, Resources, StepContext, StepKind

KINDS: dict[str, type[StepKind]] = {}

# The modules whose kinds register themselves on import.
SHIPPED = ("corpus", "vocab", "examples", "pretrain", "finetune")


def register(kind: type[StepKind]) -> type[StepKind]:
    KINDS[kind.name] = kind
    return kind


for _module in SHIPPED:
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["KINDS", "Input", "Params", "Resources", "StepContext", "StepKind", "register"]
