"""The task registry: one schema per task type, the grid check, the task interface that the
grid and the results table use, and collate for token fields of any rank."""

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from bertflow.trainer.finetune.config import FinetuneConfig, TrialConfig
from bertflow.trainer.finetune.tasks import TASK_TYPES, task_config, task_type

ROOT = Path(__file__).resolve().parents[1]


def _tasks(*types, **kw):
    return [{"name": f"t{i}", "type": t, "train": "a", "dev": "b", **kw} for i, t in enumerate(types)]


def test_the_step_takes_every_type_of_the_table_and_names_them_for_an_unknown_one():
    config = FinetuneConfig.model_validate({"tasks": _tasks(*TASK_TYPES)})
    assert [type(t) for t in config.tasks] == list(TASK_TYPES.values())
    with pytest.raises(ValidationError, match="'classification', 'ner', 'qa'"):
        FinetuneConfig.model_validate({"tasks": _tasks("regresion")})
    with pytest.raises(ValueError, match="unknown task type 'regresion'; the types are"):
        task_type("regresion")
    with pytest.raises(ValidationError):
        TrialConfig.model_validate({"task": _tasks("regresion")[0], "init": "m", "output": "o"})
    assert task_config(_tasks("qa")[0]).max_seq_length == 384  # QA's own default


def test_bad_settings_fail_at_validation():
    with pytest.raises(ValidationError, match="optimizer"):
        FinetuneConfig.model_validate({"tasks": _tasks("classification", optimizer="bogus")})
    with pytest.raises(ValidationError, match="grid.optimizer: value 'bogus' for task 't0'"):
        FinetuneConfig.model_validate({"tasks": _tasks("ner"), "grid": {"optimizer": ["adamw", "bogus"]}})
    with pytest.raises(ValidationError, match="doc_stride"):  # QA's window check, on a task ...
        FinetuneConfig.model_validate({"tasks": _tasks("qa", max_seq_length=64, doc_stride=48, max_query_length=24)})
    # ... and on a grid, where each value passes alone and one combination does not
    with pytest.raises(ValidationError, match="grid setting {'doc_stride': 64, 'max_query_length': 64} for task 't0'"):
        FinetuneConfig.model_validate({"tasks": _tasks("qa", max_seq_length=128, doc_stride=32, max_query_length=16),
                                       "grid": {"doc_stride": [32, 64], "max_query_length": [16, 64]}})
    with pytest.raises(ValidationError, match="grid.text_column_x: not a task setting"):
        FinetuneConfig.model_validate({"tasks": _tasks("classification"), "grid": {"text_column_x": ["a"]}})
    with pytest.raises(ValidationError, match="needs at least one value"):
        FinetuneConfig.model_validate({"tasks": _tasks("classification"), "grid": {"lr": []}})
    with pytest.raises(ValidationError, match="unique"):
        FinetuneConfig.model_validate({"tasks": _tasks("ner") + _tasks("ner")})


def test_a_grid_key_multiplies_only_the_tasks_that_have_it():
    from bertflow.trainer.finetune.fanout import expand

    config = FinetuneConfig.model_validate({"tasks": _tasks("classification", "qa", seed=None),
                                            "grid": {"lr": [1e-4, 2e-4], "doc_stride": [32, 64]}, "seed": 7})
    trials = expand(config, "model", "/out")
    assert [(t.task.name, t.setting_id) for t in trials] == [
        ("t0", "lr-0.0001"), ("t0", "lr-0.0002"),
        ("t1", "doc_stride-32_lr-0.0001"), ("t1", "doc_stride-32_lr-0.0002"),
        ("t1", "doc_stride-64_lr-0.0001"), ("t1", "doc_stride-64_lr-0.0002")]
    assert trials[3].task.doc_stride == 32 and trials[3].task.lr == 2e-4 and trials[3].task.seed == 7
    assert trials[0].output == "/out/trials/t0/lr-0.0001" and trials[0].task.train == str(Path("a").resolve())


def test_operational_settings_are_left_out_of_the_hash():
    from bertflow.contracts.config import hashed

    config = FinetuneConfig.model_validate({"tasks": _tasks("ner"), "max_concurrent_trials": 2})
    kept = hashed(config)
    assert "max_concurrent_trials" not in kept and "seed" in kept
    assert not {"log_every_steps", "eval_every_epoch"} & set(kept["tasks"][0]) and "lr" in kept["tasks"][0]


def test_best_and_shown_as_the_task_type_says():
    from bertflow.trainer.finetune.fanout import results_table, summarize
    from bertflow.trainer.finetune.tasks import ner, qa

    class LossLike(ner.Config):  # a metric where lower is better
        higher_is_better = False
        scale = 1.0

    tasks = {"a": LossLike(name="a", train="x", dev="y"), "q": qa.Config(name="q", train="x", dev="y")}
    rows = [{"task": "a", "type": "ner", "metric": "f1", "setting_id": sid, "setting": {}, "status": "ok",
             "dev": {"f1": f1}} for sid, f1 in (("one", 0.5), ("two", 0.25), ("three", 0.75))]
    rows += [{"task": "q", "type": "qa", "metric": "f1", "setting_id": sid, "setting": {}, "status": "ok",
              "dev": {"f1": f1}} for sid, f1 in (("one", 61.5), ("two", 72.25))]
    rows.append({"task": "q", "type": "qa", "metric": "f1", "setting_id": "three", "setting": {},
                 "status": "ok", "dev": {}})  # no score: never the best
    summary = summarize(rows, tasks)
    assert summary["tasks"]["a"]["best"]["setting_id"] == "two"
    assert summary["tasks"]["q"]["best"] == {"setting_id": "two", "dev": 72.25, "test": None}
    table = results_table(summary, tasks)
    assert "| two **best** | ok | 0.25 | - |" in table and "| two **best** | ok | 72.25 | - |" in table
    assert "| q | qa | f1 | 72.25 | - | two | 1 |" in table  # the row per task
    classification = TASK_TYPES["classification"](name="c", train="x", dev="y")
    assert classification.percent({"accuracy": 0.8125, "total": 16.0}) == {"accuracy": 81.25, "total": 16.0}


def test_collate_pads_token_fields_of_any_rank():
    import torch

    from bertflow.contracts.layout import IGNORE_INDEX
    from bertflow.trainer.finetune.batching import collate

    flat = collate([{"input_ids": [2, 5, 3], "token_type_ids": [0, 0, 0], "labels": [IGNORE_INDEX, 1, IGNORE_INDEX]},
                    {"input_ids": [2, 3], "token_type_ids": [0, 0], "labels": [IGNORE_INDEX, IGNORE_INDEX]}],
                   pad_token_id=9)
    assert flat["input_ids"].tolist() == [[2, 5, 3], [2, 3, 9]]
    assert flat["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert flat["labels"].tolist() == [[IGNORE_INDEX, 1, IGNORE_INDEX], [IGNORE_INDEX] * 3]
    # a context and N endings per example: [B, N, S], padded to the longest ending of the batch
    choices = collate([{"input_ids": [[2, 4, 3], [2, 3]], "token_type_ids": [[0, 1, 1], [0, 1]], "labels": 1},
                       {"input_ids": [[2, 6, 7, 3], [2, 8, 3]], "token_type_ids": [[0, 0, 1, 1], [0, 1, 1]],
                        "labels": 0}], pad_token_id=0)
    assert choices["input_ids"].shape == (2, 2, 4) and choices["labels"].tolist() == [1, 0]
    assert choices["input_ids"][0].tolist() == [[2, 4, 3, 0], [2, 3, 0, 0]]
    assert choices["attention_mask"][1].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert choices["token_type_ids"][0].tolist() == [[0, 1, 1, 0], [0, 1, 0, 0]]
    # float labels (a regression score) stay floats; fields not named as labels are left out
    scores = collate([{"input_ids": [2, 3], "token_type_ids": [0, 0], "labels": 0.5, "id": 3}])
    assert scores["labels"].dtype == torch.float32 and set(scores) == {"input_ids", "token_type_ids",
                                                                        "attention_mask", "labels"}


def test_the_settings_load_without_torch():
    code = ("import sys, bertflow.trainer.finetune.config\n"
            "print(sorted(m for m in ('torch', 'ray', 'transformers') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_a_failed_trial_keeps_its_error_when_error_txt_cannot_be_written(monkeypatch, caplog, tmp_path):
    from bertflow.trainer.finetune import fanout

    def fails(trial):
        raise ValueError("the trial's own error")

    def cannot_write(url, data):
        raise PermissionError(f"{url}: read-only")

    monkeypatch.setattr(fanout, "run_trial", fails)
    monkeypatch.setattr(fanout, "write_bytes_atomic", cannot_write)
    trial = TrialConfig(task=task_config({**_tasks("ner")[0], "seed": 1}), init="m", output=str(tmp_path / "t"))
    with caplog.at_level("WARNING", logger=fanout.__name__):
        result = fanout._drive(trial.model_dump())
    assert result["status"] == "failed" and result["error"] == "ValueError: the trial's own error"
    assert any("error.txt" in r.getMessage() and "read-only" in r.getMessage() for r in caplog.records)


def test_the_command_line_is_made_from_the_schema(monkeypatch, tmp_path):
    import json

    import bertflow.trainer.launch
    from bertflow.trainer.finetune import __main__ as cli

    calls = {}
    monkeypatch.setattr(bertflow.trainer.launch, "connect_ray", lambda **kw: calls.update(ray=kw))
    monkeypatch.setattr(cli, "finetune", lambda config, *args: calls.update(config=config, args=args) or {"tasks": {}})
    spec = tmp_path / "finetune.json"
    spec.write_text(json.dumps({"tasks": _tasks("ner"), "grid": {"lr": ["1e-4"]}, "seed": 1}))
    cli.main(["--config", str(spec), "--init", "m", "--output", "o", "--seed", "3", "--max-concurrent-trials", "2",
              "--num-cpus", "2"])
    config = calls["config"]
    assert (config.seed, config.grid, config.max_concurrent_trials, config.tasks[0].type) == (3, {"lr": [1e-4]}, 2, "ner")
    assert calls["args"] == ("m", "o", 1, 1, 0) and calls["ray"] == {"address": None, "num_cpus": 2}
    with pytest.raises(SystemExit):  # a bad value is the command line's error, naming the flag
        cli.main(["--config", str(spec), "--init", "m", "--output", "o", "--max-concurrent-trials", "0"])


def test_failed_trials_give_each_distinct_reason_once_whole_with_the_trials_it_stopped(tmp_path):
    import csv
    import itertools

    from bertflow.trainer.finetune import fanout

    # real reviews under a long path, their label column named `stars`: every sentiment
    # trial fails on it (reading train's labels, before any worker starts)
    deep = tmp_path / ("reviews-" * 25) / ("posneg-" * 25)
    deep.mkdir(parents=True)
    nolabel = deep / "train.csv"
    with open(ROOT / "data/finetune/sentiment/train.csv", newline="", encoding="utf-8") as f:
        rows = [[r["text"], r["label"]] for r in itertools.islice(csv.DictReader(f), 20)]
    with open(nolabel, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["text", "stars"], *rows])
    missing = tmp_path / "wnut-train.conll"
    config = FinetuneConfig.model_validate({"tasks": [
        {"name": "sentiment", "type": "classification", "train": str(nolabel), "dev": str(nolabel)},
        {"name": "wnut", "type": "ner", "train": str(missing), "dev": str(ROOT / "data/finetune/ner/dev.conll")},
    ], "grid": {"lr": [1e-4, 2e-4]}, "seed": 1})
    results = [fanout._drive(trial.model_dump()) for trial in fanout.expand(config, "model", str(tmp_path / "out"))]
    summary = fanout.summarize(results, {t.name: t for t in config.tasks})
    reason = f"ValueError: {nolabel}: no column(s) ['label']; the file has ['stars', 'text']"
    assert len(reason) > 500  # longer than any cut
    lines = fanout.failures(summary)
    assert lines[0] == f"sentiment (every trial): {reason}"
    assert len(lines) == 2 and lines[1].startswith(f"wnut (every trial): FileNotFoundError: ") and str(missing) in lines[1]
    table = fanout.results_table(summary, {t.name: t for t in config.tasks})
    assert f"- sentiment (every trial): {reason}" in table.splitlines()
