"""The one checkpoint format of training, pretraining's and fine-tuning's alike.

A checkpoint is a folder ``step-NNNNNNN/`` (under a run's ``checkpoints/``) holding

    model.safetensors   the weights (tied tensors once, as transformers saves them)
    optimizer.pt        {"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()}
    state.json          what else resuming needs (step, data position, history, ...)
    checkpoint.json     the files and their sizes, written last: a folder without it, or
                        whose files do not match it, is not a checkpoint

Under Ray Train (pretraining), a worker writes one into a local temporary folder and
reports it; Ray uploads it to ``{output}/checkpoints/step-N`` and keeps the last K:

    with tempfile.TemporaryDirectory() as tmp:
        save(tmp, model, optimizer, schedule, {"step": step})
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp), checkpoint_dir_name=step_name(step))
    ...
    with ray_checkpoint_folder(ray.train.get_checkpoint(), rank) as folder:
        state = load(folder, model, optimizer, schedule)

Without Ray's checkpointing (a fine-tuning trial), the same folders under any fsspec URL:

    save_to(f"{output}/checkpoints", model, optimizer, schedule, {"step": step, "epoch": 1}, keep=1)
    state = load_latest(f"{output}/checkpoints", model, optimizer, schedule)   # None: none yet

No generator state is saved: both trainers call ``seed_step`` before each step's forward
passes, so the random draws follow from the step, which the checkpoint holds. The state
also records what the weights were trained on (``trained_on``): with the inputs,
parameters and seed, that is what their bytes depend on (docs/DESIGN.md, "Deterministic").
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from contextlib import contextmanager
from typing import Iterator

from bertflow.contracts.storage import fs_for, join, local_folder, url_of

CHECKPOINTS = "checkpoints"  # the folder of a run's checkpoints
MODEL, OPTIMIZER, STATE, MANIFEST = "model.safetensors", "optimizer.pt", "state.json", "checkpoint.json"
_STEP = re.compile(r"step-(\d+)$")

log = logging.getLogger(__name__)


def step_name(step: int) -> str:
    return f"step-{step:07d}"


def save(folder: str, model, optimizer, schedule, state: dict) -> None:
    """A checkpoint into the local ``folder``: weights, optimizer and schedule, ``state``
    (JSON; it must hold ``step``), and the manifest last."""
    import torch
    from safetensors.torch import save_file

    from bertflow.trainer.hf_folder import tied_keys

    tied = tied_keys(model)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k not in tied}
    save_file(weights, os.path.join(folder, MODEL), metadata={"format": "pt"})
    torch.save({"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()}, os.path.join(folder, OPTIMIZER))
    with open(os.path.join(folder, STATE), "w") as f:
        json.dump(state, f, indent=2, sort_keys=True)
    files = {n: os.path.getsize(os.path.join(folder, n)) for n in sorted(os.listdir(folder))}
    with open(os.path.join(folder, MANIFEST), "w") as f:
        json.dump({"step": state["step"], "files": files}, f, indent=2)


def load(folder: str, model, optimizer=None, schedule=None) -> dict:
    """Restore the checkpoint in the local ``folder`` into ``model`` (and ``optimizer``,
    ``schedule`` when given); returns its state.json. An incomplete folder, or one whose
    weights do not fit the model, is an error."""
    import torch
    from safetensors.torch import load_file

    from bertflow.trainer.hf_folder import tied_keys

    with open(os.path.join(folder, MANIFEST)) as f:
        manifest = json.load(f)
    for name, size in manifest["files"].items():
        path = os.path.join(folder, name)
        if not os.path.exists(path) or os.path.getsize(path) != size:
            raise RuntimeError(f"checkpoint {folder} is incomplete: {name} missing or truncated")
    result = model.load_state_dict(load_file(os.path.join(folder, MODEL)), strict=False)
    if result.unexpected_keys or set(result.missing_keys) - tied_keys(model):
        raise RuntimeError(f"checkpoint {folder} does not fit the model: {result}")
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    if optimizer is not None or schedule is not None:
        opt = torch.load(os.path.join(folder, OPTIMIZER), map_location="cpu", weights_only=False)
        if optimizer is not None:
            optimizer.load_state_dict(opt["optimizer"])
        if schedule is not None:
            schedule.load_state_dict(opt["schedule"])
    with open(os.path.join(folder, STATE)) as f:
        return json.load(f)


# --------------------------------------------------------------------------- randomness, and what trained


def seed_step(seed: int, step: int, rank: int) -> None:
    """Seed torch's generators (the CPU's and every GPU's) for training step ``step``
    (0-based) on worker ``rank``. Dropout draws from (seed, step, rank) alone: a run resumed
    at a step draws what the straight run drew there, and each worker draws its own masks."""
    import torch

    from bertflow.contracts.hashing import stable_hash

    torch.manual_seed(stable_hash(seed, "dropout", step, rank) % 2**63)


def device_name(device) -> str:
    """What a worker computes on, as far as the bits of its results go: the GPU's model, or
    the CPU's thread count (a matmul's or a sum's split across threads sets its rounding)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"{device.type}, {threads} thread{'s' if threads > 1 else ''}"


def trained_on(earlier: list[dict] | None, step: int, workers: int, device: str) -> list[dict]:
    """``state["trained_on"]`` of a run that starts (or resumes) at ``step`` on ``workers``
    workers, each computing on ``device`` (``device_name``), after the ``earlier`` runs that
    wrote the checkpoint it resumes from. A new entry only when the workers or the device
    changed, which is logged: the weights then end as no straight run's."""
    earlier = list(earlier or [])
    if earlier and (earlier[-1]["workers"], earlier[-1]["device"]) == (workers, device):
        return earlier
    if earlier:
        log.warning("resuming at step %d on %d worker(s) (%s), after %d (%s): the result will not have the bytes "
                    "of a straight run on either", step, workers, device, earlier[-1]["workers"], earlier[-1]["device"])
    return earlier + [{"from_step": step, "workers": workers, "device": device}]


# --------------------------------------------------------------------------- under Ray Train


@contextmanager
def ray_checkpoint_folder(checkpoint, rank: int) -> Iterator[str]:
    """A local folder with a Ray Train ``checkpoint``'s files: its own folder when it is on
    a local disk, else this worker's own copy (``Checkpoint.as_directory`` shares one
    download folder between the workers of a node, and they race on it)."""
    if checkpoint.filesystem.type_name == "local":
        yield checkpoint.path
        return
    with tempfile.TemporaryDirectory(prefix=f"bertflow-resume-rank{rank}-") as folder:
        yield checkpoint.to_directory(folder)


# --------------------------------------------------------------------------- on any storage


def _complete(fs, path: str) -> bool:
    manifest = f"{path}/{MANIFEST}"
    if not fs.exists(manifest):
        return False
    with fs.open(manifest, "r") as f:
        files = json.load(f)["files"]
    return all(fs.exists(f"{path}/{name}") and fs.size(f"{path}/{name}") == size for name, size in files.items())


def list_checkpoints(root: str) -> list[tuple[int, str]]:
    """(step, URL) of the complete checkpoints under ``root`` (a ``checkpoints/`` folder),
    oldest first."""
    fs, path = fs_for(root)
    if not fs.exists(path):
        return []
    found = []
    for p in fs.ls(path, detail=False):
        m = _STEP.search(p.rstrip("/"))
        if m and _complete(fs, p.rstrip("/")):
            found.append((int(m.group(1)), url_of(fs, p.rstrip("/"))))
    return sorted(found)


def latest(root: str) -> str | None:
    """The URL of the newest complete checkpoint under ``root``, or None."""
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def save_to(root: str, model, optimizer, schedule, state: dict, keep: int | None = None) -> str:
    """Write a checkpoint as ``{root}/step-N`` (any fsspec URL; the manifest goes last),
    then keep only the newest ``keep`` (all when None); returns its URL."""
    url = join(root, step_name(state["step"]))
    fs, path = fs_for(url)
    with tempfile.TemporaryDirectory(prefix="bertflow-ckpt-") as tmp:
        save(tmp, model, optimizer, schedule, state)
        if fs.exists(path):  # what a dead attempt left at this step
            fs.rm(path, recursive=True)
        fs.makedirs(path, exist_ok=True)
        for name in sorted(os.listdir(tmp)):
            if name != MANIFEST:
                fs.put_file(os.path.join(tmp, name), f"{path}/{name}")
        fs.put_file(os.path.join(tmp, MANIFEST), f"{path}/{MANIFEST}")
    if keep is not None:
        prune(root, keep)
    return url


def prune(root: str, keep: int) -> None:
    """Remove all but the newest ``keep`` complete checkpoints under ``root``."""
    for _, url in list_checkpoints(root)[:-keep] if keep > 0 else list_checkpoints(root):
        fs, path = fs_for(url)
        fs.rm(path, recursive=True)


def load_latest(root: str, model, optimizer=None, schedule=None) -> dict | None:
    """Restore the newest complete checkpoint under ``root``; its state.json, or None when
    there is none."""
    url = latest(root)
    if url is None:
        return None
    with local_folder(url) as folder:
        return load(folder, model, optimizer, schedule)
