"""A grid of fine-tuning trials, run as parallel Ray trials, and the table of results.

``expand`` makes one trial per task and per combination of the ``grid`` values of its
settings (``{"lr": [5e-5, 1e-4], "seed": [1, 2]}``), each with its own folder
``trials/<task>/<setting-id>/``. ``run_grid`` drives every trial from a Ray task that
launches its ``TorchTrainer``; at most ``max_concurrent`` run at once (by default as many
as the cluster's CPUs/GPUs hold, given each trial's workers). A trial whose folder has
``result.json`` is reused, not rerun; a trial that fails is recorded with its error
(``error.txt`` in its folder) and the others go on.

The step's ``results.json`` and ``results.md``: per task, every setting's dev score, the
best setting (by the task type's dev main metric: accuracy, entity F1, SQuAD F1) and its
test score.

    python -m trainer.finetune --init MODEL_DIR --output OUT --config finetune.json
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
import traceback
from typing import Any

from contracts.storage import join, write_bytes_atomic, write_json

from .config import FinetuneConfig, TrialConfig, grid_settings, setting_id, with_setting
from .tasks import TaskConfig
from .trial import run_trial

log = logging.getLogger(__name__)


def absolute(url: str | None) -> str | None:
    """Local paths made absolute: Ray workers do not run in this process's directory."""
    if url is None or "://" in url:
        return url
    return os.path.abspath(url)


def expand(config: FinetuneConfig, init: str, output: str, workers: int = 1, cpus_per_worker: float = 1,
           gpus_per_worker: float = 0) -> list[TrialConfig]:
    """The trials of ``config``: each task at each combination of its grid settings."""
    init, output = absolute(init), absolute(output)
    trials = []
    for task in config.resolved(absolute):
        for setting in grid_settings(task, config.grid):
            sid = setting_id(setting)
            trials.append(TrialConfig(task=with_setting(task, setting), setting=setting, setting_id=sid, init=init,
                                      output=join(output, "trials", task.name, sid), workers=workers,
                                      cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker))
    return trials


def default_concurrency(trial: TrialConfig) -> int:
    import ray

    total = ray.cluster_resources()
    fits = [math.floor(total.get("CPU", 1) / (trial.workers * trial.cpus_per_worker))]
    if trial.gpus_per_worker:
        fits.append(math.floor(total.get("GPU", 0) / (trial.workers * trial.gpus_per_worker)))
    return max(1, min(fits))


def _drive(trial_dict: dict[str, Any]) -> dict[str, Any]:
    """Body of the Ray task that drives one trial: ok with its result, or failed with the error."""
    trial = TrialConfig.model_validate(trial_dict)
    t0 = time.time()
    try:
        result = run_trial(trial)
        return {"status": "ok", "seconds": time.time() - t0, **result}
    except Exception as e:  # a failing trial is reported; the grid goes on
        detail = f"{traceback.format_exc()}\n{e}"
        error = short_error(f"{type(e).__name__}: {e}")
        try:
            write_bytes_atomic(join(trial.output, "error.txt"), (detail + "\n").encode())
        except Exception as write_error:  # the trial's own error is what the table reports
            log.warning("trial %s/%s: could not write error.txt: %s: %s", trial.task.name, trial.setting_id,
                        type(write_error).__name__, write_error)
        return {**failed(trial, error), "seconds": time.time() - t0}


def failed(trial: TrialConfig, error: str) -> dict[str, Any]:
    """The result of a trial that failed with ``error``."""
    return {"status": "failed", "error": error, "task": trial.task.name, "type": trial.task.type,
            "setting": trial.setting, "setting_id": trial.setting_id, "metric": trial.task.main_metric}


def short_error(text: str) -> str:
    """The line that says what went wrong: Ray wraps the worker's traceback in its own
    message, whose last ``SomeError: ...`` line is the worker's exception."""
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    errors = [l for l in lines if re.match(r"^[A-Za-z_.]*(Error|Exception)\b.*:", l)]
    return (errors[-1] if errors else lines[-1] if lines else text)[:500]


def run_grid(trials: list[TrialConfig], max_concurrent: int | None = None) -> list[dict[str, Any]]:
    """Run the trials (Ray must be initialized), at most ``max_concurrent`` at once; results
    in the order of ``trials``."""
    import ray

    if not trials:
        return []
    limit = max_concurrent or default_concurrency(trials[0])
    # the driving task only waits on its TorchTrainer: it holds no CPU of its own
    drive = ray.remote(num_cpus=0, max_retries=0)(_drive)
    results: list[dict | None] = [None] * len(trials)
    pending: dict[Any, int] = {}
    queue = list(enumerate(trials))
    log.info("fine-tuning: %d trials, %d at a time", len(trials), limit)
    while queue or pending:
        while queue and len(pending) < limit:
            i, trial = queue.pop(0)
            pending[drive.remote(trial.model_dump())] = i
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            i = pending.pop(ref)
            try:
                results[i] = ray.get(ref)
            except Exception as e:  # the driving task itself died (worker crash, OOM kill)
                results[i] = failed(trials[i], short_error(f"{type(e).__name__}: {e}"))
            r = results[i]
            log.info("trial %s/%s: %s %s", r["task"], r["setting_id"], r["status"],
                     r.get("error") or f"dev {r['metric']} {r['dev'].get(r['metric'], float('nan')):.4f}")
    return results  # type: ignore[return-value]


# --------------------------------------------------------------------------- results


def summarize(results: list[dict[str, Any]], tasks: dict[str, TaskConfig]) -> dict[str, Any]:
    """Per task (``tasks``: by name): every setting's status and scores, and the best
    setting by its dev main metric."""
    summary: dict[str, Any] = {}
    for r in results:
        t = summary.setdefault(r["task"], {"type": r["type"], "metric": r["metric"], "settings": [], "best": None})
        row = {"setting_id": r["setting_id"], "setting": r["setting"], "status": r["status"]}
        if r["status"] == "ok":
            row["dev"] = r["dev"]
            if "test" in r:
                row["test"] = r["test"]
            row["reused"] = bool(r.get("reused"))
        else:
            row["error"] = r["error"]
        t["settings"].append(row)
    for name, t in summary.items():
        ok = [s for s in t["settings"] if s["status"] == "ok"]
        if ok:  # ties go to the first setting in grid order
            best = tasks[name].best(ok, lambda s: s["dev"].get(t["metric"]))
            t["best"] = {"setting_id": best["setting_id"], "dev": best["dev"].get(t["metric"]),
                         "test": best.get("test", {}).get(t["metric"])}
    return {"tasks": summary, "trials_ok": sum(r["status"] == "ok" for r in results),
            "trials_failed": sum(r["status"] != "ok" for r in results)}


def results_table(summary: dict[str, Any], tasks: dict[str, TaskConfig]) -> str:
    """Markdown: one table per task, every setting, the best marked, scores as each task
    type shows them."""
    lines = ["# Fine-tuning results", ""]
    for name, t in summary["tasks"].items():
        metric, show = t["metric"], tasks[name].show
        lines += [f"## {name} ({t['type']}, {metric})", "",
                  f"| setting | status | dev {metric} | test {metric} |", "|---|---|---|---|"]
        best_id = t["best"]["setting_id"] if t["best"] else None
        for s in t["settings"]:
            mark = " **best**" if s["setting_id"] == best_id else ""
            if s["status"] == "ok":
                dev = show(s["dev"].get(metric))
                test = show(s.get("test", {}).get(metric)) if "test" in s else "-"
                lines.append(f"| {s['setting_id']}{mark} | ok | {dev} | {test} |")
            else:
                error = s["error"].replace("|", "/").replace("\n", " ")[:120]
                lines.append(f"| {s['setting_id']} | failed: {error} | - | - |")
        if t["best"]:
            b = t["best"]
            lines += ["", f"Best: `{b['setting_id']}`, dev {metric} {show(b['dev'])}"
                      + (f", test {metric} {show(b['test'])}" if b["test"] is not None else "")]
        else:
            lines += ["", "Best: none (every setting failed)"]
        lines.append("")
    if summary.get("trials_failed"):
        total = summary["trials_ok"] + summary["trials_failed"]
        lines.append(f"{summary['trials_failed']} of {total} trials failed: "
                     + ("allowed (`allow_failed_trials: true`)." if summary.get("allow_failed_trials")
                        else "the step is not done; a rerun retries them and reuses the finished ones."))
        lines.append("")
    return "\n".join(lines)


def finetune(config: FinetuneConfig, init: str, output: str, workers: int = 1, cpus_per_worker: float = 1,
             gpus_per_worker: float = 0) -> dict[str, Any]:
    """The whole step (Ray must be connected): expand, run, write ``results.json`` and
    ``results.md``; returns the summary."""
    trials = expand(config, init, output, workers, cpus_per_worker, gpus_per_worker)
    results = run_grid(trials, config.max_concurrent_trials)
    tasks = {t.name: t for t in config.tasks}
    summary = summarize(results, tasks)
    summary["allow_failed_trials"] = config.allow_failed_trials
    write_json(join(output, "results.json"), summary)
    write_bytes_atomic(join(output, "results.md"), results_table(summary, tasks).encode())
    return summary
