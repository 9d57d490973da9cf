"""Training scalars of rank 0: ``metrics.jsonl`` and TensorBoard events in an output folder.

    log = MetricsLog("runs/pretrain-abc", start_step=0)
    log.write(100, {"loss": 7.1}, tag=lambda name: f"train/{name}")
    log.close()

One JSON object per line, ``{"step": ..., name: value}``; the same scalars go to
TensorBoard (``tensorboard/``) under the tags ``tag`` gives them. Both the pretraining loop
and a fine-tuning trial write this way.

The files are written in place when the folder is local; else into a local mirror that
``sync`` uploads (at every checkpoint and at the end), so a remote folder never holds a
half-written file. On resume, lines and events after the resumed step are dropped.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import tempfile
from typing import Callable

import fsspec

from bertflow.contracts.storage import is_local

JSONL = "metrics.jsonl"
TENSORBOARD = "tensorboard"


class MetricsLog:
    def __init__(self, output: str, start_step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.output = output
        self.local = is_local(output)
        fs, path = fsspec.core.url_to_fs(output)
        self.dir = path if self.local else tempfile.mkdtemp(prefix="bertflow-metrics-")
        os.makedirs(self.dir, exist_ok=True)
        if not self.local:  # bring back what an earlier attempt wrote
            for name in (JSONL, TENSORBOARD):
                if fs.exists(posixpath.join(path, name)):
                    fs.get(posixpath.join(path, name), os.path.join(self.dir, name), recursive=True)
        self.jsonl = os.path.join(self.dir, JSONL)
        kept = []
        if os.path.exists(self.jsonl):
            with open(self.jsonl) as f:
                kept = [line for line in f if line.strip() and json.loads(line)["step"] <= start_step]
        with open(self.jsonl, "w") as f:
            f.writelines(kept)
        self.tb = SummaryWriter(os.path.join(self.dir, TENSORBOARD), purge_step=start_step + 1)

    def write(self, step: int, scalars: dict[str, float], tag: Callable[[str], str] = str, **fields) -> None:
        """One line: ``step``, ``fields`` (not plotted: an epoch, say) and ``scalars``; each
        scalar also to TensorBoard as ``tag(name)``."""
        with open(self.jsonl, "a") as f:
            f.write(json.dumps({"step": step, **fields, **scalars}, sort_keys=True) + "\n")
        for name, value in scalars.items():
            self.tb.add_scalar(tag(name), value, step)

    def sync(self) -> None:
        self.tb.flush()
        if not self.local:
            fs, path = fsspec.core.url_to_fs(self.output)
            fs.makedirs(path, exist_ok=True)
            fs.put(self.jsonl, posixpath.join(path, JSONL))
            fs.put(os.path.join(self.dir, TENSORBOARD) + "/", posixpath.join(path, TENSORBOARD), recursive=True)

    def close(self) -> None:
        self.sync()
        self.tb.close()
        if not self.local:
            shutil.rmtree(self.dir, ignore_errors=True)
