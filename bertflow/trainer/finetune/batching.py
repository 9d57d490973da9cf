"""Encoded features into padded batches, whatever the rank of their token fields."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from bertflow.contracts.layout import IGNORE_INDEX

# the token fields every feature has, each a list of ids, or nested lists of them
TOKEN_FIELDS = ("input_ids", "token_type_ids")


def _is_row(value: Any) -> bool:
    """A list of scalars: the last axis, the one padding lengthens."""
    return not (value and isinstance(value[0], list))


def _longest(value: list) -> int:
    return len(value) if _is_row(value) else max(_longest(v) for v in value)


def _pad(value: list, width: int, pad: Any) -> list:
    if _is_row(value):
        return value + [pad] * (width - len(value))
    return [_pad(v, width, pad) for v in value]


def _mask(value: list, width: int) -> list:
    if _is_row(value):
        return [1] * len(value) + [0] * (width - len(value))
    return [_mask(v, width) for v in value]


def collate(features: Sequence[dict[str, Any]], pad_token_id: int = 0,
            label_fields: Sequence[str] = ("labels",)) -> dict[str, torch.Tensor]:
    """A batch of ``features``, padded to the longest sequence in it.

    Token fields may be one sequence per feature ([B, S]) or nested ([B, N, S]: N endings
    of a multiple-choice question, say); ``attention_mask`` has their shape and marks the
    real tokens. A label field that is a list per token is padded with IGNORE_INDEX to
    the same width; scalar labels (ints or floats) are stacked."""
    width = max(_longest(f["input_ids"]) for f in features)
    batch: dict[str, torch.Tensor] = {}
    for name in TOKEN_FIELDS:
        pad = pad_token_id if name == "input_ids" else 0
        batch[name] = torch.tensor([_pad(f[name], width, pad) for f in features])
    batch["attention_mask"] = torch.tensor([_mask(f["input_ids"], width) for f in features])
    for name in label_fields:
        if name in features[0]:
            values = [f[name] for f in features]
            if isinstance(values[0], list):
                values = [_pad(v, width, IGNORE_INDEX) for v in values]
            batch[name] = torch.tensor(values)
    return batch
