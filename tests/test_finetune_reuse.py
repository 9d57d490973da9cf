"""A trial's key covers its own task's files, not the other tasks'; a trial finished under
the same key in a sibling folder of the step is copied in whole (any store), a failed one
(no result.json) or one under another key is not. No training here: the runner test in
tests/test_finetune_e2e.py copies real trials; these check the rules on folders laid out
as a trial leaves them."""

import json
import logging
import shutil
from pathlib import Path

import fsspec

from bertflow.infra.inputs import identity
from bertflow.trainer.finetune.config import FinetuneConfig
from bertflow.trainer.finetune.fanout import TRIAL_KEY, expand, reuse_from_siblings, trial_key

DATA = Path(__file__).resolve().parents[1] / "data" / "finetune"


def config(tmp_path: Path) -> FinetuneConfig:
    shutil.copy(DATA / "sentiment/train.csv", tmp_path / "train.csv")
    return FinetuneConfig(tasks=[
        {"name": "sentiment", "type": "classification", "train": str(tmp_path / "train.csv"),
         "dev": str(DATA / "sentiment/dev.csv")},
        {"name": "wnut", "type": "ner", "train": str(DATA / "ner/train.conll"), "dev": str(DATA / "ner/dev.conll")}])


def ident(cfg: FinetuneConfig) -> dict:
    return {"version": "finetune/3", "model": "m",
            "files": {t.name: {k: identity(v)["digest"] for k, v in
                               {"train": t.train, "dev": t.dev}.items()} for t in cfg.tasks}}


def test_a_trials_key_covers_its_own_files_settings_and_model_only(tmp_path):
    cfg = config(tmp_path)
    before = {t.task.name: trial_key(t, ident(cfg)) for t in expand(cfg, "init", str(tmp_path / "a"))}
    with open(tmp_path / "train.csv", "a") as f:  # the sentiment task's train file changes
        f.write("A late review,fresh\n")
    after = {t.task.name: trial_key(t, ident(cfg)) for t in expand(cfg, "init", str(tmp_path / "b"))}
    assert after["wnut"] == before["wnut"] and after["sentiment"] != before["sentiment"]
    other_model = {**ident(cfg), "model": "other"}
    assert all(trial_key(t, other_model) != after[t.task.name] for t in expand(cfg, "init", str(tmp_path / "b")))
    lr = FinetuneConfig(tasks=cfg.tasks, grid={"lr": [1e-4]})
    assert trial_key(expand(lr, "init", str(tmp_path / "b"))[1], ident(cfg)) != after["wnut"]


def finished(trial, key: str, fs=None) -> None:
    """A trial folder as a finished trial leaves it."""
    fs = fs or fsspec.filesystem("file")
    for name, data in (("model/model.safetensors", b"weights"), (TRIAL_KEY, json.dumps({"key": key})),
                       ("result.json", json.dumps({"task": trial.task.name}))):
        fs.makedirs(f"{trial.output}/{Path(name).parent}".rstrip("/."), exist_ok=True)
        fs.pipe_file(f"{trial.output}/{name}", data.encode() if isinstance(data, str) else data)


def test_finished_trials_with_the_same_key_are_copied_from_siblings(tmp_path, caplog):
    cfg = config(tmp_path)
    old = "memory://runs/finetune-aaaa"  # a sibling on a store; the new folder local (as a memory:// step stages)
    memory = fsspec.filesystem("memory")
    sentiment, wnut = expand(cfg, "init", old)
    finished(wnut, trial_key(wnut, ident(cfg)), memory)
    finished(sentiment, "another-key", memory)  # trained on the earlier train file
    failed = expand(cfg, "init", "memory://runs/finetune-bbbb")[0]  # the same key, but it failed: no result.json
    memory.pipe_file(f"{failed.output}/{TRIAL_KEY}", json.dumps({"key": trial_key(failed, ident(cfg))}).encode())
    memory.pipe_file(f"{failed.output}/error.txt", b"FileNotFoundError")

    new = expand(cfg, "init", str(tmp_path / "finetune-cccc"))
    with caplog.at_level(logging.INFO, logger="bertflow.trainer.finetune.fanout"):
        reuse_from_siblings(new, ident(cfg), [old, "memory://runs/finetune-bbbb"])
    assert [r.getMessage() for r in caplog.records] == [f"reused trial wnut/default from {old}"]
    copied = Path(new[1].output)
    assert (copied / "model/model.safetensors").read_bytes() == b"weights" and (copied / "result.json").exists()
    assert not (Path(new[0].output) / "result.json").exists() and not (Path(new[0].output) / "error.txt").exists()
    # every trial folder records its key, the one to train too
    assert json.loads((Path(new[0].output) / TRIAL_KEY).read_text())["key"] == trial_key(new[0], ident(cfg))
    memory.rm("/runs", recursive=True)
