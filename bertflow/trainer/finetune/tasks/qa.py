"""Extractive question answering on SQuAD v1.1 / v2.0 JSON.

A context longer than a window is cut into overlapping windows: each holds
``[CLS] question [SEP] context piece [SEP]`` within ``max_seq_length``, consecutive
pieces overlapping by ``doc_stride`` tokens (the fast tokenizer's ``stride``), the
question cut to ``max_query_length`` tokens. For training, a window whose piece holds the
whole answer points at it; any other window (and every window of an unanswerable v2
question) points at [CLS]. Character offsets of the context tokens map spans back to text.

Decoding, per question over all its windows: the ``n_best_size`` best starts and ends,
spans inside the context with ``start <= end`` and at most ``max_answer_length`` tokens,
scored by start + end logit. With ``version_2_with_negative``, the null score is the
lowest [CLS] start + end over the windows, and the answer is "" when null beats the best
span by more than ``null_score_diff_threshold`` (``exact_match`` / ``f1``). Beside that
fixed-threshold figure, v2 reports the official evaluate-v2.0 script's best-threshold
search on the same predictions: ``best_exact`` / ``best_f1`` and the null score
differences that reach them (``best_exact_thresh`` / ``best_f1_thresh``), as the paper's
v2 figures are (threshold tuned on dev).

Predictions: ``predictions/<split>.json`` in the official format (``{id: answer}``), and
for v2 ``predictions/<split>_null_odds.json`` (null score minus best span score).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from ..files import read_head, read_text
from ..metrics import exact_match, f1_score, normalize_answer, squad_metrics
from .base import Split, Task, TaskConfig

log = logging.getLogger(__name__)


@dataclass
class Question:
    id: str
    question: str
    context: str
    answers: list[dict]  # {"text", "answer_start"}; empty for an unanswerable one
    is_impossible: bool


SQUAD_LAYOUT = "expected {'data': [{'paragraphs': [{'context', 'qas'}]}]}"


def read_squad(url: str, limit: int | None = None, head: bool = False) -> tuple[list[Question], int]:
    """The questions of a SQuAD JSON file (``limit``: the first N; ``head``: those of its
    first paragraph when the file is longer than ``files.HEAD_BYTES``), and how many were
    skipped (an answer that is not in its context where it says), each logged."""
    text, whole = read_head(url) if head else (read_text(url), True)
    try:
        data = json.loads(text)["data"] if whole else first_paragraph(text, url)
        return _questions(url, data, limit)
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{url}: not a SQuAD JSON file ({type(e).__name__}: {e}); {SQUAD_LAYOUT}") from None


def first_paragraph(head: str, url: str) -> list[dict] | None:
    """The first paragraph of a SQuAD file from its head, as ``data`` (``[{"paragraphs":
    [it]}]``); None when it goes on past the head."""
    found = re.search(r'^\s*\{.*?"data"\s*:\s*\[.*?"paragraphs"\s*:\s*\[\s*', head, re.S)
    if found is None:
        raise ValueError(f"{url}: not a SQuAD JSON file (no 'data' list of 'paragraphs' in its first "
                         f"{len(head.encode())} bytes); {SQUAD_LAYOUT}")
    try:
        paragraph, _ = json.JSONDecoder().raw_decode(head, found.end())
    except json.JSONDecodeError:
        return None
    return [{"paragraphs": [paragraph]}]


def _questions(url: str, data: list[dict] | None, limit: int | None) -> tuple[list[Question], int]:
    if data is None:
        return [], 0
    questions, skipped = [], 0
    misplaced: list[str] = []  # the first skipped question's answer, as the context has it
    for article in data:
        for paragraph in article.get("paragraphs", []):
            context = paragraph["context"]
            for qa in paragraph.get("qas", []):
                impossible = bool(qa.get("is_impossible", False))
                answers = [] if impossible else list(qa.get("answers", []))
                good = [a for a in answers if context[a["answer_start"]:a["answer_start"] + len(a["text"])] == a["text"]]
                if answers and not good:
                    skipped += 1
                    if not misplaced:
                        a = answers[0]
                        at = context[a["answer_start"]:a["answer_start"] + len(a["text"])]
                        misplaced.append(f"question {qa.get('id')}: {a['text']!r} at {a['answer_start']}, "
                                         f"where the context has {at!r}")
                    log.warning("%s: question %s skipped: no answer text matches the context at its answer_start",
                                url, qa.get("id"))
                    continue
                # gold answers for scoring are all given ones; training uses the first that matches
                questions.append(Question(str(qa["id"]), qa["question"], context, answers if answers else [],
                                          impossible or not answers))
                if good and good[0] is not answers[0]:
                    questions[-1].answers = good + [a for a in answers if a not in good]
                if limit is not None and len(questions) >= limit:
                    return questions, skipped
    if not questions and skipped:
        raise ValueError(f"{url}: no questions left: the answers of all {skipped} answered questions do not match "
                         f"their context at answer_start ({misplaced[0]}); answer_start counts characters of the "
                         "context, from 0")
    if not questions:
        raise ValueError(f"{url}: no questions; {SQUAD_LAYOUT}")
    return questions, skipped


def best_null_threshold(null_diff: dict[str, float], answered: dict[str, float],
                        has_answer: dict[str, bool]) -> tuple[float, float]:
    """The official SQuAD v2 best-threshold search: ``(best score in percent, threshold)``.

    A question is answered with its best span when its ``null_diff`` (null score minus the
    best span's) is at most the threshold, else with "". ``answered`` is each question's
    score (exact or F1) for its span; "" scores 1 on a question without an answer and 0 on
    one with. Starting from every question abstaining, the questions are taken in
    increasing ``null_diff`` (ties in their given order), each switching to its span; the
    threshold is the ``null_diff`` where the running total first reaches its maximum
    (0.0 when abstaining everywhere is best)."""
    total = best = float(sum(not has_answer[q] for q in answered))
    threshold = 0.0
    for q in sorted(answered, key=lambda q: null_diff[q]):
        # answering instead of abstaining gains the span's score, or loses the no-answer's 1
        total += answered[q] if has_answer[q] else answered[q] - 1.0
        if total > best:
            best, threshold = total, null_diff[q]
    return (100.0 * best / len(answered) if answered else 0.0), threshold


def best_threshold_metrics(golds: dict[str, list[str]], spans: dict[str, str],
                           null_diff: dict[str, float]) -> dict[str, float]:
    """``best_exact``, ``best_exact_thresh``, ``best_f1``, ``best_f1_thresh`` for the best
    spans ``spans`` (before any threshold) against ``golds`` (as squad_metrics takes them)."""
    out = {}
    golds = {q: [a for a in answers if normalize_answer(a)] or [""] for q, answers in golds.items()}
    has_answer = {q: answers != [""] for q, answers in golds.items()}
    for name, score in (("exact", exact_match), ("f1", f1_score)):
        answered = {q: max(score(spans.get(q, ""), a) for a in answers) for q, answers in golds.items()}
        out[f"best_{name}"], out[f"best_{name}_thresh"] = best_null_threshold(null_diff, answered, has_answer)
    return out


class Qa(Task):
    label_fields = ("start_positions", "end_positions")

    @classmethod
    def head(cls):
        from ..heads import BertForQuestionAnswering

        return BertForQuestionAnswering

    @classmethod
    def read_labels(cls, cfg: "Config") -> list[str]:
        return ["LABEL_0", "LABEL_1"]  # transformers' default for a QA head's config

    @classmethod
    def check_head(cls, cfg: "Config", url: str, train: bool) -> None:
        read_squad(url, head=True)

    def _question_text(self, q: str) -> str:
        """The question cut to ``max_query_length`` word pieces (by character offset)."""
        q = q.lstrip()  # SQuAD has questions with leading spaces that only waste room
        enc = self.tokenizer(q, add_special_tokens=False, return_offsets_mapping=True)
        if len(enc["input_ids"]) > self.cfg.max_query_length:
            q = q[: enc["offset_mapping"][self.cfg.max_query_length - 1][1]]
        return q

    def load(self, url: str, train: bool) -> Split:
        questions, skipped = read_squad(url, self.cfg.max_train_examples if train else self.cfg.max_eval_examples)
        enc = self.tokenizer([self._question_text(q.question) for q in questions], [q.context for q in questions],
                             truncation="only_second", max_length=self.cfg.max_seq_length, stride=self.cfg.doc_stride,
                             return_overflowing_tokens=True, return_offsets_mapping=True)
        features = []
        for i, q_index in enumerate(enc["overflow_to_sample_mapping"]):
            q = questions[q_index]
            seq = enc.sequence_ids(i)
            offsets = [o if s == 1 else None for o, s in zip(enc["offset_mapping"][i], seq)]
            f = {"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i]}
            if train:
                f["start_positions"], f["end_positions"] = self._answer_tokens(q, offsets)
            else:
                f["question"], f["offsets"] = q_index, offsets
            features.append(f)
        return Split.of(questions, features, answers_not_in_their_context=skipped)

    @staticmethod
    def _answer_tokens(q: Question, offsets: list) -> tuple[int, int]:
        """Token positions of the first answer in this window, or (0, 0): [CLS]."""
        if q.is_impossible or not q.answers:
            return 0, 0
        start_char = q.answers[0]["answer_start"]
        end_char = start_char + len(q.answers[0]["text"])
        inside = [i for i, o in enumerate(offsets) if o is not None]
        if not inside or offsets[inside[0]][0] > start_char or offsets[inside[-1]][1] < end_char:
            return 0, 0
        start = next(i for i in inside if offsets[i][1] > start_char)
        end = next(i for i in reversed(inside) if offsets[i][0] < end_char)
        return start, end

    def loss(self, model, batch, device):
        import torch.nn.functional as F

        start, end = model(**self.inputs(batch, device))
        return (F.cross_entropy(start.float(), batch["start_positions"].to(device))
                + F.cross_entropy(end.float(), batch["end_positions"].to(device))) / 2

    def evaluate(self, model, split: Split, device):
        best: dict[int, tuple[float, str]] = {}  # question -> (score, text) of its best span
        null: dict[int, float] = {}  # question -> lowest [CLS] score over its windows
        for start, batch in self.batches(split.features):
            s_logits, e_logits = (t.float().cpu().numpy() for t in model(**self.inputs(batch, device)))
            for row, f in enumerate(split.features[start:start + len(s_logits)]):
                qi = f["question"]
                null[qi] = min(null.get(qi, np.inf), float(s_logits[row][0] + e_logits[row][0]))
                span = self._best_span(s_logits[row], e_logits[row], f["offsets"], split.examples[qi].context)
                if span and span[0] > best.get(qi, (-np.inf, ""))[0]:
                    best[qi] = span
        predictions, null_odds, spans = {}, {}, {}
        for qi, q in enumerate(split.examples):
            score, text = best.get(qi, (-np.inf, ""))
            spans[q.id] = text
            if self.cfg.version_2_with_negative:
                null_odds[q.id] = float(null[qi] - score) if np.isfinite(score) else float("inf")
                if null[qi] - score > self.cfg.null_score_diff_threshold:
                    text = ""
            predictions[q.id] = text
        golds = {q.id: [a["text"] for a in q.answers] for q in split.examples}
        metrics = squad_metrics(golds, predictions)
        if self.cfg.version_2_with_negative:
            metrics.update(best_threshold_metrics(golds, spans, null_odds))
        files = {"json": (json.dumps(predictions, indent=2, ensure_ascii=False) + "\n").encode()}
        if self.cfg.version_2_with_negative:
            files["null_odds.json"] = (json.dumps(null_odds, indent=2) + "\n").encode()
        return metrics, files

    def _best_span(self, start_logits, end_logits, offsets, context) -> tuple[float, str] | None:
        n, longest = self.cfg.n_best_size, self.cfg.max_answer_length
        start_logits, end_logits = start_logits[:len(offsets)], end_logits[:len(offsets)]  # drop padding
        starts = np.argsort(start_logits)[::-1][:n]
        ends = np.argsort(end_logits)[::-1][:n]
        found = None
        for s in starts:
            for e in ends:
                if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > longest:
                    continue
                score = float(start_logits[s] + end_logits[e])
                if found is None or score > found[0]:
                    found = (score, context[offsets[s][0]:offsets[e][1]])
        return found


class Config(TaskConfig):
    type: Literal["qa"] = "qa"
    max_seq_length: int = Field(384, ge=8, le=512)
    doc_stride: int = Field(128, ge=1, description="tokens of overlap between consecutive windows of a context")
    max_query_length: int = Field(64, ge=1)
    max_answer_length: int = Field(30, ge=1)
    n_best_size: int = Field(20, ge=1)
    version_2_with_negative: bool = False
    null_score_diff_threshold: float = 0.0

    main_metric = "f1"
    records = "questions"
    scale = 1.0  # SQuAD's metrics are in percent already
    unscaled = frozenset({"total", "best_exact_thresh", "best_f1_thresh"})  # thresholds are logit differences
    implementation = Qa

    @model_validator(mode="after")
    def _windows_move(self):
        if self.max_seq_length - self.max_query_length - 3 <= self.doc_stride:
            raise ValueError(
                f"max_seq_length ({self.max_seq_length}) - max_query_length ({self.max_query_length}) - 3 "
                f"special tokens must be > doc_stride ({self.doc_stride}), so that each window moves forward; "
                "lower doc_stride or max_query_length"
            )
        return self
