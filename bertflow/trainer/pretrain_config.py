"""The settings of one pretraining run: the one schema of the ``pretrain`` step kind's
``params:`` and of ``python -m bertflow.trainer.pretrain``'s flags (imports neither torch nor Ray).

Where the run reads and writes, and on how many workers (``bertflow.trainer.pretrain.PretrainRun``),
is not in here: a workflow's step context supplies it, or the command line's own flags.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from bertflow.contracts.config import Config, data_path, operational

SizeName = Literal["tiny", "mini", "small", "medium", "base", "large"]


class PretrainConfig(Config):
    model: SizeName | dict[str, Any] = Field(
        "tiny", description="a size of the BERT tables, or a transformers-style config (JSON on the command line)"
    )
    init: str | None = data_path(None, description="a model folder (or a pretrain step's output) to start from, "
                                                "e.g. phase 1's for phase 2; in a workflow, or inputs.init")
    max_seq_length: int | None = Field(None, ge=8, description="which length of an examples step that made several")
    steps: int = Field(1000, ge=1, description="optimizer steps")
    batch_size: int = Field(32, ge=1, description="global: sequences per optimizer step over all workers")
    lr: float = Field(1e-4, gt=0, description="peak learning rate")
    optimizer: Literal["adamw", "lamb"] = Field("adamw", description="the optimizer")
    warmup: float = Field(0.01, ge=0, description="warmup steps; below 1, a fraction of steps")
    weight_decay: float = Field(0.01, ge=0, description="decoupled weight decay (not on biases and LayerNorms)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step on each worker")
    max_grad_norm: float = Field(1.0, ge=0, description="gradient clipping norm; 0: no clipping")
    schedule: Literal["linear", "poly"] = Field("linear", description="the decay after warmup")
    seed: int = Field(0, description="seed of the initial weights, the data order, the masks and dropout")
    nsp: bool | None = Field(None, description="train the next-sentence head; default: as the examples step says, else on")
    max_predictions: int = Field(20, ge=1, description="dynamic masking: masked tokens per sequence at most")
    eval_examples: int = Field(2048, ge=1, description="held-out examples each evaluation reads (the first ones)")
    # When to evaluate changes no weight, and the final evaluation always runs.
    eval_every: int = operational(0, ge=0, description="held-out evaluation every N steps (0: at the end only)")
    checkpoint_every: int = operational(500, ge=1, description="a checkpoint every N steps (and at the end)")
    keep_checkpoints: int = operational(2, ge=1, description="checkpoints kept (the newest)")
    log_every: int = operational(10, ge=1, description="training metrics every N steps")
    max_failures: int = operational(2, ge=0, description="worker-group restarts from the last checkpoint")
    compile: bool = operational(False, description="torch.compile the model")

    def warmup_steps(self) -> int:
        return int(round(self.warmup * self.steps)) if self.warmup < 1 else int(self.warmup)

    @model_validator(mode="after")
    def _warmup_fits(self):
        if self.warmup_steps() > self.steps:
            raise ValueError(f"warmup ({self.warmup_steps()} steps) must not exceed steps ({self.steps})")
        return self


def check_batch(batch_size: int, workers: int, grad_accum: int) -> int:
    """The per-worker batch; the global batch must split evenly into workers x micro-steps."""
    if batch_size % (workers * grad_accum):
        raise ValueError(
            f"batch_size {batch_size} does not split into {workers} workers x {grad_accum} "
            f"grad_accum micro-steps; make it a multiple of {workers * grad_accum}"
        )
    return batch_size // workers
