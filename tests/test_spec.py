"""Validation of workflows.yaml: every error names its key path (and line)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bertflow.infra.cli import main
from bertflow.infra.spec import SpecError, load
from tests import runner_kinds  # noqa: F401 - registers the test kinds

GOOD = """\
storage: ./runs
beam: {runner: DirectRunner}
ray: {num_cpus: 2}
workflows:
  w:
    steps:
      a:
        kind: test_text
        params: {text: hi}
      b:
        kind: test_join
        inputs: {parts: [a]}
        resources: {workers: 2, cpus_per_worker: 1}
"""


def errors_of(tmp_path, text: str, sets=()) -> list[str]:
    path = tmp_path / "workflows.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(SpecError) as e:
        load(path, sets).workflow("w")
    return e.value.errors


def test_good_spec_loads(tmp_path):
    path = tmp_path / "workflows.yaml"
    path.write_text(GOOD)
    wf = load(path).workflow("w")
    assert wf.order == ["a", "b"]
    assert wf.params["a"].copies == 1
    assert wf.steps["b"].resources.workers == 2
    assert wf.ray.num_cpus == 2


@pytest.mark.parametrize(
    "change, expected",
    [
        (("params: {text: hi}", "params: {text: hi, copies: 0}"),
         "workflows.w.steps.a.params.copies: must be >= 1 (line 9)"),
        (("params: {text: hi}", "params: {text: hi, colour: red}"),
         "workflows.w.steps.a.params.colour: unknown key (line 9)"),
        (("params: {text: hi}", "params: {}"), "workflows.w.steps.a.params.text: required (line 9)"),
        (("kind: test_text", "kind: test_txt"), "workflows.w.steps.a.kind: unknown step kind 'test_txt'"),
        (("inputs: {parts: [a]}", "inputs: {parts: [c]}"), "workflows.w.steps.b.inputs.parts: no step 'c' in workflow 'w'"),
        (("inputs: {parts: [a]}", "inputs: {}"), "workflows.w.steps.b.inputs.parts: required"),
        (("inputs: {parts: [a]}", "inputs: {parts: [a], extra: a}"), "workflows.w.steps.b.inputs.extra: 'test_join' has no input 'extra'"),
        (("inputs: {parts: [a]}", "inputs: {parts: [a], title: [a, a]}"), "workflows.w.steps.b.inputs.title: takes one step, not a list"),
        (("workers: 2", "workers: 0"), "workflows.w.steps.b.resources.workers: must be >= 1 (line 13)"),
        (("storage: ./runs", "storage: ./runs\ncolour: red"), "colour: unknown key (line 2)"),
        (("ray: {num_cpus: 2}", "ray: {num_cpus: -1}"), "ray.num_cpus: must be > 0 (line 3)"),
    ],
)
def test_errors_name_the_key_path(tmp_path, change, expected):
    errors = errors_of(tmp_path, GOOD.replace(*change))
    assert any(e.startswith(expected) for e in errors), errors


def test_cycle_is_an_error(tmp_path):
    text = GOOD.replace("params: {text: hi}", "params: {text: hi}") + textwrap.indent(
        textwrap.dedent("""\
        c:
          kind: test_join
          inputs: {parts: [d]}
        d:
          kind: test_join
          inputs: {parts: [c]}
        """), "      ")
    errors = errors_of(tmp_path, text)
    assert any("cycle: c -> d -> c" in e for e in errors), errors


def test_set_overrides_a_parameter(tmp_path):
    path = tmp_path / "workflows.yaml"
    path.write_text(GOOD)
    wf = load(path, ["a.copies=3", "b.separator=' - '"]).workflow("w")
    assert wf.params["a"].copies == 3 and wf.params["b"].separator == " - "
    with pytest.raises(SpecError, match="no step 'zz'"):
        load(path, ["zz.copies=3"])
    with pytest.raises(SpecError, match="expected STEP.PARAM=VALUE"):
        load(path, ["copies=3"])


def test_unknown_kind_names_the_known_ones(tmp_path, capsys):
    path = tmp_path / "workflows.yaml"
    path.write_text(GOOD.replace("kind: test_text", "kind: distill").replace("params: {text: hi}", "params: {}"))
    assert main(["validate", "-f", str(path)]) == 2
    err = capsys.readouterr().err
    assert "workflows.w.steps.a.kind: unknown step kind 'distill' (known kinds: " in err and "pretrain" in err


def test_bad_yaml_and_missing_file(tmp_path, capsys):
    assert main(["validate", "-f", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("workflows: [unclosed\n")
    assert main(["validate", "-f", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_repo_workflows_file_validates(capsys):
    from pathlib import Path

    assert main(["validate", "-f", str(Path(__file__).resolve().parents[1] / "workflows.yaml")]) == 0
    assert "demo" in capsys.readouterr().out


# Two workflows with a step of the same name and different kinds.
TWO_WORKFLOWS = GOOD + """\
  other:
    steps:
      c:
        kind: test_text
        params: {text: there}
      a:
        kind: test_join
        inputs: {parts: [c]}
"""


@pytest.mark.parametrize(
    "assignment, expected",
    [
        ("a.copies=[1", "--set a.copies=[1: the value is not valid YAML"),
        ("a.text.size=3", "--set a.text.size=3: a.text is 'hi', not a mapping or a list (set it whole: --set a.text=...)"),
        ("b.separator.0=x", "--set b.separator.0=x: b.separator is ' ', not a mapping or a list"),
        ("b.separator[0]=x", "--set b.separator[0]=x: 'separator[0]' is not a key; a number in the path "
                             "indexes a list, after a dot: --set b.separator.0=x"),
        ("b.sep[x]=1", "--set b.sep[x]=1: 'sep[x]' is not a key; a number in the path indexes a list, "
                       "after a dot: --set STEP.PARAM.0.KEY=VALUE"),
    ],
)
def test_bad_set_is_a_spec_error(tmp_path, capsys, assignment, expected):
    path = tmp_path / "workflows.yaml"
    path.write_text(GOOD.replace("inputs: {parts: [a]}", "inputs: {parts: [a]}\n        params: {separator: ' '}"))
    assert main(["run", "w", "-f", str(path), "--dry-run", "--set", assignment]) == 2
    assert capsys.readouterr().err.startswith(f"error: {expected}")


def test_set_indexes_lists():
    # The demo's fine-tuning tasks are a list: an index in the path picks one.
    path = Path(__file__).resolve().parents[1] / "workflows.yaml"
    wf = load(path, ["finetune.tasks.1.epochs=2"], workflow="demo").workflow("demo")
    assert [t.epochs for t in wf.params["finetune"].tasks] == [2, 2, 10]
    with pytest.raises(SpecError, match=r"finetune.tasks is a list of 3, '7' is not one of its indices"):
        load(path, ["finetune.tasks.7.epochs=2"], workflow="demo")


def test_set_applies_to_the_workflow_run_only(tmp_path, capsys):
    path = tmp_path / "workflows.yaml"
    path.write_text(TWO_WORKFLOWS)
    # test_join has no 'copies': the other workflow's 'a' must not refuse this run.
    spec = load(path, ["a.copies=3"], workflow="w")
    assert spec.workflow("w").params["a"].copies == 3
    assert main(["run", "w", "-f", str(path), "--dry-run", "--set", "a.copies=3"]) == 0
    with pytest.raises(SpecError, match="no step 'b' in workflow 'other'"):
        load(path, ["b.separator=x"], workflow="other")
    # validate applies it to every workflow that has the step, naming the workflow.
    capsys.readouterr()
    assert main(["validate", "-f", str(path), "--set", "a.copies=3"]) == 2
    err = capsys.readouterr().err
    assert "workflows.other.steps.a.params.copies: unknown key" in err and "workflows.w." not in err


@pytest.mark.parametrize(
    "assignment, expected",
    [
        ("pretrain.steps=[1", "error: --set pretrain.steps=[1: the value is not valid YAML"),
        ("pretrain.model.hidden=3", "error: --set pretrain.model.hidden=3: pretrain.model is 'tiny', not a mapping"),
        ("finetune.tasks.0.epochs=2", None),
        # Brackets name the list and the dotted form instead of an unknown key 'tasks[0]'.
        ("finetune.tasks[0].epochs=2", "error: --set finetune.tasks[0].epochs=2: 'tasks[0]' is not a key; "
                                       "a number in the path indexes a list, after a dot: "
                                       "--set finetune.tasks.0.epochs=2"),
    ],
)
def test_the_issues_set_overrides_on_the_demo(tmp_path, capsys, assignment, expected):
    # The overrides a user tried on the shipped workflows.yaml: one line and exit 2, not a traceback.
    path = Path(__file__).resolve().parents[1] / "workflows.yaml"
    code = main(["run", "demo", "-f", str(path), "--storage", str(tmp_path), "--dry-run", "--set", assignment])
    err = capsys.readouterr().err
    if expected is None:
        assert code == 0 and "Traceback" not in err
    else:
        assert code == 2 and err.startswith(expected) and len(err.strip().splitlines()) == 1, err
