"""transformers model folders: read and write what ``from_pretrained`` / ``save_pretrained``
read and write, on any fsspec URL (local, s3://, gs://, memory://).

    from bertflow.trainer.hf_folder import load_config, load_pretrained, save_pretrained

    model = load_pretrained("runs/pretrain-abc/model", BertForPreTraining)   # or any BERT folder
    save_pretrained(model, "s3://bucket/out/model", extra_files={"vocab.txt": b"..."})

A folder holds ``config.json`` (``BertConfig.to_hf``) and the weights in
``model.safetensors`` (or, read only, a sharded index or ``pytorch_model.bin``); keys load
with or without the ``bert.`` prefix and with TF-era LayerNorm names.
"""

from __future__ import annotations

import io
import json
import logging
import posixpath
from dataclasses import dataclass, field
from typing import Mapping

import fsspec
import torch
from torch import nn

from bertflow.contracts.storage import write_bytes_atomic, write_json
from bertflow.trainer.model import BertConfig, BertForPreTraining

log = logging.getLogger(__name__)

ENCODER_PREFIXES = ("embeddings.", "encoder.", "pooler.")
# tensors transformers never needs in a file: buffers it rebuilds, tied copies
IGNORED_KEYS = ("embeddings.position_ids",)


@dataclass
class LoadReport:
    """What ``load_pretrained`` did with the checkpoint's tensors."""

    missing: list[str] = field(default_factory=list)  # the model's, not in the file: left at init
    unexpected: list[str] = field(default_factory=list)  # the file's, not in the model: ignored

    def __str__(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing (left at their initial values): "
                         + ", ".join(self.missing))
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected (ignored): " + ", ".join(self.unexpected))
        return "; ".join(parts) or "all tensors matched"


def _canonical_key(key: str) -> str:
    """A checkpoint key in bare-encoder form: no ``bert.`` prefix, TF-era LayerNorm names."""
    if key.startswith("bert."):
        key = key[len("bert."):]
    if key.endswith("LayerNorm.gamma"):
        key = key[: -len("gamma")] + "weight"
    elif key.endswith("LayerNorm.beta"):
        key = key[: -len("beta")] + "bias"
    return key


def _read_state_dict(fs, root: str) -> dict[str, torch.Tensor]:
    def read(name):
        with fs.open(posixpath.join(root, name), "rb") as f:
            return f.read()

    from safetensors.torch import load as load_safetensors

    if fs.exists(posixpath.join(root, "model.safetensors")):
        return load_safetensors(read("model.safetensors"))
    if fs.exists(posixpath.join(root, "model.safetensors.index.json")):
        index = json.loads(read("model.safetensors.index.json"))
        state = {}
        for shard in sorted(set(index["weight_map"].values())):
            state.update(load_safetensors(read(shard)))
        return state
    if fs.exists(posixpath.join(root, "pytorch_model.bin")):
        return torch.load(io.BytesIO(read("pytorch_model.bin")), map_location="cpu",
                          weights_only=True)
    raise FileNotFoundError(
        f"{root}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin; "
        "is this a transformers model folder?")


def load_config(folder: str) -> BertConfig:
    fs, root = fsspec.core.url_to_fs(folder)
    path = posixpath.join(root, "config.json")
    if not fs.exists(path):
        raise FileNotFoundError(f"{folder}: no config.json; is this a transformers model folder?")
    with fs.open(path, "r") as f:
        return BertConfig.from_hf(json.load(f))


def load_pretrained(folder: str, model_cls: type[nn.Module] = None, *, config: BertConfig | None = None,
                    strict_encoder: bool = True) -> nn.Module:
    """A model of class ``model_cls`` (``BertModel``, ``BertForPreTraining`` or any module
    built as ``model_cls(config)`` whose encoder is ``bert`` or at the top level) with the
    weights of a transformers-layout folder on any fsspec URL.

    Keys with or without the ``bert.`` prefix both load. The encoder must be complete
    (``strict_encoder``: a missing encoder tensor is an error, since it means the folder
    is not the BERT it claims to be); the model's other parts that the file lacks (e.g. the
    MLM/NSP heads when loading an encoder-only checkpoint, or a new fine-tuning head) stay
    at their initial values, and tensors the model has no place for are ignored; both are
    logged and kept in ``model.load_report``. Shapes must match exactly.
    """
    model_cls = model_cls or BertForPreTraining
    config = config or load_config(folder)
    fs, root = fsspec.core.url_to_fs(folder)
    source = {_canonical_key(k): v for k, v in _read_state_dict(fs, root).items()
              if _canonical_key(k) not in IGNORED_KEYS}

    model = model_cls(config)
    target = model.state_dict()
    encoder_prefix = "bert." if any(k.startswith("bert.") for k in target) else ""

    def source_key(model_key: str) -> str:
        if encoder_prefix and model_key.startswith(encoder_prefix):
            return model_key[len(encoder_prefix):]
        return model_key

    tied = tied_keys(model)
    to_load, report = {}, LoadReport()
    for key, tensor in target.items():
        src = source_key(key)
        if src in source:
            if source[src].shape != tensor.shape:
                raise ValueError(f"{folder}: {src} has shape {tuple(source[src].shape)}, "
                                 f"the model expects {tuple(tensor.shape)}")
            to_load[key] = source[src]
        elif key in tied:  # tied to a tensor loaded under its other name
            continue
        else:
            report.missing.append(key)
    used = {source_key(k) for k in to_load}
    report.unexpected = sorted(k for k in source if k not in used
                               and k not in {source_key(t) for t in tied})

    missing_encoder = [k for k in report.missing if source_key(k).startswith(ENCODER_PREFIXES)
                       and k.startswith(encoder_prefix)]
    if strict_encoder and missing_encoder:
        raise ValueError(f"{folder}: the checkpoint lacks encoder tensors {missing_encoder}")
    result = model.load_state_dict(to_load, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    model.load_report = report
    if report.missing or report.unexpected:
        log.warning("loading %s into %s: %s", folder, model_cls.__name__, report)
    return model


def tied_keys(model: nn.Module) -> set[str]:
    """State-dict keys that alias an earlier key's tensor (the decoder's weight and bias)."""
    seen, tied = {}, set()
    for key, tensor in model.state_dict(keep_vars=True).items():
        ptr = tensor.data_ptr()
        if ptr in seen:
            tied.add(key)
        else:
            seen[ptr] = key
    return tied


def save_pretrained(model: nn.Module, folder: str, config: BertConfig | None = None,
                    extra_files: Mapping[str, str | bytes] | None = None) -> None:
    """Write ``config.json`` (architectures = the model's class) and ``model.safetensors``
    into ``folder`` (any fsspec URL), plus ``extra_files`` (name -> text or bytes, e.g.
    vocab.txt, tokenizer.json). Each file is written under a temporary name and renamed;
    the weights go first and config.json last, so a folder with a config.json is whole.

    Tied tensors are saved once (the decoder's weight and bias are left out, as
    transformers does, and tied again on load)."""
    from safetensors.torch import save as save_safetensors

    config = config or model.config
    tied = tied_keys(model)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()
             if k not in tied}
    root = folder.rstrip("/")
    write_bytes_atomic(posixpath.join(root, "model.safetensors"), save_safetensors(state, metadata={"format": "pt"}))
    for name, content in (extra_files or {}).items():
        write_bytes_atomic(posixpath.join(root, name), content.encode() if isinstance(content, str) else bytes(content))
    write_json(posixpath.join(root, "config.json"), config.to_hf(architectures=[type(model).__name__]))
