"""Input data by content: a changed book, dump or task file reruns what reads it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import fsspec
import pytest

from bertflow.infra import inputs
from bertflow.infra.runner import Runner
from bertflow.infra.spec import SpecFile

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "data/books/austen-persuasion.txt"
SENTENCE = "\nAnne had never seen a book changed under its own name before.\n"


@pytest.fixture(autouse=True)
def digest_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTFLOW_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def books_runner(tmp_path: Path, files: str) -> Runner:
    raw = {"storage": str(tmp_path / "runs"), "beam": {"runner": "DirectRunner"},
           "workflows": {"w": {"steps": {"books": {"kind": "books", "params": {"files": files, "num_shards": 1}}}}}}
    return Runner(SpecFile(raw, tmp_path / "workflows.yaml").workflow("w"))


def test_an_appended_sentence_reruns_the_books_step_and_the_plan_says_which_file(tmp_path):
    shelf = tmp_path / "books"
    shelf.mkdir()
    shutil.copy(BOOK, shelf / BOOK.name)
    first = books_runner(tmp_path, "books/*.txt")
    first.run()
    assert [p.action for p in books_runner(tmp_path, "books/*.txt").plan()] == ["reuse"]

    # A damaged copy of the real output (cut short, as a full disk or a bad copy leaves it)
    # is not done: status says which file, the plan redoes the step. Its bytes back: done.
    (shard,) = Path(first.output("books")).glob("documents-*.parquet")
    whole = shard.read_bytes()
    shard.write_bytes(whole[: len(whole) // 2])
    damaged = books_runner(tmp_path, "books/*.txt")
    (row,) = damaged.status()
    assert row["state"] == "damaged" and shard.name in row["error"], row
    (plan,) = damaged.plan()
    assert plan.action == "run" and "no longer matches its manifest" in plan.reason and shard.name in plan.reason
    shard.write_bytes(whole)
    assert [p.action for p in books_runner(tmp_path, "books/*.txt").plan()] == ["reuse"]

    with open(shelf / BOOK.name, "a") as f:
        f.write(SENTENCE)
    again = books_runner(tmp_path, "books/*.txt")
    (plan,) = again.plan()
    assert plan.action == "run" and again.hashes["books"] != first.hashes["books"]
    size = BOOK.stat().st_size
    assert plan.reason == f"input changed: files: {BOOK.name} changed (size {size} -> {size + len(SENTENCE)})"
    again.run()
    record = fsspec.open(again.record_url, "r").open().read()
    assert "input changed: files" in record

    # Same bytes again under a new modification time: the digest is taken anew, the hash is not.
    os.utime(shelf / BOOK.name, (1, 1))
    assert books_runner(tmp_path, "books/*.txt").hashes == again.hashes


def test_a_folder_or_glob_is_its_sorted_listing(tmp_path):
    shelf = tmp_path / "books"
    shelf.mkdir()
    shutil.copy(BOOK, shelf / BOOK.name)
    one = inputs.identity(str(shelf))
    assert one == {**inputs.identity(str(shelf / "*.txt")), "url": str(shelf)}
    shutil.copy(ROOT / "data/books/austen-emma.txt", shelf / "austen-emma.txt")
    two = inputs.identity(str(shelf))
    assert list(two["files"]) == ["austen-emma.txt", BOOK.name]
    assert inputs.changes(one, two) == ["austen-emma.txt added"]
    assert inputs.changes(two, one) == ["austen-emma.txt removed"]
    assert inputs.identity(str(tmp_path / "no-such-book.txt"))["files"] == {}


def test_digests_are_cached_by_path_size_and_mtime(tmp_path, digest_cache):
    copy = tmp_path / BOOK.name
    shutil.copy(BOOK, copy)
    first = inputs.identity(str(copy))
    (entry,) = (digest_cache / "digests").iterdir()
    # A cache entry is trusted for the same path, size and mtime: proof that a rerun does not read the file.
    planted = entry.read_text().replace(first["files"][BOOK.name]["sha256"], "0" * 64)
    entry.write_text(planted)
    assert inputs.identity(str(copy))["files"][BOOK.name]["sha256"] == "0" * 64
    os.utime(copy, (2, 2))
    assert inputs.identity(str(copy)) == first


def test_objects_in_a_store_are_known_by_their_etag_without_reading_them(s3_bucket):
    fs = fsspec.filesystem("s3")
    url = f"{s3_bucket}/books/{BOOK.name}"
    fs.put_file(str(BOOK), url)
    first = inputs.identity(f"{s3_bucket}/books")
    assert set(first["files"][BOOK.name]) >= {"size", "ETag"} and "sha256" not in first["files"][BOOK.name]
    fs.pipe_file(url, BOOK.read_bytes() + SENTENCE.encode())
    fs.invalidate_cache()
    second = inputs.identity(f"{s3_bucket}/books")
    assert second["digest"] != first["digest"]
    assert inputs.changes(first, second)[0].startswith(f"{BOOK.name} changed (size ")


def test_finetune_task_files_and_init_folders_are_hashed_by_content(tmp_path):
    ner = tmp_path / "ner"
    shutil.copytree(ROOT / "data/finetune/ner", ner)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    raw = {"storage": str(tmp_path / "runs"), "workflows": {"w": {"steps": {"finetune": {"kind": "finetune", "params": {
        "init": "model", "tasks": [{"name": "ner", "type": "ner", "train": "ner/train.conll", "dev": "ner/dev.conll"}]}}}}}}

    def plan_hash():
        return Runner(SpecFile(raw, tmp_path / "workflows.yaml").workflow("w")).hashes["finetune"]

    before = plan_hash()
    with open(ner / "dev.conll", "a") as f:
        f.write("\nAnne\tB-person\n")
    after_dev = plan_hash()
    (model / "config.json").write_text('{"hidden_size": 8}')
    assert len({before, after_dev, plan_hash()}) == 3


def test_removing_a_task_is_not_read_as_every_later_tasks_file_changing(tmp_path):
    from bertflow.infra.runner import StepFailed
    from tests import runner_kinds  # noqa: F401 - registers test_text, the step the finetune step reads

    data = ROOT / "data/finetune"
    files = tmp_path / "files"
    shutil.copytree(data, files)
    tasks = [
        {"name": "sentiment", "type": "classification", "train": "files/sentiment/dev.csv",
         "dev": "files/sentiment/dev.csv"},
        {"name": "similarity", "type": "regression", "train": "files/similarity/train.csv",
         "dev": "files/similarity/dev.csv", "text_column": "word1", "text_pair_column": "word2"},
        {"name": "wnut", "type": "ner", "train": "files/ner/train.conll", "dev": "files/ner/dev.conll"},
    ]

    def runner(tasks) -> Runner:
        # the finetune step reads a step that fails: the run records its data without training
        raw = {"storage": str(tmp_path / "runs"), "workflows": {"w": {"steps": {
            "model": {"kind": "test_text", "params": {"text": "no model", "crash": True}},
            "finetune": {"kind": "finetune", "inputs": {"model": "model"}, "params": {"tasks": tasks}}}}}}
        return Runner(SpecFile(raw, tmp_path / "workflows.yaml").workflow("w"))

    with pytest.raises(StepFailed, match="crashed after writing"):
        runner(tasks).run()
    # the first task removed: the others' files are the same files
    (plan,) = [p for p in runner(tasks[1:]).plan() if p.name == "finetune"]
    assert plan.reason == "new"
    # one of them changed: named by its task
    size = (files / "ner/train.conll").stat().st_size
    sentence = (data / "ner/dev.conll").read_bytes().split(b"\n\n")[0] + b"\n\n"  # dev's first, into train
    with open(files / "ner/train.conll", "ab") as f:
        f.write(sentence)
    (plan,) = [p for p in runner(tasks[1:]).plan() if p.name == "finetune"]
    assert plan.reason == f"input changed: tasks.wnut.train: train.conll changed (size {size} -> {size + len(sentence)})"
