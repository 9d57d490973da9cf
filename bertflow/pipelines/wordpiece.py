"""Learn a WordPiece vocabulary from word counts.

The counts-based learner of TensorFlow Text (``wordpiece_vocab.learn_from_word_counts``,
behind ``bert_vocab_from_dataset``), written from its description:

1. The alphabet: characters ranked by how often they occur (word counts as weights), the
   top ``max_unique_chars`` kept. Every kept character is in the vocabulary twice, as a
   word start ``c`` and as a continuation ``##c``, so every word made of kept characters
   can always be tokenized. Words with other characters are left out of learning.
2. For a count threshold ``t``, a few rounds of: count every candidate piece (any
   substring of a word that starts at a boundary of the word's current segmentation;
   in the first round, every substring), then walk the candidates from longest to
   shortest, keep those counted at least ``t`` times, and take a kept piece's count
   away from its prefixes (greedy longest-match tokenization would use the long piece
   there, never the prefix). The next round segments words with the kept pieces.
3. A binary search over ``t`` finds the lowest threshold whose vocabulary fits the
   requested size; the vocabulary of the threshold just below (which is larger) is
   then cut to exactly the requested size by dropping its least used pieces, so the
   result has exactly ``size`` entries whenever the words allow that many.
   The threshold never goes below ``min_piece_count`` (2, TF Text's ``lower_thresh``):
   at 1 every word seen once becomes a piece of its own.
4. Ours, beyond TF Text: when even the lowest threshold does not fill the size (few
   distinct words for a large vocabulary; TF Text then returns a smaller one), the room
   left is filled with the substrings shared by the most distinct words, which unseen
   words are made of.

Memory and time are bounded by the distinct words given (the caller cuts them to the
top ``max_words``), never by the corpus: this only ever sees ``(word, count)`` pairs.

    python -m bertflow.pipelines.wordpiece --word-counts word_counts.tsv --size 8000 --output vocab.txt
"""

from __future__ import annotations

import argparse
import logging
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from bertflow.contracts.layout import SPECIALS

log = logging.getLogger(__name__)

JOINER = "##"  # BERT's prefix for a piece that continues a word


@dataclass(frozen=True)
class LearnerConfig:
    max_token_length: int = 50  # longer words are not learned from (they tokenize to pieces)
    max_unique_chars: int = 1000  # size of the alphabet
    num_iterations: int = 4  # rounds of count-and-keep per threshold
    # The lowest threshold tried (TF Text's lower_thresh): at 1, every word seen once
    # would become a piece of its own, crowding out the pieces unseen words are made of.
    min_piece_count: int = 2


@dataclass
class LearnedVocab:
    tokens: list[str]  # reserved tokens, then the alphabet, then learned pieces
    threshold: int  # the count threshold the pieces were kept at
    alphabet: int  # characters kept (each is in the vocabulary as c and ##c)
    words_used: int  # distinct words learned from
    words_skipped: int  # distinct words left out (too long, or a character not kept)
    piece_counts: dict[str, int] = field(default_factory=dict, repr=False)


def tokenize_word(word: str, vocab: set[str] | frozenset[str]) -> list[str] | None:
    """Greedy longest-match-first WordPiece of one word (BERT's), or None when some part
    of the word has no piece in ``vocab``."""
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else JOINER + word[start:end]
            if piece in vocab:
                break
            end -= 1
        if end == start:
            return None
        pieces.append(piece)
        start = end
    return pieces


def _boundaries(word: str, vocab: set[str], longest: int) -> list[int] | None:
    """Start offsets of the pieces of ``word`` under ``vocab`` (``longest``: the most
    characters of any piece, the joiner not counted)."""
    if word in vocab:
        return [0]
    starts, start = [], 0
    while start < len(word):
        end = min(len(word), start + longest)
        while end > start:
            if (word[start:end] if start == 0 else JOINER + word[start:end]) in vocab:
                break
            end -= 1
        if end == start:
            return None
        starts.append(start)
        start = end
    return starts


def alphabet_of(word_counts: Iterable[tuple[str, int]], max_unique_chars: int) -> list[str]:
    """The ``max_unique_chars`` most frequent characters, weighted by word counts
    (ties broken by the character, so the result never depends on input order)."""
    chars: Counter[str] = Counter()
    for word, count in word_counts:
        for ch in word:
            chars[ch] += count
    ranked = sorted(chars.items(), key=lambda kv: (-kv[1], kv[0]))
    return sorted(ch for ch, _ in ranked[:max_unique_chars])


def _count_candidates(
    words: list[tuple[str, int]],
    vocab: frozenset[str] | None,
    max_len: int,
    bound: tuple[dict[str, int], int] | None = None,
) -> list[dict[str, int]]:
    """``candidates[n]``: pieces of ``n`` characters (the joiner not counted) -> how often
    they occur starting at a piece boundary of a word (at any offset when ``vocab`` is
    None). With ``bound = (first_counts, threshold)``, pieces whose every-offset count is
    under the threshold are not counted: they can never reach it."""
    # Every piece starting at a boundary is a prefix of the rest of the word from there.
    # Words share those rests ("##ing", "##ly"): count each distinct rest once, then
    # expand it into its prefixes.
    rests: dict[tuple[bool, str], int] = defaultdict(int)
    longest = max((len(p) - (2 if p.startswith(JOINER) else 0) for p in vocab), default=1) if vocab else 0
    for word, count in words:
        starts = range(len(word)) if vocab is None else (_boundaries(word, vocab, longest) or ())
        for start in starts:
            rests[start > 0, word[start:]] += count
    candidates: list[dict[str, int]] = [defaultdict(int) for _ in range(max_len + 1)]
    first, threshold = bound if bound else (None, 0)
    for (inside, rest), count in rests.items():
        prefix = JOINER if inside else ""
        for end in range(1, min(len(rest), max_len) + 1):
            piece = prefix + rest[:end]
            # A longer piece occurs no more often than its prefix: stop at the first
            # prefix that cannot reach the threshold.
            if first is not None and first.get(piece, 0) < threshold:
                break
            candidates[end][piece] += count
    return candidates


def _keep(candidates: list[dict[str, int]], threshold: int) -> dict[str, int]:
    """Walk the candidates from longest to shortest and keep those still counted at least
    ``threshold`` times once the longer kept pieces took their share."""
    kept: dict[str, int] = {}
    taken: dict[str, int] = defaultdict(int)  # occurrences that a longer kept piece covers
    for length in range(len(candidates) - 1, 0, -1):
        # Counts only ever shrink, so a piece below the threshold before any is taken
        # never passes: filter first, then look at what was taken.
        for piece, count in [pc for pc in candidates[length].items() if pc[1] >= threshold]:
            count -= taken.get(piece, 0)
            if count < threshold:
                continue
            if length > 1:  # single characters are in the alphabet already
                kept[piece] = count
            # Wherever this piece matches, greedy longest-match uses it rather than its
            # prefixes.
            offset = len(piece) - length  # 2 with the joiner, else 0
            for n in range(offset + 1, len(piece)):
                taken[piece[:n]] += count
    return kept


def _learn_with_threshold(
    words: list[tuple[str, int]],
    alphabet_tokens: frozenset[str],
    threshold: int,
    cfg: LearnerConfig,
    first_round: list[dict[str, int]],
    first_counts: dict[str, int],
) -> dict[str, int]:
    """Multi-character pieces kept at ``threshold``, with how often each would be used.
    ``first_round`` is the every-substring count (``first_counts`` the same, flat): it does
    not depend on the threshold."""
    kept = _keep(first_round, threshold)
    for _ in range(cfg.num_iterations - 1):
        vocab = alphabet_tokens.union(kept)
        candidates = _count_candidates(words, vocab, cfg.max_token_length, (first_counts, threshold))
        kept = _keep(candidates, threshold)
    return kept


def learn(
    word_counts: Iterable[tuple[str, int]],
    size: int,
    reserved: list[str],
    cfg: LearnerConfig = LearnerConfig(),
    char_counts: Iterable[tuple[str, int]] | None = None,
) -> LearnedVocab:
    """A vocabulary of ``size`` tokens (``reserved`` first) learned from ``(word, count)``.
    ``char_counts`` (character, occurrences), when given, picks the alphabet instead of the
    words: counted over every word, also those cut before learning.

    Fewer than ``size`` only when the words hold fewer distinct substrings seen twice.
    The result depends only on the set of pairs, never on their order.
    """
    pairs = sorted(((w, int(c)) for w, c in word_counts if w and c > 0), key=lambda wc: (-wc[1], wc[0]))
    if not pairs:
        raise ValueError("no words to learn a vocabulary from: the documents are empty")
    if len(set(reserved)) != len(reserved):
        raise ValueError("reserved tokens repeat")

    if char_counts is None:
        chars = alphabet_of(pairs, cfg.max_unique_chars)
    else:
        chars = alphabet_of(((ch, n) for ch, n in char_counts if len(ch) == 1), cfg.max_unique_chars)
    alphabet = chars + [JOINER + ch for ch in chars]
    room = size - len(reserved) - len(alphabet)
    if room < 0:
        raise ValueError(
            f"vocab_size {size} is smaller than the reserved tokens ({len(reserved)}) plus the "
            f"alphabet ({len(chars)} characters, each as c and ##c = {len(alphabet)}): raise the "
            f"vocab size or lower max_unique_chars"
        )
    allowed = set(chars)
    words = [(w, c) for w, c in pairs if len(w) <= cfg.max_token_length and allowed.issuperset(w)]
    skipped = len(pairs) - len(words)
    alphabet_tokens = frozenset(alphabet)

    # Pieces seen fewer than min_piece_count times in the first round are never kept (later
    # rounds count fewer occurrences): drop them now, most of the substrings of rare words.
    floor = max(1, cfg.min_piece_count)
    first_round = [
        {p: c for p, c in by_length.items() if c >= floor} for by_length in _count_candidates(words, None, cfg.max_token_length)
    ]
    first_counts = {piece: count for by_length in first_round for piece, count in by_length.items()}
    cache: dict[int, dict[str, int]] = {}

    def pieces_at(threshold: int) -> dict[str, int]:
        if threshold not in cache:
            learned = _learn_with_threshold(words, alphabet_tokens, threshold, cfg, first_round, first_counts)
            cache[threshold] = {p: c for p, c in learned.items() if p not in alphabet_tokens}
            log.info("threshold %d: %d pieces (room for %d)", threshold, len(cache[threshold]), room)
        return cache[threshold]

    def first_round_fits(threshold: int) -> bool:
        return sum(1 for p in _keep(first_round, threshold) if p not in alphabet_tokens) <= room

    # No piece is counted more often than in the first round: above that, nothing is kept.
    top = max(first_counts.values(), default=0) + 1
    # Every full evaluation costs a few passes over the words: start from the threshold
    # that the first round alone (counted once, cheap) would pick.
    guess = _lowest(first_round_fits, floor, max(floor, top))
    low = _lowest_fitting(lambda t: len(pieces_at(t)), room, floor, max(floor, top), guess)
    threshold = low
    learned = pieces_at(threshold)
    if len(learned) < room and threshold > floor and len(pieces_at(threshold - 1)) > len(learned):
        # The next lower threshold overshoots: keep its most used pieces, exactly filling
        # the vocabulary. Dropping a piece never makes a word untokenizable (the alphabet
        # is complete), it only splits it into shorter pieces.
        threshold -= 1
        learned = pieces_at(threshold)
    ranked = sorted(learned.items(), key=lambda pc: (-pc[1], pc[0]))[:room]
    if len(ranked) < room:
        # Even the lowest threshold leaves room: the words are few for this size. Fill it
        # with the substrings shared by the most distinct words ("##ness", "##ly", "un"),
        # at least two: unseen words are made of those.
        have = alphabet_tokens.union(learned)
        shared = _words_containing(words, first_counts, cfg.max_token_length)
        extra = sorted(((p, n) for p, n in shared.items() if n >= 2 and p not in have), key=lambda pn: (-pn[1], pn[0]))
        ranked += [(p, first_counts[p]) for p, _ in extra[: room - len(ranked)]]
    tokens = list(reserved) + alphabet + [p for p, _ in ranked]
    return LearnedVocab(
        tokens=tokens,
        threshold=threshold,
        alphabet=len(chars),
        words_used=len(words),
        words_skipped=skipped,
        piece_counts=dict(ranked),
    )


def _words_containing(words: list[tuple[str, int]], pieces: dict[str, int], max_len: int) -> Counter[str]:
    """How many distinct words contain each of ``pieces`` (at a word start, or inside as
    ##piece)."""
    found: Counter[str] = Counter()
    for word, _ in words:
        inside = {(JOINER if s else "") + word[s:e] for s in range(len(word)) for e in range(s + 1, min(len(word), s + max_len) + 1)}
        found.update(p for p in inside if p in pieces)
    return found


def _lowest(ok, low: int, high: int) -> int:
    """The lowest ``t`` in ``[low, high]`` with ``ok(t)``, for ``ok`` false then true
    (``high`` when none below it is)."""
    while low < high:
        mid = (low + high) // 2
        if ok(mid):
            high = mid
        else:
            low = mid + 1
    return low


def _lowest_fitting(size_at, room: int, floor: int, top: int, guess: int) -> int:
    """The lowest threshold in ``[floor, top]`` whose ``size_at`` is at most ``room``
    (``size_at(top)`` is). Piece counts fall roughly as a power of the threshold, so a try
    is interpolated on a log-log scale between the nearest thresholds known to fit and
    known not to; every bracket shrinks, so it ends."""
    low, high = floor - 1, top  # low: highest known not to fit; high: lowest known to fit
    t = min(max(guess, floor), top)
    while True:
        if size_at(t) <= room:
            high = t
        else:
            low = t
        if high - low <= 1:
            return high
        if low < floor:  # nothing below fits yet: step down fast
            t = max(floor, high // 4)
        else:
            n_low, n_high = math.log(size_at(low) + 1), math.log(size_at(high) + 1)
            share = (n_low - math.log(room + 1)) / (n_low - n_high) if n_low > n_high else 0.5
            t = round(math.exp(math.log(low) + share * (math.log(high) - math.log(low))))
        t = min(max(t, low + 1), high - 1)


def read_word_counts(lines: Iterable[str]) -> Iterable[tuple[str, int]]:
    """``word<TAB>count`` lines, as written by the vocab job's ``word_counts.tsv``."""
    for line in lines:
        word, _, count = line.rstrip("\n").rpartition("\t")
        if word:
            yield word, int(count)


def main(argv: list[str] | None = None) -> None:
    import fsspec

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--word-counts", required=True, help="word<TAB>count lines (any fsspec URL)")
    ap.add_argument("--size", type=int, required=True, help="vocabulary size, reserved tokens included")
    ap.add_argument("--reserved", nargs="*", default=list(SPECIALS))
    ap.add_argument("--output", required=True, help="vocab.txt to write")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with fsspec.open(args.word_counts, "r", encoding="utf-8") as f:
        result = learn(read_word_counts(f), args.size, args.reserved)
    with fsspec.open(args.output, "w", encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in result.tokens))
    log.info("%d tokens at threshold %d -> %s", len(result.tokens), result.threshold, args.output)


if __name__ == "__main__":
    main()
