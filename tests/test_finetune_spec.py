"""The finetune step's spec: where the model comes from is checked when the spec is."""

from pathlib import Path

import pytest

from bertflow.infra.spec import SpecError, load

ROOT = Path(__file__).resolve().parents[1]


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
