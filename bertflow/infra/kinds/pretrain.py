"""``pretrain``: BERT pretraining on Ray Train (``bertflow.trainer.pretrain``).

    pretrain:
      kind: pretrain
      inputs: {examples: examples, vocab: vocab}     # vocab: optional if examples holds one
      params: {model: tiny, steps: 300, batch_size: 32, optimizer: lamb, lr: 1e-3}
      resources: {workers: 2, cpus_per_worker: 1}
    phase2:
      kind: pretrain
      inputs: {examples: examples, vocab: vocab, init: pretrain}   # phase 1's model/
      params: {max_seq_length: 512, steps: 100, batch_size: 16, lr: 5e-4}

``params`` is ``bertflow.trainer.pretrain_config.PretrainConfig``; ``max_seq_length`` picks one
length of an examples step that made several. The step's output folder persists until
the step succeeds, so a rerun after a crash resumes from the last checkpoint in it.
"""

from __future__ import annotations

import json

from bertflow.contracts import storage
from bertflow.contracts.layout import examples_folder
from bertflow.trainer.pretrain_config import PretrainConfig

from . import register
from .base import Input, StepContext, StepKind

METRICS = "metrics.jsonl"  # trainer.metrics_log.JSONL (infra reads the trainer's files, never imports it)


def last_metrics(output: str, params: dict) -> tuple[dict, dict] | None:
    """A pretraining step's progress from its ``metrics.jsonl``: ``({"step", "total",
    "eta_s"}, the last line)`` (the ETA from its throughput), or None before its first line."""
    total, url = params.get("steps"), storage.join(output, METRICS)
    if not isinstance(total, int) or not storage.exists(url):
        return None
    last = None
    for line in storage.read_text(url).splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line still being written
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            last = record
    if last is None:
        return None
    out = {"step": last["step"], "total": total}
    rate, batch = last.get("sequences_per_s"), params.get("batch_size")
    if rate and batch:
        out["eta_s"] = round((total - last["step"]) * batch / rate, 1)
    return out, last


@register
class Pretrain(StepKind):
    name = "pretrain"
    version = 2  # 2: rates over training steps alone; no eval metrics without an eval split
    Params = PretrainConfig
    inputs = {
        "examples": Input(),
        "vocab": Input(required=False),
        "init": Input(required=False),  # a pretrain step (its model/) or any model folder step
    }

    @classmethod
    def progress(cls, output: str, params: dict) -> dict | None:
        found = last_metrics(output, params)
        if found is None:
            return None
        p, last = found
        parts = [f"{label} {last[key]:{fmt}}" for key, label, fmt in
                 (("loss", "loss", ".3f"), ("eval_mlm_acc", "eval mlm acc", ".3f"), ("tokens_per_s", "tok/s", ".0f"))
                 if isinstance(last.get(key), (int, float))]
        if "eta_s" in p:
            parts.append(f"ETA {p['eta_s'] / 60:.1f} min")
        return {"n": p["step"], "total": p["total"], "unit": "step", "text": " | ".join(parts)}

    @classmethod
    def artifacts(cls, output: str) -> dict[str, list[str]]:
        return {"models": [storage.join(output, "model")], "tensorboard": [storage.join(output, "tensorboard")]}

    def run(self, ctx: StepContext) -> dict[str, float]:
        from bertflow.trainer.launch import connect_ray
        from bertflow.trainer.pretrain import PretrainRun, check_run, pretrain

        p: PretrainConfig = ctx.params
        if ctx.inputs.get("init") and p.init:
            raise ValueError("give init either as an input or as a param, not both")
        init = ctx.input("init") if ctx.inputs.get("init") else (ctx.resolve_path(p.init) if p.init else None)
        run = PretrainRun(
            examples=examples_folder(ctx.input("examples"), p.max_seq_length),
            output=ctx.output,
            vocab=ctx.input("vocab") if ctx.inputs.get("vocab") else None,
            init=init,
            workers=ctx.resources.workers,
            cpus_per_worker=ctx.resources.cpus_per_worker,
            gpus_per_worker=ctx.resources.gpus_per_worker,
        )
        check_run(p, run)  # the batch split needs the worker count: fail before Ray starts
        connect_ray(**ctx.ray)
        final = pretrain(p, run)
        ctx.log.info("pretrain: %s", {k: round(v, 4) for k, v in final.items()})
        return final
