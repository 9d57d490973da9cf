"""Token classification (NER) on CoNLL-style files.

One token per line, its tag in the last column (other columns are ignored), a blank line
between sentences, ``-DOCSTART-`` lines skipped. Columns are tab-separated on a line with a
tab, else whitespace-separated; a token with spaces is read whole (on a space-separated
line: one with more columns than the file's lines have). A last column that mostly holds
no tags (say, swapped columns) is an error naming the file and line. Tags are BIO/IOB2 (IOB1 reads too: the
metric starts an entity at an ``I-`` after ``O``). The label set is train's tags, sorted.

Each word's label goes on its first word piece; the other pieces get IGNORE_INDEX and no
loss. A word predicted nowhere (cut by ``max_seq_length``, or a word the tokenizer drops,
such as a lone control character) is predicted ``O``, so the metric always sees every
gold word, as conlleval does.

Predictions: ``predictions/<split>.conll`` with ``token gold pred`` per line.
"""

from __future__ import annotations

import collections
import logging
import re
from dataclasses import dataclass
from typing import Literal

from bertflow.contracts.layout import IGNORE_INDEX

from ..files import read_lines
from ..metrics import ner_metrics
from .base import Split, Task, TaskConfig

log = logging.getLogger(__name__)


@dataclass
class Sentence:
    words: list[str]
    tags: list[str]


# what a tag looks like: O, a prefixed type (B-PER, I-LOC, E-, S-, L-, U-), or a bare type (PER)
TAG = re.compile(r"^(O|[BIESLU]-\S+|[A-Z][A-Z0-9_$-]*)$")


def _columns(line: str) -> list[str]:
    """A line's columns: tab-separated when it has a tab (a token may then hold spaces),
    else whitespace-separated."""
    if "\t" in line:
        return [p.strip() for p in line.strip().split("\t") if p.strip()]
    return line.split()


def read_conll(url: str, limit: int | None = None, head: bool = False) -> tuple[list[Sentence], int]:
    """Sentences of a CoNLL file (``head``: of its head, ``files.HEAD_BYTES``), and how many
    malformed token lines were skipped (each logged)."""
    lines = read_lines(url, head)[0].splitlines()
    # A space-separated line with more columns than the file's lines have is a token with
    # spaces in it: the tag and the other columns are the last ones.
    widths = collections.Counter(len(line.split()) for line in lines
                                 if line.strip() and "\t" not in line and not line.startswith("-DOCSTART-"))
    width = widths.most_common(1)[0][0] if widths else 2
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    skipped, spaced, untagged = 0, [], []

    def close():
        nonlocal words, tags
        if words:
            sentences.append(Sentence(words, tags))
        words, tags = [], []

    for n, line in enumerate(lines, 1):
        if limit is not None and len(sentences) >= limit:
            break
        parts = _columns(line)
        if not parts or parts[0] == "-DOCSTART-":
            close()
            continue
        if len(parts) < 2:
            skipped += 1
            log.warning("%s:%d: skipped: a token line needs a tag in its last column: %r", url, n, line)
            continue
        if "\t" not in line and len(parts) > width:
            parts = [" ".join(parts[:len(parts) - width + 1]), *parts[len(parts) - width + 1:]]
            spaced.append(n)
        if "\t" in line and " " in parts[0]:
            spaced.append(n)
        if not TAG.match(parts[-1]):
            untagged.append((n, parts))
        words.append(parts[0])
        tags.append(parts[-1])
    close()
    if limit is not None:
        sentences = sentences[:limit]
    if not sentences:
        raise ValueError(f"{url}: no sentences; expected CoNLL lines 'token ... tag' with blank lines between sentences")
    n_tags = sum(len(s.tags) for s in sentences)
    if len(untagged) > n_tags / 2:
        n, parts = untagged[0]
        swapped = sum(bool(TAG.match(p[0])) for _, p in untagged) > len(untagged) / 2
        raise ValueError(
            f"{url}:{n}: the last column does not hold tags: {len(untagged)} of {n_tags} values "
            f"({len({p[-1] for _, p in untagged})} distinct, such as {parts[-1]!r}) are not tags like O, B-PER, I-LOC"
            + ("; the first column does: are the columns swapped? Expected 'token ... tag'" if swapped else
               "; expected 'token ... tag' lines with the tag last"))
    if spaced:
        log.warning("%s: %d tokens hold spaces, read whole (line %d: %r)", url, len(spaced), spaced[0],
                    lines[spaced[0] - 1])
    return sentences, skipped


class Ner(Task):
    @classmethod
    def head(cls):
        from ..heads import BertForTokenClassification

        return BertForTokenClassification

    @classmethod
    def read_labels(cls, cfg: "Config") -> list[str]:
        sentences, _ = read_conll(cfg.train, cfg.max_train_examples)
        return sorted({t for s in sentences for t in s.tags})

    @classmethod
    def check_head(cls, cfg: "Config", url: str, train: bool) -> None:
        read_conll(url, head=True)

    def load(self, url: str, train: bool) -> Split:
        sentences, skipped = read_conll(url, self.cfg.max_train_examples if train else self.cfg.max_eval_examples)
        unknown = sorted({t for s in sentences for t in s.tags} - set(self.label_id))
        if unknown:
            # scored as gold, never predicted; no loss on them
            log.warning("%s: tags %s are not among train's tags", url, unknown)
        enc = self.tokenizer([s.words for s in sentences], is_split_into_words=True,
                             truncation=True, max_length=self.cfg.max_seq_length)
        features = []
        for i, s in enumerate(sentences):
            word_ids = enc.word_ids(i)
            labels, first_piece, previous = [], [], None
            for pos, w in enumerate(word_ids):
                if w is not None and w != previous:
                    labels.append(self.label_id.get(s.tags[w], IGNORE_INDEX))
                    first_piece.append((pos, w))
                else:
                    labels.append(IGNORE_INDEX)
                previous = w
            features.append({"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
                             "labels": labels, "first_piece": first_piece})
        return Split.of(sentences, features, without_a_tag=skipped)

    def loss(self, model, batch, device):
        import torch
        import torch.nn.functional as F

        # Only each word's first piece carries loss, so the last layer and the classifier run
        # at those positions alone, gathered per row and padded with IGNORE_INDEX labels.
        labels = batch["labels"]
        labelled = labels != IGNORE_INDEX
        width = max(1, int(labelled.sum(1).max()))
        # a stable sort puts each row's labelled positions first, in order
        positions = torch.argsort((~labelled).to(torch.int8), dim=1, stable=True)[:, :width]
        targets = labels.gather(1, positions).masked_fill(~labelled.gather(1, positions), IGNORE_INDEX)
        logits = model(**self.inputs(batch, device), only_at=positions.to(device))
        return F.cross_entropy(logits.float().flatten(0, 1), targets.to(device).flatten(),
                               ignore_index=IGNORE_INDEX)

    def loss_weight(self, batch) -> int:
        return int((batch["labels"] != IGNORE_INDEX).sum())  # the loss is a mean over labelled tokens

    def evaluate(self, model, split: Split, device):
        predicted: list[list[str]] = []
        for start, batch in self.batches(split.features):
            ids = model(**self.inputs(batch, device)).argmax(-1).tolist()
            for row, feature in enumerate(split.features[start:start + len(ids)]):
                tags = ["O"] * len(split.examples[start + row].words)
                for pos, word in feature["first_piece"]:
                    tags[word] = self.labels[ids[row][pos]]
                predicted.append(tags)
        metrics = ner_metrics([s.tags for s in split.examples], predicted)
        lines = []
        for s, p in zip(split.examples, predicted):
            lines.extend(f"{w} {g} {t}" for w, g, t in zip(s.words, s.tags, p))
            lines.append("")
        return metrics, {"conll": ("\n".join(lines) + "\n").encode()}


class Config(TaskConfig):
    type: Literal["ner"] = "ner"
    records = "sentences"
    skipped_records = "token lines"  # a malformed line is left out of its sentence, which stays

    main_metric = "f1"
    implementation = Ner
