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
import random
from collections import Counter
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa

from bertflow.contracts.hashing import stable_hash
from bertflow.contracts.layout import EXAMPLES_SCHEMA
from bertflow.pipelines.config import InstanceConfig
from bertflow.pipelines.masking import MaskDraws, mask_batch, whole_word_mask
from bertflow.pipelines.tokens import Document, Vocab, ranges


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
    input_ids = source[ranges(starts, lengths)]
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


def make_batches(docs: Sequence[Document], cfg: InstanceConfig, vocab: Vocab, seed: int, dupe_factor: int,
                 counts: Counter | None = None, docs_per_batch: int = 32) -> Iterator[InstanceBatch]:  # fmt: skip
    """Every instance of a bucket of documents, as ``InstanceBatch``es of
    ``docs_per_batch`` documents' instances (partners still from the whole bucket), so that
    the masking arrays stay small whatever the bucket; the cut changes nothing else.

    ``docs`` must be in a fixed order (the caller sorts by id) and have distinct ids; each
    document's partners are the bucket's other documents. Pass ``dupe`` of document ``doc``
    draws from ``random.Random(stable_hash(seed, doc.id, dupe))``: first a seed for its
    masks, then its layout. ``counts["nsp_no_partner"]`` counts the pairs that wanted a
    random next sentence and had no other document to take it from.
    """
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


# Instances on their way to the shard writers (``shards.Runs``): the examples columns, and
# `_order` and `_iid` that order the rows of a shard (not written).
SHUFFLED = pa.schema([*EXAMPLES_SCHEMA, ("_order", pa.uint64()), ("_iid", pa.string())])


def batch_table(batch: InstanceBatch, order: np.ndarray) -> pa.Table:
    """A batch as Arrow columns of ``SHUFFLED``; ``order``: each instance's ``_order``."""

    def lists(values: np.ndarray, offsets: np.ndarray, type_: pa.DataType) -> pa.Array:
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values, type=type_))

    columns = [
        lists(batch.input_ids, batch.offsets, pa.int32()),
        lists(batch.token_type_ids, batch.offsets, pa.int8()),
        lists(batch.masked_lm_positions, batch.mask_offsets, pa.int32()),
        lists(batch.masked_lm_ids, batch.mask_offsets, pa.int32()),
        pa.array(batch.next_sentence_label, pa.int8()),
        pa.array(order, pa.uint64()),
        pa.array(batch.ids, pa.string()),
    ]
    return pa.Table.from_arrays(columns, schema=SHUFFLED)
