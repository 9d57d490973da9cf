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
  not depend on the order in which documents arrive. It draws the pass's layout, and a
  seed for a numpy generator that draws the pass's masks.
* Speed: instances are laid out as spans of the bucket's tokens, gathered into flat numpy
  columns for a whole bucket at once, and masked at once (``mask_batch``): the n masked
  positions of a sequence are its candidates with the n smallest uniform keys (a uniform
  random subset, as the original's shuffle-then-take-n), and one uniform per position picks
  [MASK] / kept / random. ``truncate_seq_pair`` is computed in closed form (how many tokens
  each side loses is not random; front or back is a fair coin per token, as in the
  original). Whole-word masking stays a Python loop per sequence.
* ``nsp=False``: no sentence pairs; sentences are packed into full sequences
  ``[CLS] s1 s2 ... [SEP]`` within a document, as RoBERTa's FULL-SENTENCES (a sentence longer
  than a sequence is cut into pieces). ``short_seq_prob`` still applies, per sequence; set
  it to 0 for RoBERTa's recipe. ``next_sentence_label`` is 0 and means nothing there.
* ``masking="dynamic"``: instances are stored unmasked (empty ``masked_lm_positions`` /
  ``masked_lm_ids``) and the trainer masks on the fly, a fresh mask every epoch.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import numpy as np

from contracts.hashing import stable_hash
from contracts.layout import SpecialIds, read_vocab
from pipelines.config import InstanceConfig


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
    def from_tokens(cls, tokens: Sequence[str], where: str = "vocab.txt") -> "Vocab":
        ids = SpecialIds.of(list(tokens), where)
        continuation = np.fromiter((t.startswith("##") for t in tokens), dtype=bool, count=len(tokens))
        return cls(ids.size, ids.cls, ids.sep, ids.mask, continuation)

    @classmethod
    def read(cls, url: str) -> "Vocab":
        """The vocabulary of the vocab.txt at ``url``."""
        return cls.from_tokens(read_vocab(url), url)


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


class SentenceEncoder:
    """Token ids of many sentences, each distinct word encoded once.

    BERT's normalizer works character by character and its pre-tokenizer splits at every
    space, so a sentence's ids are its space-separated words' ids back to back. Words
    repeat (Zipf), so the ids of the words seen lately are kept, and only new words go
    through ``tokenizers``; the rest is dict lookups and numpy gathers. The cache is
    cleared before it would pass ``max_words`` words (one call's words are always kept),
    so memory does not grow with the corpus.

    A tokenizer whose pre-tokenizer or normalizer is not BERT's (or which has an added
    token with a space in it) may tokenize across spaces: then every sentence goes through
    ``tokenizers`` whole.
    """

    def __init__(self, tokenizer, max_words: int = 1 << 18):  # some 30 MB of words and ids
        self.tokenizer = tokenizer
        self.max_words = max_words
        self.by_word = type(tokenizer.pre_tokenizer).__name__ == "BertPreTokenizer" and (
            tokenizer.normalizer is None or type(tokenizer.normalizer).__name__ == "BertNormalizer"
        ) and not any(" " in t.content for t in tokenizer.get_added_tokens_decoder().values())
        self.words = 0  # non-empty space-separated words encoded so far (a counter)
        self._clear()

    def _clear(self):
        self.index: dict[str, int] = {}  # word -> its row in starts / lengths
        self.starts = np.zeros(0, np.int64)  # where each word's ids start in `ids`
        self.lengths = np.zeros(0, np.int64)
        self.ids = np.zeros(0, np.int32)

    def _encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(all ids back to back, ids per text), from ``tokenizers`` directly."""
        ids = [e.ids for e in self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        return np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum())), lengths

    def encode(self, sentences: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(every sentence's ids back to back as int32, ids per sentence)."""
        if not self.by_word:
            self.words += sum(map(len, map(str.split, sentences)))
            return self._encode(sentences)
        split = [s.split(" ") for s in sentences]
        words = list(itertools.chain.from_iterable(split))
        self.words += len(words) - words.count("")
        distinct = set(words)
        new = list(distinct - self.index.keys())
        if len(self.index) + len(new) > self.max_words:
            self._clear()
            new = list(distinct)
        if new:
            ids, lengths = self._encode(new)
            starts = np.zeros(len(new), np.int64)
            np.cumsum(lengths[:-1], out=starts[1:])
            self.index.update(zip(new, range(len(self.index), len(self.index) + len(new))))
            self.starts = np.concatenate([self.starts, starts + len(self.ids)])
            self.lengths = np.concatenate([self.lengths, lengths])
            self.ids = np.concatenate([self.ids, ids])
        rows = np.fromiter(map(self.index.__getitem__, words), dtype=np.int64, count=len(words))
        word_lengths = self.lengths[rows]
        tokens = self.ids[_ranges(self.starts[rows], word_lengths)]
        # every sentence has at least one word ("".split(" ") == [""])
        first_word = np.zeros(len(split), np.int64)
        np.cumsum(np.fromiter(map(len, split), dtype=np.int64, count=len(split))[:-1], out=first_word[1:])
        return tokens, np.add.reduceat(word_lengths, first_word) if len(split) else np.zeros(0, np.int64)


def tokenize_document(encoder: SentenceEncoder, doc_id: str, sentences: Sequence[str]) -> Document | None:
    """Tokenize a document's sentences (no special tokens, no truncation, no padding)."""
    return tokenize_documents(encoder, [(doc_id, sentences)])[0]


def tokenize_documents(encoder: SentenceEncoder, docs: Sequence[tuple[str, Sequence[str]]]) -> list[Document | None]:
    """Tokenize many documents (``(id, sentences)``) in one call over all their sentences:
    the per-call overhead is paid once per bucket, not once per document. ``None`` where a
    document has no tokens."""
    tokens, lengths = encoder.encode([s for _, doc in docs for s in doc])
    starts = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    out, k = [], 0
    for doc_id, doc in docs:
        kept = lengths[k : k + len(doc)]
        kept = kept[kept > 0]  # empty sentences are dropped
        if not len(kept):
            out.append(None)
        else:
            bounds = np.zeros(len(kept) + 1, dtype=np.int64)
            np.cumsum(kept, out=bounds[1:])
            out.append(Document(doc_id, tokens[starts[k] : starts[k + len(doc)]], bounds))
        k += len(doc)
    return out


@dataclass
class Instance:
    input_ids: list[int]
    token_type_ids: list[int]
    masked_lm_positions: list[int]
    masked_lm_ids: list[int]
    next_sentence_label: int  # 1: B is a random next sentence, 0: B is the true continuation
    short_target: bool  # drawn from a short target length (for the statistics)


def _trims(len_a: int, len_b: int, max_num_tokens: int, rng: random.Random) -> tuple[int, int, int, int]:
    """``truncate_seq_pair`` in closed form: (from A's front, A's back, B's front, B's back).

    The original trims the longer segment (B on a tie) one token at a time until the pair
    fits, each time from the front or the back with probability 1/2. Which segment loses
    how many tokens does not depend on chance, so it is computed; the front/back coin
    flips of a segment are its count of one bits in a random word (the same binomial law).
    """
    excess = len_a + len_b - max_num_tokens
    if excess <= 0:
        return 0, 0, 0, 0
    gap = len_a - len_b
    if gap > 0:  # A alone until the two are equal, then B, A, B, ... in turn
        first = min(excess, gap)
        rest = excess - first
        cut_a, cut_b = first + rest // 2, (rest + 1) // 2
    else:  # B alone until equal, then B, A, B, ...
        first = min(excess, -gap)
        rest = excess - first
        cut_a, cut_b = rest // 2, first + (rest + 1) // 2
    front_a = rng.getrandbits(cut_a).bit_count() if cut_a else 0
    front_b = rng.getrandbits(cut_b).bit_count() if cut_b else 0
    return front_a, cut_a - front_a, front_b, cut_b - front_b


def truncate_seq_pair(tokens_a: list[int], tokens_b: list[int], max_num_tokens: int, rng: random.Random):
    """Trim the longer of the two segments, one token at a time from its front or back at
    random, until both fit in ``max_num_tokens``. Returns the trimmed (a, b)."""
    fa, ba, fb, bb = _trims(len(tokens_a), len(tokens_b), max_num_tokens, rng)
    return tokens_a[fa : len(tokens_a) - ba], tokens_b[fb : len(tokens_b) - bb]


def num_to_predict(length: int, cfg: InstanceConfig) -> int:
    """How many positions a sequence of ``length`` tokens (specials included) masks."""
    return min(cfg.max_predictions_per_seq, max(1, int(round(length * cfg.masked_lm_prob))))


# --- masking --------------------------------------------------------------------------------


@dataclass
class MaskDraws:
    """The random numbers masking uses, one of each per token position of a batch:
    ``select`` ranks the candidates (the n smallest are masked), ``action`` picks [MASK]
    (< 0.8), kept (0.8-0.9) or random (>= 0.9), ``random_id`` is the random token."""

    select: np.ndarray  # float64
    action: np.ndarray  # float64
    random_id: np.ndarray  # int32

    @classmethod
    def draw(cls, seed: int, n: int, vocab_size: int) -> "MaskDraws":
        g = np.random.Generator(np.random.PCG64(seed))
        uniform = g.random(2 * n)  # the same numbers as two calls of n, in one
        return cls(uniform[:n], uniform[n:], g.integers(0, vocab_size, n, dtype=np.int32))

    @classmethod
    def concat(cls, parts: Sequence["MaskDraws"]) -> "MaskDraws":
        if not parts:
            return cls(np.zeros(0), np.zeros(0), np.zeros(0, np.int32))
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("select", "action", "random_id")))


def mask_batch(ids: np.ndarray, offsets: np.ndarray, special: np.ndarray, cfg: InstanceConfig, vocab: Vocab, draws: MaskDraws):
    """Static masks for a batch of sequences at once (numpy, no Python loop per token).

    ``ids``: every sequence's ids back to back, sequence i is ``ids[offsets[i]:offsets[i+1]]``;
    ``special``: True where a position may not be masked ([CLS], [SEP]). Each sequence
    masks ``num_to_predict`` of its other positions, a uniform random subset (those with the
    smallest ``draws.select``; the original shuffles the candidates and takes the first n,
    the same law). Returns (masked ids, positions, original ids, positions offsets), with
    positions ascending within each sequence.
    """
    n = len(offsets) - 1
    lengths = np.diff(offsets)
    if n == 0 or lengths.max(initial=0) == 0:
        return ids.copy(), np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(n + 1, np.int64)
    width = int(lengths.max())
    want = np.minimum(cfg.max_predictions_per_seq, np.maximum(1, np.rint(lengths * cfg.masked_lm_prob).astype(np.int64)))
    row = np.repeat(np.arange(n), lengths)
    col = np.arange(len(ids)) - offsets[row]
    # Rank keys in a (sequences x positions) table: candidates in [0, 1), specials 2,
    # padding 3, so that neither is ever among the n smallest of a candidate.
    keys = np.full((n, width), 3.0)
    keys[row, col] = np.where(special, 2.0, draws.select)
    k = min(cfg.max_predictions_per_seq, width)
    cols = np.argpartition(keys, k - 1, axis=1)[:, :k] if k < width else np.argsort(keys, axis=1)
    ranked = np.take_along_axis(keys, cols, axis=1)
    order = np.argsort(ranked, axis=1, kind="stable")
    cols, ranked = np.take_along_axis(cols, order, axis=1), np.take_along_axis(ranked, order, axis=1)
    chosen = (np.arange(cols.shape[1])[None, :] < want[:, None]) & (ranked < 2.0)
    # Ascending positions per sequence: unchosen slots sort last, then are dropped.
    cols = np.sort(np.where(chosen, cols, width), axis=1)
    count = chosen.sum(axis=1)
    keep = np.arange(cols.shape[1])[None, :] < count[:, None]
    positions = cols[keep].astype(np.int32)  # row-major: grouped by sequence
    where = offsets[:-1].repeat(count) + positions  # flat index into ids
    labels = ids[where]
    action = draws.action[where]
    out = ids.copy()
    out[where[action < 0.8]] = vocab.mask_id
    rand = action >= 0.9
    out[where[rand]] = draws.random_id[where[rand]]
    pos_offsets = np.zeros(n + 1, np.int64)
    np.cumsum(count, out=pos_offsets[1:])
    return out, positions, labels.astype(np.int32), pos_offsets


def whole_word_mask(tokens: list[int], cfg: InstanceConfig, vocab: Vocab, rng: random.Random):
    """Whole-word masking of one sequence (a word: a piece and its ``##`` continuations is
    masked whole or not at all). Returns (masked tokens, positions ascending, original ids)."""
    special = (vocab.cls_id, vocab.sep_id)
    n = num_to_predict(len(tokens), cfg)
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


def mask_tokens(tokens: list[int], cfg: InstanceConfig, vocab: Vocab, rng: random.Random):
    """Masked-LM predictions for one sequence: (masked tokens, positions, original ids),
    positions ascending. The same code as the batched path (``mask_batch``), for one row."""
    if cfg.do_whole_word_mask:
        return whole_word_mask(tokens, cfg, vocab, rng)
    ids = np.asarray(tokens, dtype=np.int32)
    special = (ids == vocab.cls_id) | (ids == vocab.sep_id)
    draws = MaskDraws.draw(rng.getrandbits(64), len(ids), vocab.size)
    out, positions, labels, _ = mask_batch(ids, np.array([0, len(ids)]), special, cfg, vocab, draws)
    return out.tolist(), positions.tolist(), labels.tolist()


# --- instance layout: spans of the bucket's tokens ---------------------------------------------
#
# An instance is described by where its segments lie in the bucket's tokens (all documents
# back to back): (a_lo, a_hi, b_lo, b_hi, random_next, short). Its ids are gathered from
# those spans for a whole batch at once (``assemble``).


def _randint(rng: random.Random, a: int, b: int) -> int:
    """``rng.randint(a, b)``: the same draws as CPython 3.11's (``getrandbits`` of
    the width's bit length until one is below it), written here so that the output does
    not depend on the interpreter's private ``_randbelow``, and without its call layers."""
    n = b - a + 1
    k = n.bit_length()
    r = rng.getrandbits(k)
    while r >= n:
        r = rng.getrandbits(k)
    return a + r


def _target_length(cfg: InstanceConfig, max_num_tokens: int, rng: random.Random) -> tuple[int, bool]:
    if rng.random() < cfg.short_seq_prob:
        return _randint(rng, 2, max_num_tokens), True
    return max_num_tokens, False


def nsp_spans(d: int, bounds: Sequence[list[int]], cfg: InstanceConfig, rng: random.Random, counts: Counter | None = None):
    """Sentence-pair spans of one pass over document ``d``. ``bounds[j]``: where document
    j's sentences start in the bucket's tokens, plus its end. Random next sentences come from
    the other documents (``rng.randint`` over them, in order, skipping ``d``)."""
    own = bounds[d]
    num_sentences = len(own) - 1
    partners = len(bounds) - 1
    max_num_tokens = cfg.max_seq_length - 3
    # One target per pass over the document, as in the original.
    target, short = _target_length(cfg, max_num_tokens, rng)
    chunk_start = 0
    while chunk_start < num_sentences:
        # the chunk ends at the first sentence that brings it to the target, or the last
        i = min(bisect.bisect_left(own, own[chunk_start] + target, chunk_start + 1), num_sentences) - 1
        n = i + 1 - chunk_start  # sentences in the chunk
        a_end = chunk_start + (_randint(rng, 1, n - 1) if n >= 2 else 1)
        a_lo, a_hi = own[chunk_start], own[a_end]
        random_next = n == 1 or rng.random() < 0.5
        if random_next and not partners:
            if counts is not None:
                counts["nsp_no_partner"] += 1
            random_next = False
            if n == 1:  # no continuation and no partner: nothing to pair with
                chunk_start = i + 1
                continue
        if random_next:
            target_b = target - (a_hi - a_lo)
            k = _randint(rng, 0, partners - 1)
            other = bounds[k if k < d else k + 1]
            start = _randint(rng, 0, len(other) - 2)
            # whole sentences until B reaches its target, or the end
            end = min(bisect.bisect_left(other, other[start] + target_b, start + 1), len(other) - 1)
            b_lo, b_hi = other[start], other[end]
            i = a_end - 1  # the chunk's unused sentences go back for the next instance
        else:
            b_lo, b_hi = a_hi, own[i + 1]
        fa, ba, fb, bb = _trims(a_hi - a_lo, b_hi - b_lo, max_num_tokens, rng)
        yield a_lo + fa, a_hi - ba, b_lo + fb, b_hi - bb, random_next, short
        chunk_start = i + 1


def packed_spans(own: list[int], cfg: InstanceConfig, rng: random.Random):
    """MLM-only spans of one pass over a document whose sentence bounds are ``own``:
    consecutive sentences packed into full sequences (RoBERTa's FULL-SENTENCES, within one
    document); a sentence longer than a sequence is cut into full pieces."""
    max_num_tokens = cfg.max_seq_length - 2
    target, short = _target_length(cfg, max_num_tokens, rng)
    lo = hi = own[0]
    for s in range(len(own) - 1):
        s_lo, s_hi = own[s], own[s + 1]
        if hi > lo and (hi - lo) + (s_hi - s_lo) > target:
            yield lo, hi, 0, 0, False, short
            lo = s_lo
            target, short = _target_length(cfg, max_num_tokens, rng)
        hi = s_hi
        while hi - lo > max_num_tokens:
            yield lo, lo + max_num_tokens, 0, 0, False, short
            lo += max_num_tokens
            target, short = _target_length(cfg, max_num_tokens, rng)
    if hi > lo:
        yield lo, hi, 0, 0, False, short


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenation of ``arange(s, s + n)`` for every (s, n), without a Python loop."""
    ends = np.cumsum(lengths)
    return np.arange(int(ends[-1]) if len(ends) else 0) - np.repeat(ends - lengths - starts, lengths)


@dataclass
class InstanceBatch:
    """Instances as flat columns: instance i is ``input_ids[offsets[i]:offsets[i+1]]``, its
    predictions ``masked_lm_*[mask_offsets[i]:mask_offsets[i+1]]``."""

    ids: list[str]  # "{doc id}:{dupe}:{k}", unique and stable
    input_ids: np.ndarray  # int32
    token_type_ids: np.ndarray  # int8
    offsets: np.ndarray  # int64
    masked_lm_positions: np.ndarray  # int32
    masked_lm_ids: np.ndarray  # int32
    mask_offsets: np.ndarray  # int64
    next_sentence_label: np.ndarray  # int8
    short_target: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.ids)

    def instances(self) -> Iterator[Instance]:
        o, m = self.offsets.tolist(), self.mask_offsets.tolist()
        ids, types = self.input_ids.tolist(), self.token_type_ids.tolist()
        pos, lab = self.masked_lm_positions.tolist(), self.masked_lm_ids.tolist()
        for i, (label, short) in enumerate(zip(self.next_sentence_label.tolist(), self.short_target.tolist())):
            yield Instance(ids[o[i] : o[i + 1]], types[o[i] : o[i + 1]], pos[m[i] : m[i + 1]], lab[m[i] : m[i + 1]], label, short)


def assemble(tokens: np.ndarray, spans: list[tuple], ids: list[str], passes: list[tuple[int, int]], cfg: InstanceConfig, vocab: Vocab) -> InstanceBatch:
    """Gather ``[CLS] A [SEP] B [SEP]`` (or ``[CLS] A [SEP]`` when packed) for every span
    at once, then mask. ``passes``: (instances, mask seed) of each pass, in order; a pass's
    masks come from its own seed, so they do not depend on what else is in the batch."""
    n = len(spans)
    s = np.array(spans, dtype=np.int64).reshape(n, 6)
    a_lo, a_len, b_lo, b_len = s[:, 0], s[:, 1] - s[:, 0], s[:, 2], s[:, 3] - s[:, 2]
    cls, sep = len(tokens), len(tokens) + 1  # where the specials are in `source`
    source = np.concatenate([tokens.astype(np.int32), np.array([vocab.cls_id, vocab.sep_id], np.int32)])
    ones = np.ones(n, np.int64)
    # Five pieces per instance: [CLS], A, [SEP], B, [SEP] (B and its [SEP] empty when packed).
    starts = np.stack([cls * ones, a_lo, sep * ones, b_lo, sep * ones], axis=1).ravel()
    lengths = np.stack([ones, a_len, ones, b_len, ones if cfg.nsp else 0 * ones], axis=1).ravel()
    input_ids = source[_ranges(starts, lengths)]
    token_type_ids = np.repeat(np.tile(np.array([0, 0, 0, 1, 1], np.int8), n), lengths)
    per = lengths.reshape(n, 5).sum(axis=1)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(per, out=offsets[1:])
    label = s[:, 4].astype(np.int8)
    short = s[:, 5].astype(bool)
    if cfg.masking == "dynamic":
        empty = np.zeros(0, np.int32)
        return InstanceBatch(ids, input_ids, token_type_ids, offsets, empty, empty, np.zeros(n + 1, np.int64), label, short)
    if cfg.do_whole_word_mask:
        return _whole_word_batch(ids, input_ids, token_type_ids, offsets, passes, label, short, cfg, vocab)
    special = np.zeros(len(input_ids), bool)
    special[offsets[:-1]] = True  # [CLS]
    special[offsets[1:] - 1] = True  # the last [SEP]
    if cfg.nsp:
        special[offsets[:-1] + 1 + a_len] = True  # the [SEP] after A
    draws, first = [], 0
    for count, seed in passes:
        if count:
            draws.append(MaskDraws.draw(seed, int(offsets[first + count] - offsets[first]), vocab.size))
        first += count
    masked, positions, labels, mask_offsets = mask_batch(input_ids, offsets, special, cfg, vocab, MaskDraws.concat(draws))
    return InstanceBatch(ids, masked, token_type_ids, offsets, positions, labels, mask_offsets, label, short)


def _whole_word_batch(ids, input_ids, token_type_ids, offsets, passes, label, short, cfg, vocab) -> InstanceBatch:
    """Whole-word masking, sequence by sequence in Python (an option; the default path is
    ``mask_batch``); each pass's sequences draw from one ``random.Random`` of its seed."""
    out, positions, labels, counts = [], [], [], []
    o, tokens, first = offsets.tolist(), input_ids.tolist(), 0
    for count, seed in passes:
        rng = random.Random(seed)
        for i in range(first, first + count):
            masked, pos, lab = whole_word_mask(tokens[o[i] : o[i + 1]], cfg, vocab, rng)
            out.extend(masked)
            positions.extend(pos)
            labels.extend(lab)
            counts.append(len(pos))
        first += count
    mask_offsets = np.zeros(len(ids) + 1, np.int64)
    np.cumsum(counts, out=mask_offsets[1:])
    return InstanceBatch(ids, np.array(out, np.int32), token_type_ids, offsets, np.array(positions, np.int32),
                         np.array(labels, np.int32), mask_offsets, label, short)  # fmt: skip


def _bucket_tokens(docs: Sequence[Document]) -> tuple[np.ndarray, list[list[int]]]:
    """All documents' tokens back to back, and each one's sentence bounds in them."""
    tokens = np.concatenate([d.tokens for d in docs]) if docs else np.zeros(0, np.int32)
    bounds, start = [], 0
    for d in docs:
        bounds.append((d.bounds + start).tolist())
        start += len(d.tokens)
    return tokens, bounds


def make_batch(docs: Sequence[Document], cfg: InstanceConfig, vocab: Vocab, seed: int, dupe_factor: int, counts: Counter | None = None) -> InstanceBatch:
    """Every instance of a bucket of documents, as one ``InstanceBatch``.

    ``docs`` must be in a fixed order (the caller sorts by id) and have distinct ids; each
    document's partners are the bucket's other documents. Pass ``dupe`` of document ``doc``
    draws from ``random.Random(stable_hash(seed, doc.id, dupe))``: first a seed for its
    masks, then its layout.
    """
    tokens, bounds = _bucket_tokens(docs)
    return _batch_of(docs, range(len(docs)), tokens, bounds, cfg, vocab, seed, dupe_factor, counts)


def make_batches(docs: Sequence[Document], cfg: InstanceConfig, vocab: Vocab, seed: int, dupe_factor: int,
                 counts: Counter | None = None, docs_per_batch: int = 32) -> Iterator[InstanceBatch]:  # fmt: skip
    """``make_batch``'s instances, made ``docs_per_batch`` documents at a time (partners still
    from the whole bucket): the same instances, with a bounded working set (the masking
    arrays of a whole bucket of long documents at dupe 10 would be hundreds of MB)."""
    tokens, bounds = _bucket_tokens(docs)
    for first in range(0, len(docs), docs_per_batch):
        which = range(first, min(first + docs_per_batch, len(docs)))
        yield _batch_of(docs, which, tokens, bounds, cfg, vocab, seed, dupe_factor, counts)


def _batch_of(docs, which, tokens, bounds, cfg, vocab, seed, dupe_factor, counts) -> InstanceBatch:
    spans: list[tuple] = []
    ids: list[str] = []
    passes: list[tuple[int, int]] = []
    for d in which:
        doc = docs[d]
        for dupe in range(dupe_factor):
            rng = random.Random(stable_hash(seed, doc.id, dupe))
            mask_seed = rng.getrandbits(64)
            before = len(spans)
            spans.extend(nsp_spans(d, bounds, cfg, rng, counts) if cfg.nsp else packed_spans(bounds[d], cfg, rng))
            made = len(spans) - before
            ids.extend(f"{doc.id}:{dupe}:{k}" for k in range(made))
            passes.append((made, mask_seed))
    return assemble(tokens, spans, ids, passes, cfg, vocab)


def bucket_instances(
    docs: Sequence[Document],
    cfg: InstanceConfig,
    vocab: Vocab,
    seed: int,
    dupe_factor: int,
    counts: Counter | None = None,
) -> Iterator[tuple[str, Instance]]:
    """Every instance of a bucket, as ``(instance id, instance)`` (``make_batch``, row by
    row). The instance id ``"{doc id}:{dupe}:{k}"`` is unique and stable."""
    batch = make_batch(docs, cfg, vocab, seed, dupe_factor, counts)
    yield from zip(batch.ids, batch.instances())


def nsp_instances(doc: Document, partners: Sequence[Document], cfg: InstanceConfig, vocab: Vocab, rng: random.Random, counts: Counter | None = None) -> list[Instance]:
    """Sentence-pair instances of one pass over ``doc``; random next sentences come from
    ``partners`` (other documents, never ``doc``)."""
    tokens, bounds = _bucket_tokens([doc, *partners])
    mask_seed = rng.getrandbits(64)
    spans = list(nsp_spans(0, bounds, cfg, rng, counts))
    batch = assemble(tokens, spans, [str(k) for k in range(len(spans))], [(len(spans), mask_seed)], cfg, vocab)
    return list(batch.instances())


def packed_instances(doc: Document, cfg: InstanceConfig, vocab: Vocab, rng: random.Random) -> list[Instance]:
    """MLM-only instances of one pass over ``doc`` (see ``packed_spans``)."""
    tokens, bounds = _bucket_tokens([doc])
    mask_seed = rng.getrandbits(64)
    spans = list(packed_spans(bounds[0], cfg, rng))
    batch = assemble(tokens, spans, [str(k) for k in range(len(spans))], [(len(spans), mask_seed)], cfg, vocab)
    return list(batch.instances())
