"""``pretrain``: BERT pretraining on Ray Train (``trainer.pretrain``).

    pretrain:
      kind: pretrain
      inputs: {examples: examples, vocab: vocab}     # vocab: optional if examples holds one
      params: {model: tiny, steps: 300, batch_size: 32, optimizer: lamb, lr: 1e-3}
      resources: {workers: 2, cpus_per_worker: 1}
    phase2:
      kind: pretrain
      inputs: {examples: examples, vocab: vocab, init: pretrain}   # phase 1's model/
      params: {max_seq_length: 512, steps: 100, batch_size: 16, lr: 5e-4}

``max_seq_length`` picks one length of an examples step that made several
(``max_seq_length: [128, 512]`` there); it is not needed when it made one.

The step's output folder persists until the step succeeds, so a rerun after a crash
resumes from the last checkpoint in it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from . import register
from .base import Input, Params, StepContext, StepKind


class PretrainParams(Params):
    model: Literal["tiny", "mini", "small", "medium", "base", "large"] | dict = Field(
        "tiny", description="a size of the BERT tables, or a full transformers-style config dict"
    )
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(32, ge=1, description="global: sequences per optimizer step over all workers")
    lr: float = Field(1e-4, gt=0)
    optimizer: Literal["adamw", "lamb"] = "adamw"
    warmup: float = Field(0.01, ge=0, description="warmup steps; below 1, a fraction of steps")
    weight_decay: float = Field(0.01, ge=0)
    grad_accum: int = Field(1, ge=1)
    max_grad_norm: float = Field(1.0, ge=0, description="0: no clipping")
    schedule: Literal["linear", "poly"] = "linear"
    seed: int = 0
    nsp: bool | None = Field(None, description="train the NSP head; default: as the examples step says, else on")
    max_predictions: int = Field(20, ge=1, description="dynamic masking: masked tokens per sequence at most")
    eval_every: int = Field(0, ge=0, description="held-out eval every N steps (0: at the end only)")
    eval_examples: int = Field(2048, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(10, ge=1)
    max_failures: int = Field(2, ge=0, description="worker-group restarts from the last checkpoint")
    compile: bool = False
    init: str | None = Field(None, description="a model folder to start from (or use inputs.init)")
    max_seq_length: int | None = Field(None, ge=8, description="which length of an examples step that made several")

    @model_validator(mode="after")
    def _warmup_fits(self):
        warmup = round(self.warmup * self.steps) if self.warmup < 1 else self.warmup
        if warmup > self.steps:
            raise ValueError(f"warmup ({warmup:g} steps) must not exceed steps ({self.steps})")
        return self


@register
class Pretrain(StepKind):
    name = "pretrain"
    version = 1
    Params = PretrainParams
    inputs = {
        "examples": Input(),
        "vocab": Input(required=False),
        "init": Input(required=False),  # a pretrain step (its model/) or any model folder step
    }

    def run(self, ctx: StepContext) -> dict[str, float]:
        from trainer.pretrain import PretrainConfig, pretrain

        p: PretrainParams = ctx.params
        init = ctx.input("init") if ctx.inputs.get("init") else (ctx.resolve_path(p.init) if p.init else None)
        if ctx.inputs.get("init") and p.init:
            raise ValueError("give init either as an input or as a param, not both")
        from pipelines.examples import examples_folder

        cfg = PretrainConfig(
            examples=examples_folder(ctx.input("examples"), p.max_seq_length),
            output=ctx.output,
            vocab=ctx.input("vocab") if ctx.inputs.get("vocab") else None,
            init=init,
            workers=ctx.resources.workers,
            cpus_per_worker=ctx.resources.cpus_per_worker,
            gpus_per_worker=ctx.resources.gpus_per_worker,
            **p.model_dump(exclude={"init", "max_seq_length"}),
        )
        cfg.check()  # the batch split needs the worker count: fail before Ray starts
        ctx.ray_init()
        final = pretrain(cfg)
        ctx.log.info("pretrain: %s", {k: round(v, 4) for k, v in final.items()})
        return final
