"""The counts-based WordPiece learner: hand cases, and real book text."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from bertflow.pipelines.bert_tokenizer import WordSplitter, build_tokenizer, reserved_tokens
from bertflow.pipelines.wordpiece import LearnerConfig, alphabet_of, learn, tokenize_word

BOOKS = sorted((Path(__file__).resolve().parents[1] / "data" / "books").glob("*.txt"))
SPECIALS = reserved_tokens(0)  # [PAD] [UNK] [CLS] [SEP] [MASK]


def alphabet_size(words) -> int:
    return 2 * len(alphabet_of(words, 1000))


def test_reserved_layout_follows_bert_base():
    assert reserved_tokens(0) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    r = reserved_tokens(994)
    assert r[0] == "[PAD]" and r[1] == "[unused0]" and r[99] == "[unused98]"
    assert r[100:104] == ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] and r[104] == "[unused99]"
    assert r[-1] == "[unused993]" and len(r) == 999


def test_one_frequent_word_is_one_piece_and_its_prefixes_are_not_learned():
    words = [("abcd", 10)]
    size = len(SPECIALS) + alphabet_size(words) + 1
    v = learn(words, size, SPECIALS)
    # Every substring is counted 10 times in the first round, but greedy longest-match
    # would use "abcd" wherever "ab" or "abc" match: only the whole word is learned.
    assert v.tokens[: len(SPECIALS)] == SPECIALS
    assert v.tokens[len(SPECIALS) :] == ["a", "b", "c", "d", "##a", "##b", "##c", "##d", "abcd"]
    assert tokenize_word("abcd", set(v.tokens)) == ["abcd"]


def test_shared_suffix_is_learned_before_rare_whole_words():
    words = [("walking", 30), ("talking", 30), ("jumping", 30), ("walk", 40), ("talk", 40), ("jump", 40)]
    base = len(SPECIALS) + alphabet_size(words)
    v = learn(words, base + 4, SPECIALS)
    learned = v.tokens[base:]
    assert len(learned) == 4
    # "##ing" serves 90 occurrences; the stems serve 70 each; a whole "walking" only 30.
    assert "##ing" in learned and {"walk", "talk", "jump"} <= set(learned)
    assert tokenize_word("walking", set(v.tokens)) == ["walk", "##ing"]


def test_reaches_exactly_the_requested_size_and_every_word_tokenizes():
    rng = random.Random(0)
    letters = "abcdefghij"
    words = Counter()
    for _ in range(3000):
        w = "".join(rng.choice(letters) for _ in range(rng.randint(1, 8)))
        words[w] += rng.randint(1, 50)
    base = len(SPECIALS) + alphabet_size(words.items())
    for size in (base, base + 1, base + 37, base + 500):
        v = learn(words.items(), size, SPECIALS)
        assert len(v.tokens) == size and len(set(v.tokens)) == size
        vocab = set(v.tokens)
        assert all(tokenize_word(w, vocab) for w in words)


def test_result_does_not_depend_on_input_order():
    words = Counter(WordSplitter(True)(BOOKS[0].read_text(encoding="utf-8")[:200_000]))
    pairs = list(words.items())
    a = learn(pairs, 1500, SPECIALS).tokens
    random.Random(1).shuffle(pairs)
    assert learn(pairs, 1500, SPECIALS).tokens == a


def test_too_small_a_size_says_what_to_change():
    with pytest.raises(ValueError, match="raise the vocab size or lower max_unique_chars"):
        learn([("hello", 3), ("world", 2)], 10, SPECIALS)
    with pytest.raises(ValueError, match="no words"):
        learn([], 100, SPECIALS)


def test_rare_characters_beyond_the_alphabet_are_left_out():
    words = [("aab", 50), ("ab", 40), ("abé", 1)]
    v = learn(words, 5 + 2 * 2 + 2, SPECIALS, LearnerConfig(max_unique_chars=2))
    assert "é" not in v.tokens and v.words_skipped == 1 and v.alphabet == 2


def test_on_books_tokenizes_heldout_text_sensibly():
    """Learn 4000 tokens from five novels; the sixth, never seen, tokenizes into few pieces
    per word, with no [UNK], and our segmentation equals the final tokenizer's."""
    split = WordSplitter(lowercase=True)
    counts = Counter()
    for book in BOOKS[:-1]:
        counts.update(split(book.read_text(encoding="utf-8")))
    v = learn(counts.items(), 4000, SPECIALS)
    assert len(v.tokens) == 4000
    vocab = set(v.tokens)
    for w in ("the", "and", "elizabeth", "##ing", "##s", ",", "."):
        assert w in vocab

    heldout = BOOKS[-1].read_text(encoding="utf-8")[:300_000]
    words = split(heldout)
    pieces = [tokenize_word(w, vocab) for w in words]
    assert all(p is not None for p in pieces)
    per_word = sum(len(p) for p in pieces) / len(words)
    assert 1.0 < per_word < 1.15, per_word

    tok = build_tokenizer(v.tokens, lowercase=True)
    assert tok.encode(heldout[:20_000], add_special_tokens=False).tokens == [
        piece for w in split(heldout[:20_000]) for piece in tokenize_word(w, vocab)
    ]


def test_a_size_beyond_the_words_is_filled_with_shared_substrings():
    """One novel has ~7k distinct words; 15000 tokens cannot all be learned pieces. The
    threshold stops at min_piece_count and the rest is the substrings most words share."""
    counts = Counter(WordSplitter(True)(BOOKS[2].read_text(encoding="utf-8")))
    assert len(counts) < 10_000
    v = learn(counts.items(), 15_000, SPECIALS)
    assert len(v.tokens) == 15_000 == len(set(v.tokens)) and v.threshold == 2
    assert {"##ing", "##ed", "##ly", "##ness"} <= set(v.tokens)
    # A long word seen once and inside no other word is never a piece: it was seen once.
    lonely = [w for w, n in counts.items() if n == 1 and len(w) > 10 and not any(w in x for x in counts if x != w)]
    assert len(lonely) > 20 and not set(lonely) & set(v.tokens)


def test_threshold_search_finds_the_lowest_fitting_threshold():
    from bertflow.pipelines.wordpiece import _lowest_fitting

    rng = random.Random(3)
    for _ in range(300):
        top = rng.randint(2, 5000)
        scale, power = rng.uniform(10, 1e6), rng.uniform(0.3, 2.0)
        size_at = lambda t: int(scale / t**power)  # noqa: E731 - falls as the threshold rises
        room, floor = rng.randint(0, 20000), rng.randint(1, 3)
        if size_at(top) > room or floor > top:
            continue
        want = next(t for t in range(floor, top + 1) if size_at(t) <= room)
        assert _lowest_fitting(size_at, room, floor, top, rng.randint(1, top)) == want


def test_alphabet_from_character_counts_of_every_word():
    """The job passes characters counted over all words, also those cut before learning."""
    words = [("aab", 50), ("ab", 40)]
    v = learn(words, 5 + 3 * 2 + 1, SPECIALS, char_counts=[("a", 140), ("b", 90), ("ж", 3)])
    assert {"ж", "##ж"} <= set(v.tokens) and v.alphabet == 3
    assert tokenize_word("жab", set(v.tokens)) is not None
