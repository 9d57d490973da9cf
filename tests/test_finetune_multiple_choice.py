"""Multiple choice (SWAG): the `multiple_choice` task type trained through the trial's real
path on the real Austen questions (data/finetune/choice), its exported folder loading in
transformers' BertForMultipleChoice with the same scores, and how its files are read."""

import csv
import json
from pathlib import Path

import pytest

from tests.finetune_models import minilm_folder, tiny_bert_folder

DATA = Path(__file__).resolve().parents[1] / "data" / "finetune"


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return tiny_bert_folder(tmp_path_factory.mktemp("tiny-bert"))


def choice(**kw):
    from bertflow.trainer.finetune.tasks import task_config

    return task_config({"name": "choice", "type": "multiple_choice", "train": str(DATA / "choice/train.csv"),
                        "dev": str(DATA / "choice/dev.csv"), "id_column": "id", "max_seq_length": 24, "epochs": 1,
                        "batch_size": 8, "max_train_examples": 16, "max_eval_examples": 16, "lr": 1e-3,
                        "log_every_steps": 1, "seed": 1, **kw})


def test_multiple_choice_trains_and_its_folder_loads_in_transformers(tiny_bert, tmp_path):
    import torch
    from transformers import AutoTokenizer, BertForMultipleChoice as HFMultipleChoice

    from bertflow.trainer.finetune.config import TrialConfig
    from bertflow.trainer.finetune.heads import BertForMultipleChoice, HeadConfig
    from bertflow.trainer.finetune.trial import train_loop
    from bertflow.trainer.hf_folder import load_pretrained

    train_loop(TrialConfig(task=choice(), init=tiny_bert, output=str(tmp_path / "t")).model_dump())
    result = json.loads((tmp_path / "t/result.json").read_text())
    assert result["metric"] == "accuracy" and result["train_examples"] == 16
    assert 0 <= result["dev"]["accuracy"] <= 1
    lines = [json.loads(line) for line in (tmp_path / "t/metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 2] and all(line["train/loss"] > 0 for line in lines[:2])
    rows = list(csv.reader((tmp_path / "t/predictions/dev.csv").read_text().splitlines()))
    assert rows[0] == ["id", "label", "pred"] and len(rows) == 17 and rows[1][0].startswith(("persuasion-", "northanger"))
    assert sum(int(r[1] == r[2]) for r in rows[1:]) == round(16 * result["dev"]["accuracy"])

    model_dir = str(tmp_path / "t/model")
    config = json.loads((tmp_path / "t/model/config.json").read_text())
    assert config["architectures"] == ["BertForMultipleChoice"]
    theirs = HFMultipleChoice.from_pretrained(model_dir).eval()
    ours = load_pretrained(model_dir, BertForMultipleChoice, config=HeadConfig.from_hf(config)).eval()
    with open(DATA / "choice/dev.csv", newline="") as f:
        questions = list(csv.DictReader(f))[:2]
    endings = [f"ending{k}" for k in range(4)]
    enc = AutoTokenizer.from_pretrained(model_dir)([q["sent1"] for q in questions for _ in endings],
                                                  [q[e] for q in questions for e in endings],
                                                  padding=True, truncation=True, max_length=24, return_tensors="pt")
    batch = {k: v.view(2, 4, -1) for k, v in enc.items()}  # [B, N, S]
    labels = torch.tensor([int(q["label"]) for q in questions])
    with torch.no_grad():
        out = theirs(**batch, labels=labels)
        logits = ours(**batch)
    assert logits.shape == (2, 4)
    torch.testing.assert_close(logits, out.logits, atol=1e-5, rtol=1e-5)
    # the loss transformers trains with is ours: cross-entropy over the endings
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(logits, labels))


def test_questions_are_read_and_bad_rows_skipped_with_their_line(tmp_path, caplog):
    from bertflow.trainer.finetune.trial import load_tokenizer

    with open(DATA / "choice/dev.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:6]
    rows[1]["label"] = "4"  # no fifth ending
    rows[2]["ending3"] = ""
    # SWAG's layout: each ending follows a start (sent2) that all of them share
    for r in rows:
        words = r["sent1"].split()
        r["sent1"], r["sent2"] = " ".join(words[:-2]), " ".join(words[-2:])
    bad = tmp_path / "swag.csv"
    with open(bad, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cfg = choice(dev=str(bad), start_column="sent2", max_eval_examples=None)
    tokenizer = load_tokenizer(minilm_folder())
    task = cfg.implementation(cfg, tokenizer, cfg.implementation.read_labels(cfg))
    with caplog.at_level("WARNING"):
        split = task.load(str(bad), train=False)
    assert split.skipped == 2 and [q.id for q in split.examples] == [rows[k]["id"] for k in (0, 3, 4, 5)]
    messages = [r.getMessage() for r in caplog.records]
    assert f"{bad}:3: skipped: label '4' is not an ending's index (0 to 3)" in messages
    assert f"{bad}:4: skipped: no value for ['ending3']" in messages
    first = split.features[0]
    assert len(first["input_ids"]) == 4 and first["labels"] == int(rows[0]["label"])
    # [CLS] context [SEP] start ending [SEP]
    assert tokenizer.decode(first["input_ids"][1], skip_special_tokens=True) == tokenizer.decode(
        tokenizer(rows[0]["sent1"], f"{rows[0]['sent2']} {rows[0]['ending1']}", truncation=True,
                  max_length=24)["input_ids"], skip_special_tokens=True)
    with pytest.raises(ValueError, match="no column\\(s\\) \\['sent2'\\]"):
        task.load(str(DATA / "choice/dev.csv"), train=False)
    with pytest.raises(ValueError, match="two or more different endings"):
        choice(ending_columns=["ending0"])


def test_the_completion_set_is_real_sentences_cut_in_two():
    """data/finetune/completion (the benchmark's set): each context plus its right ending is a
    sentence of its novel as the books step splits it; each wrong ending ends another of
    its sentences; no novel is in both splits."""
    from bertflow.pipelines.books import book_document

    books, novels = {}, {}
    for split in ("train", "dev"):
        with open(DATA / f"completion/{split}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == {"train": 800, "dev": 400}[split] and len({r["id"] for r in rows}) == len(rows)
        books[split] = {r["id"].rsplit("-", 1)[0] for r in rows}
        for r in rows[:25]:
            name, index = r["id"].rsplit("-", 1)
            if name not in novels:
                novels[name] = book_document(str(DATA.parent / f"books/austen-{name}.txt"), name,
                                             lambda *a, **k: None)["sentences"]
            sentences = novels[name]
            endings = [r[f"ending{k}"] for k in range(4)]
            assert sentences[int(index)] == f"{r['sent1']} {endings[int(r['label'])]}"
            assert all(any(s.endswith(" " + e) for s in sentences) for e in endings)
    assert books["train"].isdisjoint(books["dev"]) and len(books["train"]) == 4 and len(books["dev"]) == 2
