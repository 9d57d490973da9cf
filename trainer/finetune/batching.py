"""Reading task files through fsspec, and turning encoded features into padded batches."""

from __future__ import annotations

import io
from typing import Any, Iterator, Sequence

import fsspec
import torch

from .heads import IGNORE_INDEX

# the token fields every feature has; "labels" (per token) is padded with IGNORE_INDEX
TOKEN_FIELDS = ("input_ids", "token_type_ids")


def read_text(url: str) -> str:
    """A whole text file from any fsspec URL (compression from the name: .gz, .bz2, ...)."""
    with fsspec.open(url, "rb", compression="infer") as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{url}: not UTF-8 text ({e}); re-encode the file as UTF-8") from None


def text_stream(url: str) -> io.StringIO:
    return io.StringIO(read_text(url), newline="")


def collate(features: Sequence[dict[str, Any]], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad to the longest sequence of the batch. ``attention_mask`` marks real tokens;
    list-valued ``labels`` are padded with -100; scalar fields are stacked."""
    width = max(len(f["input_ids"]) for f in features)
    batch: dict[str, torch.Tensor] = {}
    for name in TOKEN_FIELDS:
        pad = pad_token_id if name == "input_ids" else 0
        batch[name] = torch.tensor([f[name] + [pad] * (width - len(f[name])) for f in features])
    batch["attention_mask"] = torch.tensor([[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"]))
                                            for f in features])
    for name in ("labels", "start_positions", "end_positions"):
        if name in features[0]:
            values = [f[name] for f in features]
            if isinstance(values[0], list):
                values = [v + [IGNORE_INDEX] * (width - len(v)) for v in values]
            batch[name] = torch.tensor(values)
    return batch


def eval_batches(features: Sequence[dict[str, Any]], batch_size: int, pad_token_id: int = 0
                 ) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """``(offset of the first feature, batch)`` in the order of ``features``."""
    for start in range(0, len(features), batch_size):
        yield start, collate(features[start:start + batch_size], pad_token_id)


def model_inputs(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: batch[k].to(device) for k in ("input_ids", "token_type_ids", "attention_mask")}
