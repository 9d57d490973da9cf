"""Fine-tuning end to end through Ray Train: a grid with a failing trial and a two-worker
(DDP) trial that matches one worker, the step through the runner on NER and QA (QA must
learn the sample) with a failed trial (a missing train file) that keeps it from done until
allowed, and once the file is there a new folder that copies the other tasks' finished
trials in and trains the fixed one, a killed two-worker trial (dropout on) that resumes to
the bytes of a straight one, transformers loading our saved model with the same logits, two dev sets,
and the metrics logs; the trials through Ray leave nothing in the temporary directory.

A tiny random BERT (2 layers, hidden 32, the real vocabulary and tokenizer) keeps the
training steps to milliseconds; tests/test_model.py loads the real checkpoint."""

import csv
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from tests import finetune_faults
from tests.finetune_models import tiny_bert_folder
from tests.temp_dirs import leftovers, own_temp_dir
from bertflow.trainer.finetune.config import FinetuneConfig, TrialConfig
from bertflow.trainer.finetune.tasks.classification import Config as ClassificationConfig

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "finetune"


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return tiny_bert_folder(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def tiny_bert_dropout(tmp_path_factory):
    return tiny_bert_folder(tmp_path_factory.mktemp("tiny-bert-dropout"), dropout=0.1)


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    """A local Ray whose processes, and this one, have a temporary directory of the
    module's own: yields it, for the tests to check that a fine-tune leaves nothing there."""
    import ray

    from bertflow.trainer.launch import connect_ray

    ray.shutdown()
    with own_temp_dir(tmp_path_factory.mktemp("tmp")) as tmp:
        connect_ray(num_cpus=2)
        yield tmp
        ray.shutdown()


def sentiment(**kw) -> ClassificationConfig:
    return ClassificationConfig(**{"name": "sentiment", "train": str(DATA / "sentiment/train.csv"),
                                   "dev": str(DATA / "sentiment/dev.csv"), "max_seq_length": 32, "epochs": 1,
                                   "batch_size": 16, "max_train_examples": 48, "max_eval_examples": 32,
                                   "lr": 1e-3, "log_every_steps": 1, "seed": 42, **kw})


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_grid_reports_a_failure_runs_ddp_and_saves_loadable_models(ray_session, tiny_bert, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BertForSequenceClassification as HFClassifier

    from bertflow.trainer.finetune.fanout import finetune
    from bertflow.trainer.finetune.heads import BertForSequenceClassification, HeadConfig
    from bertflow.trainer.finetune.trial import train_loop
    from bertflow.trainer.hf_folder import load_pretrained

    out = str(tmp_path / "ft")
    # The file has no column "nope": that trial fails before its workers start. Each trial
    # has 2 workers (DDP over gloo), one CPU each: the trials run one after the other.
    # 49 examples in batches of 16: the last batch has one, so one worker has none in that step
    config = FinetuneConfig(tasks=[sentiment(max_train_examples=49)], grid={"label_column": ["label", "nope"]})
    summary = finetune(config, tiny_bert, out, workers=2)
    assert summary["trials_ok"] == 1 and summary["trials_failed"] == 1
    settings = {s["setting_id"]: s for s in summary["tasks"]["sentiment"]["settings"]}
    assert "no column(s) ['nope']" in settings["label_column-nope"]["error"]
    assert (tmp_path / "ft/trials/sentiment/label_column-nope/error.txt").exists()
    assert summary["tasks"]["sentiment"]["best"]["setting_id"] == "label_column-label"
    assert 0 <= settings["label_column-label"]["dev"]["accuracy"] <= 100  # results.json: percent
    assert json.loads((tmp_path / "ft/results.json").read_text()) == json.loads(json.dumps(summary))
    table = (tmp_path / "ft/results.md").read_text()
    assert "| label_column-label **best** | ok |" in table and "failed: ValueError" in table

    trial = tmp_path / "ft/trials/sentiment/label_column-label"
    rows = (trial / "predictions/dev.csv").read_text().splitlines()
    assert rows[0] == "id,label,pred" and len(rows) == 33
    assert not (trial / "checkpoints").exists()  # done: the resume point is dropped
    # 4 steps, each logged, then the epoch line with dev
    lines = jsonl(trial / "metrics.jsonl")
    assert [line["step"] for line in lines] == [1, 2, 3, 4, 4]
    assert all(line["train/loss"] > 0 and line["train/lr"] > 0 for line in lines[:4])
    assert lines[-1]["dev/accuracy"] * 100 == pytest.approx(settings["label_column-label"]["dev"]["accuracy"])
    assert list((trial / "tensorboard").glob("events.out.tfevents.*"))

    # two workers, each with half of every batch (the last: all of it, and none), train the
    # model one worker trains, and log the losses of the whole batches (tiny_bert has no
    # dropout, whose masks each worker draws for itself)
    single = TrialConfig(task=sentiment(max_train_examples=49), init=tiny_bert, output=str(tmp_path / "single"))
    train_loop(single.model_dump())
    one_lines = jsonl(tmp_path / "single/metrics.jsonl")
    assert [line["step"] for line in one_lines] == [1, 2, 3, 4, 4]
    for ddp, one in zip(lines, one_lines):
        for key in ("train/loss", "train/epoch_loss"):
            if key in one:
                assert ddp[key] == pytest.approx(one[key], rel=1e-5), (key, ddp["step"])
    ddp_weights = load_file(trial / "model/model.safetensors")
    one_weights = load_file(tmp_path / "single/model/model.safetensors")
    assert ddp_weights.keys() == one_weights.keys()
    for name in ddp_weights:
        torch.testing.assert_close(ddp_weights[name], one_weights[name], atol=2e-5, rtol=1e-4, msg=name)

    # the saved folder loads in transformers and gives our logits
    model_dir = str(trial / "model")
    theirs = HFClassifier.from_pretrained(model_dir).eval()
    assert theirs.config.id2label == {0: "fresh", 1: "rotten"}
    ours = load_pretrained(model_dir, BertForSequenceClassification,
                           config=HeadConfig.from_hf(json.loads((trial / "model/config.json").read_text()))).eval()
    batch = AutoTokenizer.from_pretrained(model_dir)(["A fine film.", "Dull and far too long"], padding=True,
                                                    return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch), theirs(**batch).logits, atol=1e-5, rtol=1e-5)

    # a retried step reuses the finished trial
    again = finetune(FinetuneConfig(tasks=[sentiment(max_train_examples=49)], grid={"label_column": ["label"]}),
                     tiny_bert, out, workers=2)
    assert again["tasks"]["sentiment"]["settings"][0]["reused"]
    assert leftovers(ray_session) == []  # the trials' Ray Train folders went with them


def test_the_step_learns_ner_and_qa_and_is_not_done_while_a_trial_failed(ray_session, tiny_bert, tmp_path,
                                                                           caplog):
    from transformers import BertForQuestionAnswering, BertForTokenClassification

    from bertflow.infra.runner import STATUS, SUCCESS, Runner, StepFailed
    from bertflow.infra.spec import SpecFile

    missing = tmp_path / "sentiment-train.csv"
    tasks = [
        {"name": "wnut", "type": "ner", "train": str(DATA / "ner/train.conll"), "dev": str(DATA / "ner/dev.conll"),
         "max_seq_length": 32, "epochs": 1, "batch_size": 16, "max_train_examples": 32, "max_eval_examples": 16},
        # 5 questions, trained on and evaluated on themselves: the pipeline must learn them
        {"name": "squad", "type": "qa", "train": str(DATA / "qa/squad-sample.json"),
         "dev": str(DATA / "qa/squad-sample.json"), "max_seq_length": 128, "doc_stride": 32,
         "max_query_length": 32, "epochs": 12, "batch_size": 4, "lr": 3e-3},
        # its train file is not there (yet): this trial fails, the others finish
        {**sentiment(train=str(missing)).model_dump(exclude_unset=True), "type": "classification"},
    ]
    raw = {"storage": str(tmp_path / "runs"), "ray": {"num_cpus": 2}, "workflows": {"w": {"steps": {"finetune": {
        "kind": "finetune", "params": {"init": tiny_bert, "tasks": tasks, "max_concurrent_trials": 2}}}}}}
    runner = Runner(SpecFile(raw, tmp_path / "workflows.yaml").workflow("w"))
    with pytest.raises(StepFailed, match=r"1 of 3 fine-tuning trials failed:\n  sentiment/default: "
                                         r"FileNotFoundError: .*sentiment-train.csv"):
        runner.run()
    step = Path(runner.output("finetune"))
    assert not (step / SUCCESS).exists() and json.loads((step / STATUS).read_text())["state"] == "failed"
    assert "1 of 3 trials failed: the step is not done" in (step / "results.md").read_text()
    assert (step / "trials/sentiment/default/error.txt").exists()

    # accepting the failure reruns in the same folder: the finished trials are reused, the failed one retried
    raw["workflows"]["w"]["steps"]["finetune"]["params"]["allow_failed_trials"] = True
    again = Runner(SpecFile(raw, tmp_path / "workflows.yaml").workflow("w"))
    assert again.output("finetune") == runner.output("finetune")
    (outcome,) = again.run()
    assert outcome.action == "ran" and (step / SUCCESS).exists()
    counters = outcome.counters
    assert counters["trials_ok"] == 2 and counters["trials_failed"] == 1 and 0 <= counters["best_dev_f1/wnut"] <= 100
    summary = json.loads((step / "results.json").read_text())
    assert all(s["reused"] for name in ("wnut", "squad") for s in summary["tasks"][name]["settings"])
    assert summary["tasks"]["sentiment"]["settings"][0]["status"] == "failed"
    table = (step / "results.md").read_text()
    assert "1 of 3 trials failed: allowed (`allow_failed_trials: true`)" in table and "## squad (qa, f1)" in table

    # the train file is there now: the step's hash changes, and its new folder copies the
    # finished trials of the other tasks in (their keys cover only their own files) and
    # trains the fixed task's
    shutil.copy(DATA / "sentiment/train.csv", missing)
    raw["workflows"]["w"]["steps"]["finetune"]["params"]["allow_failed_trials"] = False
    fixed = Runner(SpecFile(raw, tmp_path / "workflows.yaml").workflow("w"))
    new_step = Path(fixed.output("finetune"))
    assert new_step != step
    with caplog.at_level(logging.INFO, logger="bertflow.trainer.finetune.fanout"):
        (outcome,) = fixed.run()
    assert outcome.action == "ran" and (new_step / SUCCESS).exists() and outcome.counters["trials_failed"] == 0
    reused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reused trial")]
    assert sorted(reused) == [f"reused trial {name}/default from {step}" for name in ("squad", "wnut")]
    for name in ("wnut", "squad"):  # copied, not trained again: the same timings, the same weights
        for file in ("result.json", "trial.json", "model/model.safetensors"):
            assert (new_step / f"trials/{name}/default/{file}").read_bytes() == \
                   (step / f"trials/{name}/default/{file}").read_bytes(), (name, file)
    summary = json.loads((new_step / "results.json").read_text())
    (trained,) = summary["tasks"]["sentiment"]["settings"]
    assert trained["status"] == "ok" and not trained["reused"]  # trained, not its failure carried over
    assert not (new_step / "trials/sentiment/default/error.txt").exists()
    keys = {json.loads((folder / "trials/sentiment/default/trial.json").read_text())["key"] for folder in (step, new_step)}
    assert len(keys) == 2  # the fixed file is part of its trial's key
    step = new_step

    qa = json.loads((step / "trials/squad/default/result.json").read_text())
    em = [h["dev"]["exact_match"] for h in qa["history"]]
    assert em[-1] >= 60 and em[-1] > em[0], em
    predictions = json.loads((step / "trials/squad/default/predictions/dev.json").read_text())
    assert len(predictions) == 5 and predictions["5733be284776f41900661182"]  # official {id: text} format

    conll = (step / "trials/wnut/default/predictions/dev.conll").read_text().split("\n\n")
    assert len([s for s in conll if s.strip()]) == 16
    assert all(len(line.split()) == 3 for line in conll[0].splitlines())
    BertForTokenClassification.from_pretrained(str(step / "trials/wnut/default/model"))
    BertForQuestionAnswering.from_pretrained(str(step / "trials/squad/default/model"))
    assert leftovers(ray_session) == []


def test_a_killed_two_worker_trial_resumes_to_the_bytes_of_a_straight_one(ray_session, tiny_bert_dropout, tmp_path,
                                                                          monkeypatch):
    from bertflow.trainer import checkpoint
    from bertflow.trainer.finetune import trial as trial_module
    from bertflow.trainer.finetune.trial import run_trial

    bad = tmp_path / "broken.csv"
    bad.write_text("no,columns,here\n1,2,3\n")
    # 16 examples in batches of 8: 2 steps an epoch; dev only after the last epoch; dropout
    # in the encoder and the head, so the masks a resumed trial draws show in its weights
    task = sentiment(epochs=2, batch_size=8, max_train_examples=16, max_eval_examples=8, eval_every_epoch=False,
                     classifier_dropout=0.2)
    whole = TrialConfig(task=task.model_copy(update={"test": str(bad)}), init=tiny_bert_dropout,
                        output=str(tmp_path / "whole"))
    with pytest.raises(ValueError, match="no column"):
        trial_module.train_loop(whole.model_dump())  # trains 2 epochs, then dies on the unusable test file
    (step, url), = checkpoint.list_checkpoints(str(tmp_path / "whole/checkpoints"))  # the last one only
    state = json.loads((Path(url) / "state.json").read_text())
    assert step == 4 and state["epoch"] == 2 and not (tmp_path / "whole/result.json").exists()
    assert "dev" not in state["history"][0] and "dev" in state["history"][1]

    def trial(name: str) -> TrialConfig:  # two workers (DDP over gloo) through Ray Train
        return TrialConfig(task=task, init=tiny_bert_dropout, output=str(tmp_path / name), workers=2)

    straight = run_trial(trial("straight"))
    assert straight["trained_on"] == [{"from_step": 0, "workers": 2, "device": "cpu, 1 thread"}]
    # killed in epoch 2 (its dev scoring fails): the checkpoint of epoch 1 is left, and log lines past it
    monkeypatch.setattr(trial_module, "train_loop", finetune_faults.dev_scoring_fails)
    with pytest.raises(Exception, match="killed in the last epoch"):
        run_trial(trial("resumed"))
    assert [s for s, _ in checkpoint.list_checkpoints(str(tmp_path / "resumed/checkpoints"))] == [2]
    assert [line["step"] for line in jsonl(tmp_path / "resumed/metrics.jsonl")] == [1, 2, 2, 3, 4]
    monkeypatch.undo()
    resumed = run_trial(trial("resumed"))  # resumes after epoch 1: trains epoch 2 only
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert resumed["dev"]["accuracy"] == resumed["history"][-1]["dev"]["accuracy"]
    assert set(resumed["phase_seconds"]) == {"load", "train", "eval", "checkpoint", "save"}
    assert not (tmp_path / "resumed/checkpoints").exists()  # done: the resume point is dropped

    # the resumed trial ends with the bytes of the one that ran through, and logs its numbers
    for file in ("model/model.safetensors", "predictions/dev.csv"):
        assert (tmp_path / "resumed" / file).read_bytes() == (tmp_path / "straight" / file).read_bytes(), file

    def timeless(lines: list[dict]) -> list[dict]:
        return [{k: v for k, v in line.items() if k not in ("examples_per_s", "train/examples_per_s")} for line in lines]

    assert timeless(jsonl(tmp_path / "resumed/metrics.jsonl")) == timeless(jsonl(tmp_path / "straight/metrics.jsonl"))
    assert timeless(resumed["history"]) == timeless(straight["history"])
    assert {k: v for k, v in resumed.items() if k not in ("history", "phase_seconds")} == \
           {k: v for k, v in straight.items() if k not in ("history", "phase_seconds")}


def test_scoring_dev_every_epoch_leaves_the_trained_model_alone(tiny_bert, tmp_path):
    # Why eval_every_epoch is operational (left out of the step's hash).
    from safetensors.torch import load_file

    from bertflow.trainer.finetune.trial import train_loop

    weights = {}
    for every in (True, False):
        out = tmp_path / f"every-{every}"
        task = sentiment(epochs=2, batch_size=8, max_train_examples=16, max_eval_examples=8, eval_every_epoch=every,
                         classifier_dropout=0.5)  # dropout draws random numbers: evaluating must not shift them
        train_loop(TrialConfig(task=task, init=tiny_bert, output=str(out)).model_dump())
        weights[every] = load_file(out / "model/model.safetensors")
        result = json.loads((out / "result.json").read_text())
        assert ("dev" in result["history"][0]) == every
    assert weights[True].keys() == weights[False].keys()
    for name in weights[True]:
        assert torch.equal(weights[True][name], weights[False][name]), name


def test_two_dev_sets_score_one_trained_model_by_the_chosen_metric(tiny_bert, tmp_path):
    from bertflow.trainer.finetune.metrics import matthews_corrcoef
    from bertflow.trainer.finetune.trial import train_loop

    # MNLI-style: two dev files (the real dev set's first and last 16 reviews) for one model
    rows = (DATA / "sentiment/dev.csv").read_text().splitlines()
    head, tail = tmp_path / "head.csv", tmp_path / "tail.csv"
    head.write_text("\n".join(rows[:17]) + "\n")
    tail.write_text("\n".join(rows[:1] + rows[-16:]) + "\n")
    task = sentiment(dev={"head": str(head), "tail": str(tail)}, metric="mcc", max_train_examples=16,
                     max_eval_examples=None)
    out = tmp_path / "trial"
    train_loop(TrialConfig(task=task, init=tiny_bert, output=str(out)).model_dump())
    result = json.loads((out / "result.json").read_text())
    assert result["metric"] == "mcc" and set(result["dev_sets"]) == {"head", "tail"}
    assert result["dev"] == result["dev_sets"]["head"] == result["history"][-1]["dev"]  # the first scores each epoch
    for name in ("head", "tail"):
        predicted = (out / f"predictions/dev-{name}.csv").read_text().splitlines()[1:]
        assert len(predicted) == 16
        labels = ["fresh", "rotten"]
        gold, pred = ([labels.index(line.rsplit(",", 2)[i]) for line in predicted] for i in (1, 2))
        assert result["dev_sets"][name]["mcc"] == pytest.approx(matthews_corrcoef(gold, pred))


def test_dev_rows_whose_label_train_never_had_are_counted_as_rows_beside_the_score(tiny_bert, tmp_path):
    from bertflow.trainer.finetune.fanout import results_table, summarize
    from bertflow.trainer.finetune.trial import train_loop

    # the real dev file's first 60 reviews, the last 20 of them labelled `mixed`, which train never has
    lines = (DATA / "sentiment/dev.csv").read_text().splitlines(keepends=True)
    rows = list(csv.reader(lines[1:61]))
    assert len(rows) == 60 and {label for _, label in rows} == {"fresh", "rotten"}
    dev = tmp_path / "dev.csv"
    with open(dev, "w", newline="") as f:
        csv.writer(f).writerows([["text", "label"], *rows[:40], *([text, "mixed"] for text, _ in rows[40:])])
    task = sentiment(dev=str(dev), max_train_examples=16, max_eval_examples=None)
    out = tmp_path / "trial"
    train_loop(TrialConfig(task=task, init=tiny_bert, output=str(out)).model_dump())
    result = json.loads((out / "result.json").read_text())
    assert result["dev_skipped"] == 20 and result["dev_scored"] == 40  # rows, not the one distinct label
    assert result["dev_skipped_why"] == {"labels train never had": 20}
    assert len((out / "predictions/dev.csv").read_text().splitlines()) == 1 + 40

    summary = summarize([{"status": "ok", **result}], {"sentiment": task})
    table = results_table(summary, {"sentiment": task})
    accuracy = summary["tasks"]["sentiment"]["best"]["dev"]
    assert f"| {accuracy:.2f} (20 of 60 rows skipped: labels train never had) |" in table.splitlines()[6]
