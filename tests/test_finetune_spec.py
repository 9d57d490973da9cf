"""The finetune step's spec: where the model comes from is checked when the spec is, and
each task's files (their heads, by the task type's own reader) before Ray starts."""

import csv
import itertools
import json
from pathlib import Path

import fsspec
import pytest
import yaml

from bertflow.infra.cli import main
from bertflow.infra.spec import SpecError, load

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "finetune"


def test_init_beside_a_model_input_is_a_spec_error():
    # the demo's finetune step reads the input `model`; an init: as well was ignored in silence
    with pytest.raises(SpecError) as e:
        load(ROOT / "workflows.yaml", ["finetune.init=data/some-model"]).workflow("demo")
    (error,) = [m for m in e.value.errors if m.startswith("workflows.demo.")]
    assert error.startswith("workflows.demo.steps.finetune.params.init: the step also has an input `model`")
    assert "not both" in error and "(line " in error


def test_a_finetune_step_without_a_model_is_a_spec_error(tmp_path):
    spec = tmp_path / "workflows.yaml"
    spec.write_text((ROOT / "workflows.yaml").read_text().replace("inputs: {model: pretrain}", "inputs: {}", 1))
    with pytest.raises(SpecError, match=r"workflows.demo.steps.finetune.inputs.model: finetune needs a model"):
        load(spec).workflow("demo")


def _nolabel_csv(path: Path) -> Path:
    """Real reviews whose label column is named `stars`, not the task's `label`."""
    with open(DATA / "sentiment/train.csv", newline="", encoding="utf-8") as f:
        rows = list(itertools.islice(csv.DictReader(f), 60))
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["text", "stars"])
        out.writerows([r["text"], r["label"]] for r in rows)
    return path


def _finetune_spec(tmp_path: Path, train: str) -> Path:
    spec = tmp_path / "workflows.yaml"
    spec.write_text(yaml.safe_dump({
        "storage": str(tmp_path / "runs"), "ray": {"num_cpus": 1},
        "workflows": {"w": {"steps": {"finetune": {"kind": "finetune", "params": {
            "init": str(tmp_path / "model"),
            "tasks": [{"name": "sentiment", "type": "classification", "train": train,
                       "dev": str(DATA / "sentiment/dev.csv")}]}}}}}}, sort_keys=False))
    return spec


@pytest.fixture
def no_ray(monkeypatch):
    """Ray's one connect fails the test: what is refused must be refused before it."""
    import bertflow.trainer.launch

    def connect_ray(**kw):
        raise AssertionError(f"Ray was started ({kw})")

    monkeypatch.setattr(bertflow.trainer.launch, "connect_ray", connect_ray)


def test_a_task_file_without_its_label_column_is_refused_in_one_line_before_ray_starts(tmp_path, capsys, no_ray):
    nolabel = _nolabel_csv(tmp_path / "nolabel.csv")
    spec = _finetune_spec(tmp_path, str(nolabel))
    line = (f"error: workflows.w.steps.finetune.params.tasks.0.train: {nolabel}: no column(s) ['label']; "
            "the file has ['stars', 'text'] (line 14)")
    assert main(["-f", str(spec), "validate"]) == 2
    assert [l for l in capsys.readouterr().err.splitlines() if l.startswith("error")] == [line]
    assert main(["-f", str(spec), "run", "w"]) == 2
    out = capsys.readouterr()
    assert out.err.splitlines() == [line] and "finetune" not in out.out  # not even the plan
    assert not (tmp_path / "runs").exists()  # no step folder, no status, no run record


def test_a_task_file_in_a_store_is_checked_by_run_not_by_validate(tmp_path, capsys, no_ray):
    memory = fsspec.filesystem("memory")
    url = "memory://finetune-spec-test/nolabel.csv"
    memory.pipe(url, _nolabel_csv(tmp_path / "nolabel.csv").read_bytes())
    try:
        spec = _finetune_spec(tmp_path, url)
        assert main(["-f", str(spec), "validate"]) == 0  # a store's files are read with its credentials, at run
        assert "error" not in capsys.readouterr().err
        assert main(["-f", str(spec), "run", "w"]) == 2
        assert capsys.readouterr().err.splitlines() == [
            f"error: workflows.w.steps.finetune.params.tasks.0.train: {url}: no column(s) ['label']; "
            "the file has ['stars', 'text'] (line 14)"]
    finally:
        memory.rm("/finetune-spec-test", recursive=True)


def _squad_of_size(path: Path, size: int, shift: int = 0) -> Path:
    """The real SQuAD sample's paragraphs repeated into one line of JSON (as SQuAD's own
    files are) of at least ``size`` bytes; ``shift`` moves the first paragraph's answers."""
    sample = json.loads((DATA / "qa/squad-sample.json").read_text())
    article = sample["data"][0]
    copies = size // len(json.dumps(article)) + 1
    data = {"data": [json.loads(json.dumps(article)) for _ in range(copies)], "version": "1.1"}
    for qa in data["data"][0]["paragraphs"][0]["qas"]:
        for answer in qa["answers"]:
            answer["answer_start"] += shift
    path.write_text(json.dumps(data))
    return path


def test_each_task_type_reads_the_head_of_its_files_with_its_own_reader(tmp_path):
    from bertflow.trainer.finetune.files import HEAD_BYTES, read_head
    from bertflow.trainer.finetune.tasks import task_config

    def problem(type_, url, train=True, **settings):
        task = task_config({"name": "t", "type": type_, "train": str(url), "dev": str(url), **settings})
        return task.check_file(str(url), train=train)

    sentiment = DATA / "sentiment/train.csv"
    assert not read_head(str(sentiment))[1]  # longer than the head: only the head is read
    broken_tail = tmp_path / "train.csv"
    broken_tail.write_bytes(sentiment.read_bytes() + b"\xff\xfe not UTF-8, and past the head\n")
    big_squad = _squad_of_size(tmp_path / "squad.json", HEAD_BYTES + 1000)
    for type_, url, settings in [
        ("classification", broken_tail, {}), ("classification", DATA / "sentiment/dev.csv", {}),
        ("regression", DATA / "similarity/train.csv", {"text_column": "word1", "text_pair_column": "word2"}),
        ("multiple_choice", DATA / "choice/dev.csv", {}), ("ner", DATA / "ner/train.conll", {}),
        ("qa", DATA / "qa/squad-sample.json", {}), ("qa", big_squad, {}),
    ]:
        assert problem(type_, url, **settings) is None, (type_, url)

    assert problem("classification", sentiment, label_column="stars") == \
        f"{sentiment}: no column(s) ['stars']; the file has ['label', 'text']"
    choice = DATA / "choice/train.csv"
    assert problem("classification", choice, text_column="sent1", metric="f1") == (
        f"{choice}: metric f1 is the F1 of the second of two labels, but train has at least 4: "
        "['0', '1', '2', '3']; choose accuracy or mcc")
    assert problem("classification", choice, train=False, text_column="sent1", metric="f1") is None  # a dev file
    similarity = DATA / "similarity/dev.csv"
    assert problem("regression", similarity, text_column="word1", text_pair_column=None, label_column="word2") == \
        f"{similarity}: no row has a number in column 'word2'"
    assert problem("multiple_choice", choice, ending_columns=[f"ending{i}" for i in range(5)]) == (
        f"{choice}: no column(s) ['ending4']; the file has "
        "['ending0', 'ending1', 'ending2', 'ending3', 'id', 'label', 'sent1']")
    assert problem("ner", sentiment).startswith(f"{sentiment}:2: the last column does not hold tags")
    assert problem("qa", sentiment).startswith(f"{sentiment}: not a SQuAD JSON file (no 'data' list")
    shifted = _squad_of_size(tmp_path / "shifted.json", HEAD_BYTES + 1000, shift=3)
    assert problem("qa", shifted).startswith(f"{shifted}: no questions left: the answers of all ")
    assert problem("qa", DATA / "ner/train.conll", train=False).startswith(
        f"{DATA / 'ner/train.conll'}: not a SQuAD JSON file")
