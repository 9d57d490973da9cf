"""Seeds: each setting trains once per seed, is chosen by its median dev score, and the
table shows the spread; a failing seed is reported beside the others."""

import pytest

from bertflow.trainer.finetune.config import FinetuneConfig
from bertflow.trainer.finetune.fanout import expand, results_table, summarize


def _task(**kw):
    return {"name": "cola", "type": "classification", "train": "a.csv", "dev": "b.csv", **kw}


def test_seeds_on_a_task_or_the_grid_make_one_trial_per_seed_in_its_own_folder():
    config = FinetuneConfig.model_validate({"tasks": [_task(seeds=[1, 2, 3]), _task(name="sst2")],
                                            "grid": {"lr": [1e-4, 2e-4]}, "seed": 7})
    trials = expand(config, "model", "/out")
    assert [(t.task.name, t.setting_id, t.trial_id, t.task.seed) for t in trials][:4] == [
        ("cola", "lr-0.0001", "lr-0.0001_seed-1", 1), ("cola", "lr-0.0001", "lr-0.0001_seed-2", 2),
        ("cola", "lr-0.0001", "lr-0.0001_seed-3", 3), ("cola", "lr-0.0002", "lr-0.0002_seed-1", 1)]
    assert trials[1].output == "/out/trials/cola/lr-0.0001_seed-2"
    # a task without seeds keeps its one seed and its folders' names
    assert [(t.trial_id, t.task.seed) for t in trials[6:]] == [("lr-0.0001", 7), ("lr-0.0002", 7)]
    # the grid's seed values are the seeds of every task that gives none
    grid = expand(FinetuneConfig.model_validate({"tasks": [_task()], "grid": {"seed": [4, 5]}}), "m", "/o")
    assert [(t.setting_id, t.trial_id) for t in grid] == [("default", "seed-4"), ("default", "seed-5")]


def _result(setting_id, seed, accuracy=None, error=None):
    r = {"task": "cola", "type": "classification", "metric": "accuracy", "setting_id": setting_id, "setting": {},
         "trial_id": f"{setting_id}_seed-{seed}", "seed": seed}
    if error:
        return {**r, "status": "failed", "error": error}
    return {**r, "status": "ok", "dev": {"accuracy": accuracy, "total": 20.0}}


def test_the_median_over_seeds_picks_the_setting_and_a_failed_seed_is_shown():
    config = FinetuneConfig.model_validate({"tasks": [_task(seeds=[1, 2, 3])]})
    tasks = {"cola": config.tasks[0]}
    # `lucky` has the best single seed, `steady` the best median; one seed of `steady` failed
    results = [_result("lucky", 1, 0.9), _result("lucky", 2, 0.5), _result("lucky", 3, 0.55),
               _result("steady", 1, 0.7), _result("steady", 2, 0.75), _result("steady", 3, error="RuntimeError: OOM")]
    summary = summarize(results, tasks)
    assert summary["scale"].startswith("scores in percent")
    assert summary["tasks"]["cola"]["best"] == {"setting_id": "steady", "dev": 72.5, "test": None}
    lucky, steady = summary["tasks"]["cola"]["settings"]
    assert lucky["dev_spread"] == pytest.approx({"median": 55, "mean": 65, "std": 21.7945, "min": 50, "max": 90,
                                                 "n": 3}, abs=1e-4)
    assert lucky["dev"]["total"] == 20.0  # counts are not scaled
    assert steady["status"] == "partly failed" and steady["error"] == "seed 3: RuntimeError: OOM"
    # every trial's numbers
    assert [t["dev"]["accuracy"] for t in lucky["trials"]] == pytest.approx([90, 50, 55])
    table = results_table(summary, tasks)
    assert "| lucky | ok | 3/3 | 55.00 | 65.00 ± 21.79 | 50.00-90.00 |" in table
    assert "| steady **best** | partly failed: seed 3: RuntimeError: OOM | 2/3 | 72.50 | 72.50 ± 3.54 | 70.00-75.00 |" in table
    assert "| cola | classification | accuracy | 72.50 | - | steady | 3 |" in table


def test_the_table_has_a_row_per_task_a_glue_average_and_the_references():
    config = FinetuneConfig.model_validate({
        "tasks": [_task(metric="mcc"), _task(name="MRPC", metric="f1"),
                  _task(name="mnli", dev={"matched": "m.tsv", "mismatched": "mm.tsv"}), _task(name="reviews")],
        "references": {"cola": 52.1, "MRPC": 88.9, "mnli": 84.6}})
    tasks = {t.name: t for t in config.tasks}

    def ok(task, metric, **dev):
        return {"task": task, "type": "classification", "metric": metric, "setting_id": "default", "setting": {},
                "status": "ok", "dev": dev, "trial_id": "default", "seed": 42}

    mnli = ok("mnli", "accuracy", accuracy=0.8, mcc=0.7)
    mnli["dev_sets"] = {"matched": {"accuracy": 0.8}, "mismatched": {"accuracy": 0.75}}
    results = [ok("cola", "mcc", accuracy=0.8, mcc=0.5), ok("MRPC", "f1", accuracy=0.8, f1=0.875), mnli,
               ok("reviews", "accuracy", accuracy=0.9)]
    summary = summarize(results, tasks)
    summary["references"] = config.references
    table = results_table(summary, tasks)
    assert "| cola | classification | mcc | 50.00 | - | default | 1 | 52.10 | -2.10 |" in table
    assert "| reviews | classification | accuracy | 90.00 | - | default | 1 | - | - |" in table
    # the paper's average: MCC for CoLA, F1 for MRPC, MNLI's matched accuracy; not a task GLUE lacks
    assert ("GLUE average over the 3 GLUE tasks here (dev; cola mcc 50.00, MRPC f1 87.50, mnli accuracy 80.00): "
            "**72.50**; references' average 75.20 (-2.70)") in table
    assert "Its dev sets (accuracy; the first picks): matched 80.00, mismatched 75.00" in table


def test_a_seed_twice_or_dev_sets_of_one_name_are_spec_errors():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"seeds: each seed once \(got \[1, 1\]\)"):
        FinetuneConfig.model_validate({"tasks": [_task(seeds=[1, 1])]})
    with pytest.raises(ValidationError, match="dev: give one file, or several with different names"):
        FinetuneConfig.model_validate({"tasks": [_task(dev=["a/dev.tsv", "b/dev.tsv"])]})
