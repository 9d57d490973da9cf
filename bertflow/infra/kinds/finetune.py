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
      - {name: cola, type: classification, train: glue/CoLA/train.tsv, dev: glue/CoLA/dev.tsv,
         text_column: sentence, metric: mcc, seeds: [1, 2, 3]}   # chosen by the median over seeds
    grid: {lr: [5e-5, 1e-4]}
    references: {cola: 52.1}            # shown beside ours as the difference
  resources: {workers: 1, cpus_per_worker: 1}   # per trial
```

Writes ``trials/<task>/<trial>/`` (model, predictions, metrics, checkpoint, and the
training scalars in ``metrics.jsonl`` and ``tensorboard/``: loss and lr every
``log_every_steps``, dev metrics every epoch, or at the end with ``eval_every_epoch: false``),
``results.json`` and ``results.md`` (scores in percent: a row per task, a GLUE average over
the GLUE tasks present, then every setting with its median, mean ± std and min-max over
seeds). A step with a failed trial fails after writing them
(no manifest), unless ``allow_failed_trials: true``; its rerun reuses the finished trials
and retries the failed ones. Each trial folder records its key (``trial.json``: the kind's
version, the identity of the model and of that task's files, its settings): when the step's
hash changes (one task's file fixed), the new folder copies in the trials finished under
the same key in the step's other folders (``{storage}/{step}-*``) instead of training them.
A task's settings are its type's ``Config`` in ``bertflow/trainer/finetune/tasks/``.
"""

from __future__ import annotations

import json
import posixpath
import re
import shutil
import tempfile

from bertflow.contracts import storage
from bertflow.contracts.config import data_paths
from bertflow.infra.inputs import identity
from bertflow.trainer.finetune.config import FinetuneConfig, grid_settings, seeds_of

from . import register
from .base import Input, StepContext, StepKind


@register
class Finetune(StepKind):
    name = "finetune"
    version = 4  # 3: seeds, medians, percent; 4: dropout drawn per (seed, step, worker), other weights
    Params = FinetuneConfig
    inputs = {"model": Input(required=False)}

    @classmethod
    def check(cls, params: FinetuneConfig, inputs: set[str]) -> list[str]:
        if "model" in inputs and params.init:
            return ["params.init: the step also has an input `model`: start from one of them, "
                    "the input `model` (a pretrain step) or params.init (a folder), not both"]
        if "model" not in inputs and not params.init:
            return ["inputs.model: finetune needs a model: an input `model` (a pretrain step) "
                    "or params.init (a folder)"]
        return []

    @classmethod
    def check_data(cls, params: FinetuneConfig, resolve, remote: bool) -> list[str]:
        """Each task's files, read from their heads by the task type's own reader
        (``TaskConfig.check_file``: columns, format, labels), so that a CSV without its
        label column is refused before Ray starts, not in every trial. A path with nothing
        there is left to its trial, which fails naming it (``validate`` warns about it)."""
        errors = []
        for i, task in enumerate(params.tasks):
            for key, path in data_paths(task).items():
                url = resolve(path)
                local = not storage.missing_backend(url) and storage.is_local(url)
                if (not local and not remote) or not storage.exists(url):
                    continue
                problem = task.check_file(url, train=key == "train")
                if problem:
                    errors.append(f"params.tasks.{i}.{key}: {problem}")
        return errors

    @classmethod
    def summary(cls, output: str) -> str | None:
        import fsspec

        with fsspec.open(f"{output}/results.md", "r") as f:
            text = f.read()
        # The table of tasks (and what failed); every setting's row is in the file.
        head, sep, rest = text.partition("\n## ")
        lines = rest.splitlines()
        # the line that says how many failed, and each reason under it
        at = next((i for i, line in enumerate(lines) if " trials failed: " in line), len(lines))
        failed = [line for line in lines[at:] if line.strip()]
        return "\n".join([head.rstrip(), *([""] + failed if failed else []),
                          *(["", f"Every setting and seed: {output}/results.md"] if sep else [])])

    @classmethod
    def progress(cls, output: str, params: dict) -> dict | None:
        """Epochs done over every trial's (the trials' ``metrics.jsonl``: a line per epoch
        and, between them, the fractional epoch of each logged step; a trial with
        ``result.json`` is done), the trials done, the last dev score seen."""
        config = FinetuneConfig.model_validate(params)
        epochs = trials = 0
        for task in config.tasks:
            n = len(list(grid_settings(task, config.grid))) * len(seeds_of(task, config.grid)[0])
            trials += n
            epochs += n * task.epochs
        tasks = {t.name: t for t in config.tasks}
        done, finished, latest = 0.0, 0, None
        for folder in storage.glob(storage.join(output, "trials", "*", "*")):
            task = tasks.get(posixpath.basename(posixpath.dirname(folder.rstrip("/"))))
            if task is None:
                continue
            if storage.exists(storage.join(folder, "result.json")):
                done, finished = done + task.epochs, finished + 1
                continue
            url = storage.join(folder, "metrics.jsonl")
            if not storage.exists(url):
                continue
            seen = 0.0
            for line in storage.read_text(url).splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line still being written
                seen = max(seen, float(record.get("epoch") or 0))
                score = record.get(f"dev/{task.main_metric}")
                if isinstance(score, (int, float)):
                    latest = f"{task.name} dev {task.main_metric} {score * task.scale:.1f}"
            done += min(seen, task.epochs)
        if not done and not finished:
            return None
        text = f"trials {finished}/{trials} done" + (f" | {latest}" if latest else "")
        return {"n": round(done, 2), "total": epochs, "unit": "epoch", "text": text}

    @classmethod
    def artifacts(cls, output: str) -> dict[str, list[str]]:
        models = storage.glob(storage.join(output, "trials", "*", "*", "model"))
        shown = [storage.join(output, "trials", "<task>", "<trial>", "model") + f" ({len(models)} folders)"]
        return {"models": shown if models else [], "tensorboard": [storage.join(output, "trials")]}

    def run(self, ctx: StepContext) -> dict[str, float]:
        from bertflow.trainer.finetune.fanout import finetune
        from bertflow.trainer.launch import connect_ray

        p: FinetuneConfig = ctx.params
        errors = self.check(p, {name for name, urls in ctx.inputs.items() if urls})
        if errors:
            raise ValueError("; ".join(errors))
        if p.init:
            init = ctx.resolve_path(p.init)
            ctx.log.info("fine-tuning from params.init: %s", init)
        else:
            init = posixpath.join(ctx.input("model").rstrip("/"), "model")
            ctx.log.info("fine-tuning from the input `model`: %s", init)
        config = p.model_copy(update={"tasks": p.resolved(ctx.resolve_path)})
        # What a trial's key covers beside its settings; its task's files only, so fixing
        # one task's file leaves the other tasks' finished trials reusable.
        trial_identity = {"version": f"{self.name}/{self.version}", "model": identity(init)["digest"],
                          "files": {task.name: {key: identity(url)["digest"] for key, url in data_paths(task).items()}
                                    for task in config.tasks}}
        own = ctx.output.rstrip("/")
        parent = posixpath.dirname(own)
        siblings = [url for url in storage.glob(storage.join(parent, f"{ctx.step}-*"))
                    if url.rstrip("/") != own and re.fullmatch(rf"{re.escape(ctx.step)}-[0-9a-f]+",
                                                               posixpath.basename(url.rstrip("/")))]

        connect_ray(**ctx.ray)
        # Ray workers are other processes: memory:// is not shared with them, so a
        # memory:// step trains into a local folder that is then copied over.
        staging = tempfile.mkdtemp(prefix="bertflow-finetune-") if ctx.output.startswith("memory://") else None
        out = staging or ctx.output
        try:
            summary = finetune(config, init, out, ctx.resources.workers, ctx.resources.cpus_per_worker,
                               ctx.resources.gpus_per_worker, identity=trial_identity, siblings=siblings)
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
        if summary["trials_failed"] and (summary["trials_ok"] == 0 or not p.allow_failed_trials):
            from bertflow.trainer.finetune.fanout import failures

            ok, failed = summary["trials_ok"], summary["trials_failed"]
            # each distinct reason once, whole, a line each, with the trials it stopped
            raise RuntimeError("\n".join([
                f"{failed} of {ok + failed} fine-tuning trials failed:",
                *(f"  {line}" for line in failures(summary)),
                f"see {ctx.output}/results.md and trials/<task>/<trial>/error.txt"
                + ("" if not ok else "; a rerun reuses the finished trials and retries these, "
                                     "allow_failed_trials: true accepts them")]))
        return counters
