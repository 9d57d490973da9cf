"""The fine-tuning metrics against hand-worked cases of their definitions."""

import pytest

from bertflow.trainer.finetune.metrics import (
    classification_metrics, entities, exact_match, f1_score, ner_metrics, normalize_answer, squad_metrics,
)


def test_classification_accuracy_and_binary_f1():
    m = classification_metrics([0, 1, 1, 0, 1], [0, 1, 0, 0, 0], num_labels=2)
    assert m["accuracy"] == pytest.approx(3 / 5)
    # label 1: tp=1, fp=0, fn=2 -> P=1, R=1/3, F1=0.5
    assert m["f1"] == pytest.approx(0.5)
    assert "f1" not in classification_metrics([0, 2], [0, 1], num_labels=3)


@pytest.mark.parametrize("tags, expected", [
    (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 1), ("LOC", 3, 3)]),
    # an I- after O starts an entity (IOB1 / conlleval)
    (["O", "I-PER", "I-PER", "O"], [("PER", 1, 2)]),
    # a type change inside a run splits it, I- or not
    (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 0), ("LOC", 1, 2)]),
    # B after I of the same type starts a new entity
    (["B-ORG", "I-ORG", "B-ORG"], [("ORG", 0, 1), ("ORG", 2, 2)]),
    # an entity at the very end is closed
    (["O", "O", "B-MISC"], [("MISC", 2, 2)]),
    # I- at the start of a sentence
    (["I-ORG", "O"], [("ORG", 0, 0)]),
    # IOBES
    (["S-PER", "B-LOC", "E-LOC", "I-LOC"], [("PER", 0, 0), ("LOC", 1, 2), ("LOC", 3, 3)]),
    (["O", "O"], []),
])
def test_entities_follow_conlleval(tags, expected):
    assert entities(tags) == expected


def test_ner_metrics_hand_worked():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "I-MISC"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "I-ORG", "I-MISC"]]
    # gold entities: PER(0-1) LOC(3) ORG(0) MISC(2) = 4; predicted: PER(0-1) ORG(0-1) MISC(2) = 3
    # correct: PER and MISC = 2 (ORG's span differs) -> P=2/3, R=2/4, F1=4/7
    m = ner_metrics(gold, pred)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(4 / 7)
    assert m["f1/PER"] == 1.0 and m["f1/LOC"] == 0.0 and m["f1/ORG"] == 0.0
    assert m["accuracy"] == pytest.approx(5 / 7)


def test_ner_metrics_no_entities_predicted_is_zero():
    m = ner_metrics([["B-PER", "O"]], [["O", "O"]])
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0


def test_squad_normalization():
    assert normalize_answer("  The  Quick, brown FOX!  ") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("theory") == "theory"  # "the" only as a word


def test_squad_em_f1_hand_worked():
    assert exact_match("the Eiffel Tower.", "Eiffel tower") == 1.0
    # pred tokens [saint, bernadette], gold [saint, bernadette, soubirous]: P=1, R=2/3, F1=0.8
    assert f1_score("Saint Bernadette", "Saint Bernadette Soubirous") == pytest.approx(0.8)
    assert f1_score("a cat", "the dog") == 0.0
    assert f1_score("", "") == 1.0 and f1_score("x", "") == 0.0


def test_squad_metrics_max_over_golds_and_v2_split():
    golds = {"q1": ["Denver Broncos", "The Denver Broncos"], "q2": ["1858"], "q3": [], "q4": ["Mary"]}
    preds = {"q1": "Broncos", "q2": "in 1858", "q3": "", "q4": "Mary"}
    m = squad_metrics(golds, preds)
    # q1: F1 vs "denver broncos" = 2/3, EM 0; q2: F1 = 2/3, EM 0; q3: no-answer, right: 1/1; q4: 1/1
    assert m["exact_match"] == pytest.approx(100 * 2 / 4)
    assert m["f1"] == pytest.approx(100 * (2 / 3 + 2 / 3 + 1 + 1) / 4)
    assert m["HasAns_exact"] == pytest.approx(100 / 3)
    assert m["NoAns_f1"] == 100.0
    # a missing prediction scores 0
    assert squad_metrics({"q": ["x"]}, {})["f1"] == 0.0
