"""A grid of fine-tuning trials, run as parallel Ray trials, and the table of results.

``expand`` makes one trial per task, per combination of the ``grid`` values of its
settings (``{"lr": [5e-5, 1e-4]}``) and per seed (a task's ``seeds``, or the grid's
``seed`` values), each with its own folder ``trials/<task>/<trial-id>/`` (the setting's
id, ``_seed-N`` added when seeds are swept). ``run_grid`` drives every trial from a Ray
task that launches its ``TorchTrainer``; at most ``max_concurrent`` run at once (by
default as many as the cluster's CPUs/GPUs hold, given each trial's workers). A trial
whose folder has ``result.json`` is reused, not rerun; a trial that fails is recorded with
its error (``error.txt`` in its folder) and the others go on.

Each trial folder records its key in ``trial.json``: a hash over what its model depends on
(the caller's ``identity``: the kind's version, the identity of the model it starts from
and of its task's own files, not the other tasks'; and the trial's settings, seed
included). A step whose hash changed (another task's train file fixed) runs in a new
folder: a trial finished in a sibling folder of the same step (``siblings``) with the same
key is copied in, not trained again.

The step's ``results.json`` and ``results.md``: per task, every setting's trials and their
scores (in percent), each metric's median over the seeds with the main metric's median,
mean ± std and min-max, the best setting (by the median of the task type's dev main
metric: accuracy, entity F1, SQuAD F1, ...) and its test score.

    python -m bertflow.trainer.finetune --init MODEL_DIR --output OUT --config finetune.json
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import posixpath
import re
import statistics
import time
import traceback
from typing import Any

from bertflow.contracts.config import data_paths, hashed
from bertflow.contracts.storage import exists, fs_for, join, list_files, read_json, remove_tree, write_bytes_atomic, write_json

from .config import FinetuneConfig, TrialConfig, grid_settings, seeds_of, setting_id, with_setting
from .tasks import TaskConfig
from .trial import RESULT, run_trial

TRIAL_KEY = "trial.json"

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
        seeds, swept = seeds_of(task, config.grid)
        for setting in grid_settings(task, config.grid):
            sid = setting_id(setting)
            for seed in seeds:
                tid = setting_id({**setting, "seed": seed}) if swept else sid
                trials.append(TrialConfig(task=with_setting(task, {**setting, "seed": seed}), setting=setting,
                                          setting_id=sid, trial_id=tid, init=init,
                                          output=join(output, "trials", task.name, tid), workers=workers,
                                          cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker))
    return trials


def trial_key(trial: TrialConfig, identity: dict[str, Any]) -> str:
    """The hash of what ``trial``'s model depends on: ``identity``'s ``version`` and
    ``model``, its task's file identities (``identity["files"][task]``: data path key ->
    digest) and its task's settings without the paths (their contents stand for them)."""
    task = hashed(trial.task)
    for key in {path.split(".")[0] for path in data_paths(trial.task)}:
        task.pop(key, None)
    blob = {"version": identity["version"], "model": identity["model"], "files": identity["files"][trial.task.name],
            "task": task, "setting": trial.setting, "trial_id": trial.trial_id}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def finished_with_key(trial: TrialConfig, key: str, siblings: list[str]) -> str | None:
    """The folder of a trial finished under the same key in one of ``siblings`` (other
    folders of the same step), or None."""
    for sibling in siblings:
        folder = join(sibling, "trials", trial.task.name, trial.trial_id)
        try:
            if exists(join(folder, RESULT)) and read_json(join(folder, TRIAL_KEY)).get("key") == key:
                return folder
        except (OSError, ValueError):  # no key (an older kind's trial) or unreadable: not known to match
            continue
    return None


def copy_trial(source: str, target: str) -> None:
    """The trial folder ``source`` copied to ``target`` (replacing what an attempt left
    there), ``result.json`` last: a folder with it is whole."""
    remove_tree(target)
    src_fs, src = fs_for(source)
    dst_fs, dst = fs_for(target)
    for name in sorted(list_files(source), key=lambda name: name == RESULT):
        to = posixpath.join(dst, name)
        dst_fs.makedirs(posixpath.dirname(to), exist_ok=True)
        if src_fs is dst_fs:
            src_fs.copy(posixpath.join(src, name), to)
        else:  # another store (a memory:// step trains in a local folder)
            dst_fs.pipe_file(to, src_fs.cat_file(posixpath.join(src, name)))


def reuse_from_siblings(trials: list[TrialConfig], identity: dict[str, Any], siblings: list[str]) -> None:
    """Write each trial's key into its folder; a trial not finished there whose key a
    sibling folder's finished trial has is copied from it."""
    for trial in trials:
        key = trial_key(trial, identity)
        if not exists(join(trial.output, RESULT)):
            source = finished_with_key(trial, key, siblings)
            if source is not None:
                copy_trial(source, trial.output)
                log.info("reused trial %s/%s from %s", trial.task.name, trial.trial_id,
                         source.rsplit("/trials/", 1)[0])
        write_json(join(trial.output, TRIAL_KEY), {"key": key})


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
        return {"status": "ok", "seconds": time.time() - t0, "trial_id": trial.trial_id, "seed": trial.task.seed,
                **result}
    except Exception as e:  # a failing trial is reported; the grid goes on
        detail = f"{traceback.format_exc()}\n{e}"
        error = short_error(e)
        try:
            write_bytes_atomic(join(trial.output, "error.txt"), (detail + "\n").encode())
        except Exception as write_error:  # the trial's own error is what the table reports
            log.warning("trial %s/%s: could not write error.txt: %s: %s", trial.task.name, trial.trial_id,
                        type(write_error).__name__, write_error)
        return {**failed(trial, error), "seconds": time.time() - t0}


def failed(trial: TrialConfig, error: str) -> dict[str, Any]:
    """The result of a trial that failed with ``error``."""
    return {"status": "failed", "error": error, "task": trial.task.name, "type": trial.task.type,
            "setting": trial.setting, "setting_id": trial.setting_id, "trial_id": trial.trial_id,
            "seed": trial.task.seed, "metric": trial.task.main_metric}


def short_error(e: BaseException) -> str:
    """The line that says what went wrong: a failed Ray Train run's own one line
    (``launch.TrainingFailed``: each failed worker's error); else, as Ray wraps a task's
    traceback in its own message, its last ``SomeError: ...`` line."""
    from bertflow.trainer.launch import TrainingFailed

    text = f"{type(e).__name__}: {e}"
    if isinstance(e, TrainingFailed):
        return str(e)
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    errors = [l for l in lines if re.match(r"^[A-Za-z_.]*(Error|Exception)\b.*:", l)]
    return errors[-1] if errors else lines[-1] if lines else text


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
                results[i] = failed(trials[i], short_error(e))
            r = results[i]
            log.info("trial %s/%s: %s %s", r["task"], r["trial_id"], r["status"],
                     r.get("error") or f"dev {r['metric']} {r['dev'].get(r['metric'], float('nan')):.4f}")
    return results  # type: ignore[return-value]


# --------------------------------------------------------------------------- results

SCALE_NOTE = ("scores in percent: each metric x its task type's scale (100; 1 for SQuAD's, already in percent), "
              "counts and losses as they are")


def spread(values: list[float]) -> dict[str, float] | None:
    """``median``, ``mean``, ``std`` (the sample's, 0 for one value), ``min``, ``max`` and
    ``n`` of ``values``; None for none."""
    if not values:
        return None
    return {"median": statistics.median(values), "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "min": min(values), "max": max(values),
            "n": len(values)}


def summarize(results: list[dict[str, Any]], tasks: dict[str, TaskConfig]) -> dict[str, Any]:
    """Per task (``tasks``: by name) and setting: every trial (one per seed) with its scores
    in percent, the median of each metric over the finished seeds, and the main metric's
    spread; the best setting by its median dev main metric."""
    summary: dict[str, Any] = {"scale": SCALE_NOTE, "tasks": {}}
    settings: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:
        task = tasks[r["task"]]
        t = summary["tasks"].setdefault(r["task"], {"type": r["type"], "metric": r["metric"], "settings": [],
                                                    "best": None})
        if (r["task"], r["setting_id"]) not in settings:
            settings[r["task"], r["setting_id"]] = {"setting_id": r["setting_id"], "setting": r["setting"], "trials": []}
            t["settings"].append(settings[r["task"], r["setting_id"]])
        trial = {"trial_id": r.get("trial_id", r["setting_id"]), "seed": r.get("seed"), "status": r["status"]}
        if r["status"] == "ok":
            for split in ("dev", "test"):
                if split in r:
                    trial[split] = task.percent(r[split])
            if "dev_sets" in r:  # every dev set's scores, the first's being `dev`'s
                trial["dev_sets"] = {n: task.percent(m) for n, m in r["dev_sets"].items()}
            trial["reused"] = bool(r.get("reused"))
            for split in ("dev", "test"):
                if r.get(f"{split}_skipped"):  # counted in records; older trials have no reasons
                    trial[f"{split}_skipped"] = {"skipped": r[f"{split}_skipped"], "scored": r.get(f"{split}_scored"),
                                                 "why": r.get(f"{split}_skipped_why") or {}}
        else:
            trial["error"] = r["error"]
        settings[r["task"], r["setting_id"]]["trials"].append(trial)
    for name, t in summary["tasks"].items():
        for row in t["settings"]:
            ok = [x for x in row["trials"] if x["status"] == "ok"]
            failed = [x for x in row["trials"] if x["status"] != "ok"]
            row["status"] = "ok" if not failed else "failed" if not ok else "partly failed"
            row["seeds"] = [x["seed"] for x in row["trials"]]
            for split in ("dev", "test"):
                scored = [x[split] for x in ok if split in x]
                if scored:
                    keys = [k for k in scored[0] if all(isinstance(d.get(k), (int, float)) for d in scored)]
                    row[split] = {k: statistics.median(d[k] for d in scored) for k in keys}
                    row[f"{split}_spread"] = spread([d[t["metric"]] for d in scored if t["metric"] in d])
                skipped = [x[f"{split}_skipped"] for x in ok if f"{split}_skipped" in x]
                if skipped:  # the same file read the same way for every seed
                    row[f"{split}_skipped"] = skipped[0]
            sets = [x["dev_sets"] for x in ok if "dev_sets" in x]
            if sets:
                row["dev_sets"] = {n: statistics.median(d[n].get(t["metric"], math.nan) for d in sets) for n in sets[0]}
            if ok:
                row["reused"] = all(x["reused"] for x in ok)
            if failed:
                row["error"] = "; ".join(f"seed {x['seed']}: {x['error']}" if len(row["trials"]) > 1 else x["error"]
                                         for x in failed)
        scored = [row for row in t["settings"] if "dev" in row]
        if scored:  # ties go to the first setting in grid order
            best = tasks[name].best(scored, lambda row: row["dev"].get(t["metric"]))
            t["best"] = {"setting_id": best["setting_id"], "dev": best["dev"].get(t["metric"]),
                         "test": best.get("test", {}).get(t["metric"]),
                         **{k: best[k] for k in ("dev_skipped", "test_skipped") if k in best}}
    summary["trials_ok"] = sum(r["status"] == "ok" for r in results)
    summary["trials_failed"] = sum(r["status"] != "ok" for r in results)
    return summary


# The tasks the BERT paper averages (WNLI left out) and the metric each is scored by there
GLUE_METRICS = {"cola": "mcc", "sst2": "accuracy", "mrpc": "f1", "stsb": "spearman", "qqp": "f1",
                "mnli": "accuracy", "qnli": "accuracy", "rte": "accuracy"}


def glue_name(task: str) -> str | None:
    """The GLUE task a task's name says it is (``SST-2``, ``sst2``, ``mnli_m``), or None."""
    name = re.sub(r"[^a-z0-9]", "", task.lower())
    name = {"mnlim": "mnli", "mnlimatched": "mnli", "sts": "stsb"}.get(name, name)
    return name if name in GLUE_METRICS else None


def glue_average(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The mean over the GLUE tasks present of each one's best setting's (median) dev score
    by GLUE's metric (MNLI: its first dev set, matched); None without any."""
    scores = {}
    for name, t in summary["tasks"].items():
        glue = glue_name(name)
        if glue is None or not t["best"]:
            continue
        row = next(r for r in t["settings"] if r["setting_id"] == t["best"]["setting_id"])
        value = row.get("dev", {}).get(GLUE_METRICS[glue])
        if value is not None:
            scores[name] = {"metric": GLUE_METRICS[glue], "dev": value}
    if not scores:
        return None
    return {"tasks": scores, "average": statistics.fmean(s["dev"] for s in scores.values())}


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def skipped_text(skipped: dict[str, Any] | None, task: TaskConfig) -> str:
    """What a score leaves out, to show beside it: `` (20 of 60 rows skipped: labels train
    never had)``; "" when nothing was skipped."""
    if not skipped:
        return ""
    n, scored, why = skipped["skipped"], skipped.get("scored"), skipped.get("why") or {}
    if task.skipped_records is None and scored is not None:
        count = f"{n} of {n + scored} {task.records}"
    else:
        count = f"{n} {task.skipped_records or task.records}"
    reasons = next(iter(why)) if len(why) == 1 else ", ".join(f"{reason} {k}" for reason, k in why.items())
    return f" ({count} skipped" + (f": {reasons}" if reasons else "") + ")"


def failures(summary: dict[str, Any]) -> list[str]:
    """Each distinct reason trials failed for, once and whole, after the trials it stopped
    (``sentiment (every trial)`` when it stopped all of a task's): one line each."""
    stopped: dict[str, dict[str, list[str]]] = {}  # reason -> task -> trial ids
    for name, t in summary["tasks"].items():
        for row in t["settings"]:
            for x in row["trials"]:
                if x["status"] != "ok":
                    stopped.setdefault(x["error"], {}).setdefault(name, []).append(x["trial_id"])
    lines = []
    for reason, tasks in stopped.items():
        who = []
        for name, ids in tasks.items():
            total = sum(len(row["trials"]) for row in summary["tasks"][name]["settings"])
            who.append(f"{name} (every trial)" if len(ids) == total > 1 else ", ".join(f"{name}/{i}" for i in ids))
        lines.append(f"{', '.join(who)}: {reason}")
    return lines


def _spread(s: dict[str, float] | None) -> list[str]:
    if not s:
        return ["-", "-", "-"]
    return [_number(s["median"]), f"{s['mean']:.2f} ± {s['std']:.2f}", f"{s['min']:.2f}-{s['max']:.2f}"]


def results_table(summary: dict[str, Any], tasks: dict[str, TaskConfig]) -> str:
    """Markdown: a row per task (its best setting's median dev score and its test score),
    then a table per task with every setting, the best marked; with several seeds, the
    median, mean ± std and min-max over them. Scores in percent."""
    references = summary.get("references") or {}
    lines = ["# Fine-tuning results", "", "Scores in percent; with several seeds, medians over them.", "",
             "| task | type | metric | dev | test | best setting | seeds |" + (" reference | dev - reference |" if references else ""),
             "|---|---|---|---|---|---|---|" + ("---|---|" if references else "")]
    for name, t in summary["tasks"].items():
        b = t["best"] or {}
        seeds = max(len(row["trials"]) for row in t["settings"])
        task = tasks[name]
        dev = _number(b.get("dev")) + skipped_text(b.get("dev_skipped"), task)
        test = _number(b.get("test")) + skipped_text(b.get("test_skipped"), task)
        line = (f"| {name} | {t['type']} | {t['metric']} | {dev} | {test} "
                f"| {b.get('setting_id', 'none: every setting failed')} | {seeds} |")
        if references:
            ref = references.get(name)
            diff = b["dev"] - ref if ref is not None and b.get("dev") is not None else None
            line += f" {_number(ref)} | {'-' if diff is None else f'{diff:+.2f}'} |"
        lines.append(line)
    glue = glue_average(summary)
    if glue:
        parts = ", ".join(f"{n} {s['metric']} {s['dev']:.2f}" for n, s in glue["tasks"].items())
        lines += ["", f"GLUE average over the {len(glue['tasks'])} GLUE tasks here (dev; {parts}): "
                      f"**{glue['average']:.2f}**"]
        refs = [references[n] for n in glue["tasks"] if n in references]
        if references and len(refs) == len(glue["tasks"]):
            mean = statistics.fmean(refs)
            lines[-1] += f"; references' average {mean:.2f} ({glue['average'] - mean:+.2f})"
    lines.append("")
    for name, t in summary["tasks"].items():
        metric = t["metric"]
        seeded = any(len(row["trials"]) > 1 for row in t["settings"])
        has_test = any("test" in row for row in t["settings"])
        lines += [f"## {name} ({t['type']}, {metric})", ""]
        if seeded:
            head = ["setting", "status", "seeds ok", f"dev {metric} median", "mean ± std", "min-max"]
            head += [f"test {metric} median", "mean ± std", "min-max"] if has_test else []
        else:
            head = ["setting", "status", f"dev {metric}", f"test {metric}"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        best_id = t["best"]["setting_id"] if t["best"] else None
        for row in t["settings"]:
            mark = " **best**" if row["setting_id"] == best_id else ""
            status = row["status"]
            if "error" in row:
                status += ": " + row["error"].replace("|", "/").replace("\n", " ")[:160]
            if seeded:
                ok = sum(x["status"] == "ok" for x in row["trials"])
                cells = [status, f"{ok}/{len(row['trials'])}", *_spread(row.get("dev_spread"))]
                cells += _spread(row.get("test_spread")) if has_test else []
            else:
                cells = [status, _number(row.get("dev", {}).get(metric)), _number(row.get("test", {}).get(metric))]
            lines.append(f"| {row['setting_id']}{mark} | " + " | ".join(cells) + " |")
        if t["best"]:
            b = t["best"]
            lines += ["", f"Best: `{b['setting_id']}`, dev {metric} {_number(b['dev'])}"
                      + (f", test {metric} {_number(b['test'])}" if b["test"] is not None else "")
                      + (" (medians over seeds)" if seeded else "")]
            best_row = next(row for row in t["settings"] if row["setting_id"] == b["setting_id"])
            if "dev_sets" in best_row:
                lines.append(f"Its dev sets ({metric}; the first picks): "
                             + ", ".join(f"{n} {_number(v)}" for n, v in best_row["dev_sets"].items()))
        else:
            lines += ["", "Best: none (every setting failed)"]
        lines.append("")
    if summary.get("trials_failed"):
        total = summary["trials_ok"] + summary["trials_failed"]
        lines.append(f"{summary['trials_failed']} of {total} trials failed: "
                     + ("allowed (`allow_failed_trials: true`)." if summary.get("allow_failed_trials")
                        else "the step is not done; a rerun retries them and reuses the finished ones."))
        lines += ["", *(f"- {line}" for line in failures(summary)), ""]
    return "\n".join(lines)


def finetune(config: FinetuneConfig, init: str, output: str, workers: int = 1, cpus_per_worker: float = 1,
             gpus_per_worker: float = 0, identity: dict[str, Any] | None = None,
             siblings: list[str] = ()) -> dict[str, Any]:
    """The whole step (Ray must be connected): expand, run, write ``results.json`` and
    ``results.md``; returns the summary. With ``identity`` (``{"version", "model",
    "files": {task: {data path key: digest}}}``, see ``trial_key``), the trials record
    their keys and those finished in ``siblings`` are copied in, not trained."""
    trials = expand(config, init, output, workers, cpus_per_worker, gpus_per_worker)
    if identity is not None:
        reuse_from_siblings(trials, identity, list(siblings))
    results = run_grid(trials, config.max_concurrent_trials)
    tasks = {t.name: t for t in config.tasks}
    summary = summarize(results, tasks)
    summary["allow_failed_trials"] = config.allow_failed_trials
    summary["references"] = config.references
    summary["glue"] = glue_average(summary)
    write_json(join(output, "results.json"), summary)
    write_bytes_atomic(join(output, "results.md"), results_table(summary, tasks).encode())
    return summary
