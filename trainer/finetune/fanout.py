"""A grid of fine-tuning trials, run as parallel Ray trials, and the table of results.

``expand`` makes one trial per task and per combination of the ``grid`` values (any
``TaskConfig`` setting: ``{"lr": [5e-5, 1e-4], "seed": [1, 2]}``), each with its own folder
``trials/<task>/<setting-id>/``. ``run_grid`` drives every trial from a Ray task that
launches its ``TorchTrainer``; at most ``max_concurrent`` run at once (by default as many
as the cluster's CPUs/GPUs hold, given each trial's workers). A trial whose folder has
``result.json`` is reused, not rerun; a trial that fails is recorded with its error
(``error.txt`` in its folder) and the others go on.

The step's ``results.json`` and ``results.md``: per task, every setting's dev score, the
best setting (highest dev main metric: accuracy, entity F1, SQuAD F1) and its test score.

    python -m trainer.finetune --init MODEL_DIR --output OUT --config finetune.json
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
import time
import traceback
from dataclasses import fields, replace
from typing import Any

from contracts.storage import write_bytes_atomic, write_json

from .config import TaskConfig, TrialConfig
from .trial import _join, run_trial

log = logging.getLogger(__name__)


def setting_id(setting: dict[str, Any]) -> str:
    """A readable, filesystem- and URL-safe folder name: ``lr-5e-05_seed-1``."""
    if not setting:
        return "default"
    parts = [f"{k}-{v}" for k, v in sorted(setting.items())]
    return re.sub(r"[^A-Za-z0-9._-]+", "+", "_".join(parts))


def absolute(url: str | None) -> str | None:
    """Local paths made absolute: Ray workers do not run in this process's directory."""
    if url is None or "://" in url:
        return url
    return os.path.abspath(url)


def expand(tasks: list[TaskConfig], grid: dict[str, list[Any]], init: str, output: str,
           workers: int = 1, cpus_per_worker: float = 1, gpus_per_worker: float = 0) -> list[TrialConfig]:
    known = {f.name for f in fields(TaskConfig)} - {"name", "type", "train", "dev", "test"}
    unknown = sorted(set(grid) - known)
    if unknown:
        raise ValueError(f"grid: {unknown} are not task settings; settings are {sorted(known)}")
    keys = sorted(grid)
    init, output = absolute(init), absolute(output)
    trials = []
    for task in tasks:
        task = replace(task, train=absolute(task.train), dev=absolute(task.dev), test=absolute(task.test))
        for values in itertools.product(*(grid[k] for k in keys)):
            setting = dict(zip(keys, values))
            sid = setting_id(setting)
            trials.append(TrialConfig(replace(task, **setting), setting, sid, init,
                                      _join(output, "trials", task.name, sid), workers, cpus_per_worker,
                                      gpus_per_worker))
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
    trial = TrialConfig.from_dict(trial_dict)
    t0 = time.time()
    try:
        result = run_trial(trial)
        return {"status": "ok", "seconds": time.time() - t0, **result}
    except Exception as e:  # a failing trial is reported; the grid goes on
        detail = f"{traceback.format_exc()}\n{e}"
        error = short_error(f"{type(e).__name__}: {e}")
        try:
            write_bytes_atomic(_join(trial.output, "error.txt"), (detail + "\n").encode())
        except Exception:
            pass
        return {"status": "failed", "error": error, "task": trial.task.name, "type": trial.task.type,
                "setting": trial.setting, "setting_id": trial.setting_id, "metric": trial.task.main_metric,
                "seconds": time.time() - t0}


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
            pending[drive.remote(trial.to_dict())] = i
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            i = pending.pop(ref)
            try:
                results[i] = ray.get(ref)
            except Exception as e:  # the driving task itself died (worker crash, OOM kill)
                t = trials[i]
                results[i] = {"status": "failed", "error": short_error(f"{type(e).__name__}: {e}"), "task": t.task.name,
                              "type": t.task.type, "setting": t.setting, "setting_id": t.setting_id,
                              "metric": t.task.main_metric}
            r = results[i]
            log.info("trial %s/%s: %s %s", r["task"], r["setting_id"], r["status"],
                     r.get("error") or f"dev {r['metric']} {r['dev'].get(r['metric'], float('nan')):.4f}")
    return results  # type: ignore[return-value]


# --------------------------------------------------------------------------- results


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per task: every setting's status and scores, and the best setting by dev metric."""
    tasks: dict[str, Any] = {}
    for r in results:
        t = tasks.setdefault(r["task"], {"type": r["type"], "metric": r["metric"], "settings": [], "best": None})
        row = {"setting_id": r["setting_id"], "setting": r["setting"], "status": r["status"]}
        if r["status"] == "ok":
            row["dev"] = r["dev"]
            if "test" in r:
                row["test"] = r["test"]
            row["reused"] = bool(r.get("reused"))
        else:
            row["error"] = r["error"]
        t["settings"].append(row)
    for t in tasks.values():
        ok = [s for s in t["settings"] if s["status"] == "ok"]
        if ok:  # ties go to the first setting in grid order
            best = max(ok, key=lambda s: s["dev"].get(t["metric"], float("-inf")))
            t["best"] = {"setting_id": best["setting_id"], "dev": best["dev"].get(t["metric"]),
                         "test": best.get("test", {}).get(t["metric"])}
    return {"tasks": tasks, "trials_ok": sum(r["status"] == "ok" for r in results),
            "trials_failed": sum(r["status"] != "ok" for r in results)}


def _fmt(v: float | None, percent: bool) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if percent else f"{100 * v:.2f}"


def results_table(summary: dict[str, Any]) -> str:
    """Markdown: one table per task, every setting, the best marked, scores in percent."""
    lines = ["# Fine-tuning results", ""]
    for name, t in summary["tasks"].items():
        metric = t["metric"]
        percent = t["type"] == "qa"  # SQuAD's metrics are already in percent
        lines += [f"## {name} ({t['type']}, {metric})", "",
                  f"| setting | status | dev {metric} | test {metric} |", "|---|---|---|---|"]
        best_id = t["best"]["setting_id"] if t["best"] else None
        for s in t["settings"]:
            mark = " **best**" if s["setting_id"] == best_id else ""
            if s["status"] == "ok":
                dev = _fmt(s["dev"].get(metric), percent)
                test = _fmt(s.get("test", {}).get(metric), percent) if "test" in s else "-"
                lines.append(f"| {s['setting_id']}{mark} | ok | {dev} | {test} |")
            else:
                error = s["error"].replace("|", "/").replace("\n", " ")[:120]
                lines.append(f"| {s['setting_id']} | failed: {error} | - | - |")
        if t["best"]:
            b = t["best"]
            lines += ["", f"Best: `{b['setting_id']}`, dev {metric} {_fmt(b['dev'], percent)}"
                      + (f", test {metric} {_fmt(b['test'], percent)}" if b["test"] is not None else "")]
        else:
            lines += ["", "Best: none (every setting failed)"]
        lines.append("")
    return "\n".join(lines)


def finetune(tasks: list[TaskConfig], grid: dict[str, list[Any]], init: str, output: str,
             workers: int = 1, cpus_per_worker: float = 1, gpus_per_worker: float = 0,
             max_concurrent: int | None = None) -> dict[str, Any]:
    """The whole step: expand, run, write ``results.json`` and ``results.md``; returns the summary."""
    trials = expand(tasks, grid, init, output, workers, cpus_per_worker, gpus_per_worker)
    results = run_grid(trials, max_concurrent)
    summary = summarize(results)
    write_json(_join(output, "results.json"), summary)
    write_bytes_atomic(_join(output, "results.md"), results_table(summary).encode())
    return summary
