"""BERT pretraining instances from tokenized documents: the pure functions of the examples job.

This follows the algorithm of Google's ``create_pretraining_data.py`` (the generator the
BERT paper used), rewritten for a distributed, deterministic job:

* A document is a list of sentences of token ids. Each pass over a document (there are
  ``dupe_factor`` of them, each with its own random stream) draws one target length:
  ``max_seq_length - 3``, or with probability ``short_seq_prob`` a random length from 2 up.
* Sentences accumulate into a chunk until it reaches the target (or the document ends).
  Segment A is the chunk's first ``randint(1, len - 1)`` sentences. Segment B is the rest
  of the chunk (the true continuation), or with probability 0.5 (always when the chunk is a
  single sentence) a run of sentences from a random *other* document, starting at a random
  sentence; then the chunk's unused sentences are put back for the next instance.
* ``truncate_seq_pair`` trims the longer segment one token at a time, from the front or the
  back at random, until the pair fits.
* ``[CLS] A [SEP] B [SEP]`` is masked: ``min(max_predictions_per_seq, max(1,
  round(len * masked_lm_prob)))`` positions among the non-special tokens, each replaced by
  ``[MASK]`` 80% of the time, a random vocabulary token 10%, left as is 10%. With whole-word
  masking a word (a piece and its ``##`` continuations) is masked whole or not at all.

Where we differ, on purpose:

* The random partner document comes from the document's *bucket* (documents grouped by a
  hash of their id, a few hundred per bucket) rather than from the whole corpus held in one
  process, and it is never the document itself (the original retries 10 times and may give
  up on the same document). This is what lets a worker hold one bucket, not the corpus.
* Randomness: one ``random.Random`` per (seed, document id, dupe index), so the output does
  not depend on the order in which documents arrive.
* ``nsp=False``: no sentence pairs; sentences are packed into full sequences
  ``[CLS] s1 s2 ... [SEP]`` within a document, as RoBERTa's FULL-SENTENCES (a sentence longer
  than a sequence is cut into pieces). ``short_seq_prob`` still applies, per sequence; set
  it to 0 for RoBERTa's recipe. ``next_sentence_label`` is 0 and means nothing there.
* ``masking="dynamic"``: instances are stored unmasked (empty ``masked_lm_positions`` /
  ``masked_lm_ids``) and the trainer masks on the fly, a fresh mask every epoch.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from pipelines.shards import stable_hash

CLS, SEP, MASK = "[CLS]", "[SEP]", "[MASK]"


@dataclass(frozen=True)
class InstanceConfig:
    """How instances are cut and masked; the names are those of the original generator."""

    max_seq_length: int = 128
    max_predictions_per_seq: int = 20
    masked_lm_prob: float = 0.15
    short_seq_prob: float = 0.1
    do_whole_word_mask: bool = False
    nsp: bool = True
    masking: str = "static"  # "static" (masked here) or "dynamic" (stored unmasked)

    def __post_init__(self):
        if self.max_seq_length < 8:
            raise ValueError(f"max_seq_length must be >= 8, got {self.max_seq_length}")
        if self.masking not in ("static", "dynamic"):
            raise ValueError(f"masking must be 'static' or 'dynamic', got {self.masking!r}")


@dataclass(frozen=True)
class Vocab:
    """What instance making needs from ``vocab.txt``: its size, the special ids, and which
    ids are ``##`` continuation pieces (for whole-word masking)."""

    size: int
    cls_id: int
    sep_id: int
    mask_id: int
    continuation: np.ndarray = field(repr=False)  # bool per id

    @classmethod
    def from_tokens(cls, tokens: Sequence[str]) -> "Vocab":
        index = {t: i for i, t in enumerate(tokens)}
        missing = [t for t in (CLS, SEP, MASK) if t not in index]
        if missing:
            raise ValueError(f"vocab.txt lacks the special tokens {missing}")
        continuation = np.fromiter((t.startswith("##") for t in tokens), dtype=bool, count=len(tokens))
        return cls(len(tokens), index[CLS], index[SEP], index[MASK], continuation)

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        # BERT's vocab.txt: one token per line, the line number is the id.
        return cls.from_tokens(text.rstrip("\n").split("\n"))


@dataclass
class Document:
    """A tokenized document: every sentence's ids concatenated, and where each starts."""

    id: str
    tokens: np.ndarray  # int32, all sentences back to back
    bounds: np.ndarray  # int64, sentence i is tokens[bounds[i]:bounds[i + 1]]

    @property
    def num_sentences(self) -> int:
        return len(self.bounds) - 1

    def sentence_length(self, i: int) -> int:
        return int(self.bounds[i + 1] - self.bounds[i])

    def span(self, start: int, end: int) -> list[int]:
        """The ids of sentences ``start`` .. ``end - 1``, as one list."""
        return self.tokens[self.bounds[start] : self.bounds[end]].tolist()


def document_from_ids(doc_id: str, sentences: Sequence[Sequence[int]]) -> Document | None:
    """A ``Document`` from per-sentence ids; empty sentences are dropped, and a document
    with no tokens at all is ``None``."""
    kept = [s for s in sentences if len(s)]
    if not kept:
        return None
    lengths = np.fromiter((len(s) for s in kept), dtype=np.int64, count=len(kept))
    bounds = np.zeros(len(kept) + 1, dtype=np.int64)
    np.cumsum(lengths, out=bounds[1:])
    tokens = np.fromiter((t for s in kept for t in s), dtype=np.int32, count=int(bounds[-1]))
    return Document(doc_id, tokens, bounds)


def tokenize_document(tokenizer, doc_id: str, sentences: Sequence[str]) -> Document | None:
    """Tokenize a document's sentences in one batch call (``tokenizers.Tokenizer`` with no
    special tokens, no truncation, no padding)."""
    encodings = tokenizer.encode_batch(list(sentences), add_special_tokens=False)
    return document_from_ids(doc_id, [e.ids for e in encodings])


@dataclass
class Instance:
    input_ids: list[int]
    token_type_ids: list[int]
    masked_lm_positions: list[int]
    masked_lm_ids: list[int]
    next_sentence_label: int  # 1: B is a random next sentence, 0: B is the true continuation
    short_target: bool  # drawn from a short target length (for the statistics)


def truncate_seq_pair(tokens_a: list[int], tokens_b: list[int], max_num_tokens: int, rng: random.Random):
    """Trim the longer of the two segments, one token at a time from its front or back at
    random, until both fit in ``max_num_tokens``. Returns the trimmed (a, b)."""
    a_lo, a_hi, b_lo, b_hi = 0, len(tokens_a), 0, len(tokens_b)
    while (a_hi - a_lo) + (b_hi - b_lo) > max_num_tokens:
        if a_hi - a_lo > b_hi - b_lo:
            if rng.random() < 0.5:
                a_lo += 1
            else:
                a_hi -= 1
        else:
            if rng.random() < 0.5:
                b_lo += 1
            else:
                b_hi -= 1
    return tokens_a[a_lo:a_hi], tokens_b[b_lo:b_hi]


def num_to_predict(length: int, cfg: InstanceConfig) -> int:
    """How many positions a sequence of ``length`` tokens (specials included) masks."""
    return min(cfg.max_predictions_per_seq, max(1, int(round(length * cfg.masked_lm_prob))))


def mask_tokens(tokens: list[int], cfg: InstanceConfig, vocab: Vocab, rng: random.Random, candidates: list[int] | None = None):
    """Masked-LM predictions for ``tokens``: returns (masked tokens, positions, original ids),
    positions ascending. ``candidates``: the positions that are not [CLS]/[SEP], when the
    caller knows them (else found by looking at the ids)."""
    special = (vocab.cls_id, vocab.sep_id)
    n = num_to_predict(len(tokens), cfg)
    if cfg.do_whole_word_mask:
        # Candidate groups: a word's first piece and its ## continuations.
        groups: list[list[int]] = []
        for i, t in enumerate(tokens):
            if t in special:
                continue
            if groups and vocab.continuation[t] and groups[-1][-1] == i - 1:
                groups[-1].append(i)
            else:
                groups.append([i])
        rng.shuffle(groups)
        chosen: list[int] = []
        for group in groups:
            if len(chosen) >= n:
                break
            if len(chosen) + len(group) > n:
                continue  # a word that does not fit whole is skipped, as in the original
            chosen.extend(group)
    else:
        if candidates is None:
            candidates = [i for i, t in enumerate(tokens) if t not in special]
        # Shuffling then taking n is the original's choice; sample() draws the same law.
        chosen = rng.sample(candidates, min(n, len(candidates)))
    chosen.sort()
    output = list(tokens)
    labels = []
    for i in chosen:
        labels.append(tokens[i])
        if rng.random() < 0.8:
            output[i] = vocab.mask_id
        elif rng.random() < 0.5:
            pass  # kept as it is
        else:
            output[i] = rng.randint(0, vocab.size - 1)
    return output, chosen, labels


def _finish(tokens_a, tokens_b, is_random_next, short, cfg, vocab, rng) -> Instance:
    n_a = len(tokens_a)
    if tokens_b is None:  # a packed MLM-only sequence
        tokens = [vocab.cls_id, *tokens_a, vocab.sep_id]
        token_types = [0] * len(tokens)
        candidates = list(range(1, n_a + 1))
    else:
        tokens = [vocab.cls_id, *tokens_a, vocab.sep_id, *tokens_b, vocab.sep_id]
        token_types = [0] * (n_a + 2) + [1] * (len(tokens_b) + 1)
        candidates = [*range(1, n_a + 1), *range(n_a + 2, len(tokens) - 1)]
    if cfg.masking == "dynamic":
        return Instance(tokens, token_types, [], [], int(is_random_next), short)
    masked, positions, labels = mask_tokens(tokens, cfg, vocab, rng, candidates)
    return Instance(masked, token_types, positions, labels, int(is_random_next), short)


def _target_length(cfg: InstanceConfig, max_num_tokens: int, rng: random.Random) -> tuple[int, bool]:
    if rng.random() < cfg.short_seq_prob:
        return rng.randint(2, max_num_tokens), True
    return max_num_tokens, False


def nsp_instances(
    doc: Document,
    partners: Sequence[Document],
    cfg: InstanceConfig,
    vocab: Vocab,
    rng: random.Random,
    counts: Counter | None = None,
) -> Iterator[Instance]:
    """Sentence-pair instances of one pass over ``doc``; random next sentences come from
    ``partners`` (other documents, never ``doc``)."""
    max_num_tokens = cfg.max_seq_length - 3
    # One target per pass over the document, as in the original.
    target, short = _target_length(cfg, max_num_tokens, rng)
    chunk_start, chunk_len = 0, 0
    i = 0
    while i < doc.num_sentences:
        chunk_len += doc.sentence_length(i)
        if i == doc.num_sentences - 1 or chunk_len >= target:
            n = i + 1 - chunk_start  # sentences in the chunk
            a_end = chunk_start + (rng.randint(1, n - 1) if n >= 2 else 1)
            tokens_a = doc.span(chunk_start, a_end)
            random_next = n == 1 or rng.random() < 0.5
            if random_next and not partners:
                if counts is not None:
                    counts["nsp_no_partner"] += 1
                random_next = False
                if n == 1:  # no continuation and no partner: nothing to pair with
                    chunk_start, chunk_len = i + 1, 0
                    i += 1
                    continue
            if random_next:
                target_b = target - len(tokens_a)
                other = partners[rng.randint(0, len(partners) - 1)]
                start = rng.randint(0, other.num_sentences - 1)
                end = start
                b_len = 0
                while end < other.num_sentences:
                    b_len += other.sentence_length(end)
                    end += 1
                    if b_len >= target_b:
                        break
                tokens_b = other.span(start, end)
                i = a_end - 1  # the chunk's unused sentences go back for the next instance
            else:
                tokens_b = doc.span(a_end, i + 1)
            tokens_a, tokens_b = truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
            yield _finish(tokens_a, tokens_b, random_next, short, cfg, vocab, rng)
            chunk_start, chunk_len = i + 1, 0
        i += 1


def packed_instances(doc: Document, cfg: InstanceConfig, vocab: Vocab, rng: random.Random) -> Iterator[Instance]:
    """MLM-only instances of one pass over ``doc``: consecutive sentences packed into full
    sequences (RoBERTa's FULL-SENTENCES, within one document)."""
    max_num_tokens = cfg.max_seq_length - 2
    target, short = _target_length(cfg, max_num_tokens, rng)
    current: list[int] = []
    for s in range(doc.num_sentences):
        sentence = doc.span(s, s + 1)
        if current and len(current) + len(sentence) > target:
            yield _finish(current, None, False, short, cfg, vocab, rng)
            current = []
            target, short = _target_length(cfg, max_num_tokens, rng)
        current.extend(sentence)
        # A sentence longer than a whole sequence is cut into full pieces.
        while len(current) > max_num_tokens:
            yield _finish(current[:max_num_tokens], None, False, short, cfg, vocab, rng)
            current = current[max_num_tokens:]
            target, short = _target_length(cfg, max_num_tokens, rng)
    if current:
        yield _finish(current, None, False, short, cfg, vocab, rng)


def bucket_instances(
    docs: Sequence[Document],
    cfg: InstanceConfig,
    vocab: Vocab,
    seed: int,
    dupe_factor: int,
    counts: Counter | None = None,
) -> Iterator[tuple[str, Instance]]:
    """Every instance of a bucket of documents, as ``(instance id, instance)``.

    ``docs`` must be in a fixed order (the caller sorts by id) and have distinct ids; each
    document's partners are the bucket's other documents. The instance id
    ``"{doc id}:{dupe}:{k}"`` is unique and stable.
    """
    for d, doc in enumerate(docs):
        partners = [*docs[:d], *docs[d + 1 :]] if cfg.nsp else ()
        for dupe in range(dupe_factor):
            rng = random.Random(stable_hash(seed, doc.id, dupe))
            made = nsp_instances(doc, partners, cfg, vocab, rng, counts) if cfg.nsp else packed_instances(doc, cfg, vocab, rng)
            for k, instance in enumerate(made):
                yield f"{doc.id}:{dupe}:{k}", instance
