"""Masked-LM predictions: static masks for a batch of sequences at once, and whole-word
masking sequence by sequence (see ``bertflow.pipelines.instances`` for the rules and where they
follow the original generator)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from bertflow.pipelines.config import InstanceConfig
from bertflow.pipelines.tokens import Vocab


def num_to_predict(length: int, cfg: InstanceConfig) -> int:
    """How many positions a sequence of ``length`` tokens (specials included) masks."""
    return min(cfg.max_predictions_per_seq, max(1, int(round(length * cfg.masked_lm_prob))))


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
