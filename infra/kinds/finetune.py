"""The ``finetune`` step kind: a grid of fine-tuning trials on a BERT, as parallel Ray trials.

```yaml
finetune:
  kind: finetune
  inputs: {model: pretrain}           # or params.init: a transformers model folder
  params:
    tasks:
      - {name: sentiment, type: classification, train: data/finetune/sentiment/train.csv,
         dev: data/finetune/sentiment/dev.csv, max_seq_length: 64, epochs: 2}
      - {name: wnut, type: ner, train: data/finetune/ner/train.conll, dev: data/finetune/ner/dev.conll}
      - {name: squad, type: qa, train: data/finetune/qa/squad-sample.json,
         dev: data/finetune/qa/squad-sample.json, max_seq_length: 192, doc_stride: 64}
    grid: {lr: [5e-5, 1e-4]}
  resources: {workers: 1, cpus_per_worker: 1}   # per trial
```

Writes ``trials/<task>/<setting>/`` (model, predictions, metrics, checkpoint, and the
training scalars in ``metrics.jsonl`` and ``tensorboard/``: loss and lr every
``log_every_steps``, dev metrics every epoch, or at the end with ``eval_every_epoch: false``),
``results.json`` and ``results.md``. A retried step reuses its finished trials.
"""

from __future__ import annotations

import posixpath
import shutil
import tempfile
from typing import Annotated, Any, Literal, Union

from pydantic import Field, ValidationError, model_validator

from . import register
from .base import Input, Params, StepContext, StepKind


class _Task(Params):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$", description="folder-safe task name")
    train: str
    dev: str
    test: str | None = None
    max_seq_length: int = Field(default=128, ge=8, le=512)
    epochs: int = Field(default=3, ge=1)
    batch_size: int = Field(default=32, ge=1)
    eval_batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=5e-5, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_ratio: float = Field(default=0.1, ge=0, le=1)
    optimizer: Literal["adamw", "lamb"] = "adamw"
    max_grad_norm: float = Field(default=1.0, ge=0)
    classifier_dropout: float | None = Field(default=None, ge=0, lt=1)
    seed: int | None = None  # default: the step's seed
    max_train_examples: int | None = Field(default=None, ge=1)
    max_eval_examples: int | None = Field(default=None, ge=1)
    eval_every_epoch: bool = Field(default=True, description="dev metrics after every epoch, else after the last")
    log_every_steps: int = Field(default=50, ge=1, description="train loss and lr logged every N steps")


class ClassificationTask(_Task):
    type: Literal["classification"]
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    id_column: str | None = None


class NerTask(_Task):
    type: Literal["ner"]


class QaTask(_Task):
    type: Literal["qa"]
    max_seq_length: int = Field(default=384, ge=8, le=512)
    doc_stride: int = Field(default=128, ge=1)
    max_query_length: int = Field(default=64, ge=1)
    max_answer_length: int = Field(default=30, ge=1)
    n_best_size: int = Field(default=20, ge=1)
    version_2_with_negative: bool = False
    null_score_diff_threshold: float = 0.0

    @model_validator(mode="after")
    def _windows_move(self):
        if self.max_seq_length - self.max_query_length - 3 <= self.doc_stride:
            raise ValueError(
                f"max_seq_length ({self.max_seq_length}) - max_query_length ({self.max_query_length}) - 3 "
                f"must be > doc_stride ({self.doc_stride}) so that windows move forward"
            )
        return self


Task = Annotated[Union[ClassificationTask, NerTask, QaTask], Field(discriminator="type")]


class FinetuneParams(Params):
    init: str | None = Field(default=None, description="a transformers model folder, when no `model` input")
    tasks: list[Task] = Field(min_length=1)
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="setting -> values, crossed")
    seed: int = 42
    max_concurrent_trials: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check(self):
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        settings = set().union(*(type(t).model_fields for t in self.tasks)) - {"name", "type", "train", "dev", "test"}
        for key, values in self.grid.items():
            if key not in settings:
                raise ValueError(f"grid.{key}: not a task setting; settings are {sorted(settings)}")
            if not values:
                raise ValueError(f"grid.{key}: needs at least one value")
            coerced = list(values)
            for t in self.tasks:  # each value must be valid for every task that has the setting
                if key in type(t).model_fields:
                    for i, v in enumerate(values):
                        try:
                            coerced[i] = getattr(type(t).model_validate({**t.model_dump(), key: v}), key)
                        except ValidationError as e:
                            msgs = "; ".join(err["msg"] for err in e.errors())
                            raise ValueError(f"grid.{key}: value {v!r} for task {t.name!r}: {msgs}") from None
            # As the setting's type: YAML reads `1e-4` (no dot) as a string.
            self.grid[key] = coerced
        return self


@register
class Finetune(StepKind):
    name = "finetune"
    version = 1
    Params = FinetuneParams
    inputs = {"model": Input(required=False)}

    @classmethod
    def summary(cls, output: str) -> str | None:
        import fsspec

        with fsspec.open(f"{output}/results.md", "r") as f:
            return f.read()

    def run(self, ctx: StepContext) -> dict[str, float]:
        from trainer.finetune.config import TaskConfig
        from trainer.finetune.fanout import finetune

        p: FinetuneParams = ctx.params
        if ctx.inputs.get("model"):
            init = posixpath.join(ctx.input("model").rstrip("/"), "model")
        elif p.init:
            init = ctx.resolve_path(p.init)
        else:
            raise ValueError("finetune needs a model: an input `model` (a pretrain step) or params.init (a folder)")
        tasks = []
        for t in p.tasks:
            d = t.model_dump()
            d["seed"] = p.seed if d["seed"] is None else d["seed"]
            for split in ("train", "dev", "test"):
                if d[split] is not None:
                    d[split] = ctx.resolve_path(d[split])
            tasks.append(TaskConfig.from_dict(d))

        ctx.ray_init()
        # Ray workers are other processes: memory:// is not shared with them, so a
        # memory:// step trains into a local folder that is then copied over.
        staging = tempfile.mkdtemp(prefix="bertflow-finetune-") if ctx.output.startswith("memory://") else None
        out = staging or ctx.output
        try:
            summary = finetune(tasks, p.grid, init, out, ctx.resources.workers, ctx.resources.cpus_per_worker,
                               ctx.resources.gpus_per_worker, p.max_concurrent_trials)
            if staging:
                import fsspec

                fs, root = fsspec.core.url_to_fs(ctx.output)
                fs.put(staging.rstrip("/") + "/", root, recursive=True)
        finally:
            if staging:
                shutil.rmtree(staging, ignore_errors=True)

        ctx.log.info("fine-tuning results in %s/results.md", ctx.output)
        counters: dict[str, float] = {"trials_ok": summary["trials_ok"], "trials_failed": summary["trials_failed"]}
        for name, t in summary["tasks"].items():
            if t["best"] and t["best"]["dev"] is not None:
                counters[f"best_dev_{t['metric']}/{name}"] = t["best"]["dev"]
        if summary["trials_ok"] == 0:
            raise RuntimeError(f"every fine-tuning trial failed; see {ctx.output}/results.md and trials/*/*/error.txt")
        return counters
