"""The pure functions of pretraining instances (bertflow/pipelines/instances.py), on real text."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from bertflow.pipelines.config import InstanceConfig
from bertflow.pipelines.instances import _trims, batch_table, make_batches
from bertflow.pipelines.masking import MaskDraws, mask_batch, num_to_predict
from bertflow.pipelines.tokens import Document, SentenceEncoder, Vocab, tokenize_documents
from tests.book_documents import book_documents, vocab_folder


@pytest.fixture(scope="module")
def vocab() -> Vocab:
    return Vocab.read(str(vocab_folder() / "vocab.txt"))


@pytest.fixture(scope="module")
def docs():
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(vocab_folder() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    rows = book_documents(paragraphs_per_book=60)
    out = tokenize_documents(SentenceEncoder(tokenizer), [(r["id"], r["sentences"]) for r in rows])
    return sorted((d for d in out if d is not None), key=lambda d: d.id)


class Row(dict):
    __getattr__ = dict.__getitem__


def rows(docs, cfg, vocab, seed=7, dupe_factor=2, counts=None, **kw) -> list[Row]:
    """A bucket's instances as the job makes them (``make_batches``) and ships them
    (``batch_table``): the examples columns, ``_iid``, and the batch's ``short_target``."""
    out = []
    for batch in make_batches(docs, cfg, vocab, seed, dupe_factor, counts, **kw):
        table = batch_table(batch, np.zeros(len(batch), np.uint64))
        out += [Row(r, short_target=s) for r, s in zip(table.to_pylist(), batch.short_target.tolist())]
    return out


def all_instances(docs, vocab, dupe_factor=2, **kw):
    cfg = InstanceConfig(**kw)
    return cfg, rows(docs, cfg, vocab, dupe_factor=dupe_factor)


def document(doc_id: str, sentences: list[list[int]]) -> Document:
    """A document of the given per-sentence ids (as ``tokenize_documents`` makes one)."""
    bounds = np.zeros(len(sentences) + 1, np.int64)
    np.cumsum([len(s) for s in sentences], out=bounds[1:])
    return Document(doc_id, np.array([t for s in sentences for t in s], np.int32), bounds)


def test_tokenized_documents_are_real(docs, vocab):
    assert len(docs) > 50
    doc = docs[5]
    assert len(doc.bounds) - 1 > 3 and len(doc.tokens) == doc.bounds[-1]
    assert vocab.size == 30522 and (vocab.cls_id, vocab.sep_id, vocab.mask_id) == (101, 102, 103)


@pytest.mark.parametrize("max_seq_length", [32, 128])
def test_pair_layout_and_lengths(docs, vocab, max_seq_length):
    cfg, instances = all_instances(docs, vocab, max_seq_length=max_seq_length, masking="dynamic")
    assert len(instances) > 100
    for inst in instances:
        ids, types = inst.input_ids, inst.token_type_ids
        assert len(ids) == len(types) <= max_seq_length
        n_a = types.index(1) - 2  # [CLS] A [SEP] are type 0
        assert n_a >= 1 and ids[0] == vocab.cls_id and ids[n_a + 1] == vocab.sep_id and ids[-1] == vocab.sep_id
        assert types == [0] * (n_a + 2) + [1] * (len(ids) - n_a - 2)
        assert len(ids) - n_a - 3 >= 1  # B is never empty
        assert vocab.cls_id not in ids[1:] and ids.count(vocab.sep_id) == 2
        assert inst.masked_lm_positions == [] and inst.masked_lm_ids == []
    # Long sentences were truncated to fit, and most instances are full.
    full = sum(len(i.input_ids) == max_seq_length for i in instances)
    assert full > len(instances) * 0.3


def test_static_masks_follow_the_count_rule(docs, vocab):
    cfg, instances = all_instances(docs, vocab, max_seq_length=64, max_predictions_per_seq=7)
    for inst in instances:
        pos = inst.masked_lm_positions
        assert len(pos) == num_to_predict(len(inst.input_ids), cfg) == min(7, max(1, round(len(inst.input_ids) * 0.15)))
        assert pos == sorted(set(pos)) and len(inst.masked_lm_ids) == len(pos)
        # Never on [CLS] or the [SEP]s (found through the segment ids).
        n_a = inst.token_type_ids.index(1) - 2
        assert not {0, n_a + 1, len(inst.input_ids) - 1} & set(pos)


def test_mask_shares_are_80_10_10(vocab):
    cfg = InstanceConfig(max_seq_length=128, max_predictions_per_seq=20)
    tokens = np.array([vocab.cls_id] + [2000 + (i % 5000) for i in range(120)] + [vocab.sep_id], np.int32)
    n = 3000
    ids = np.tile(tokens, n)
    offsets = np.arange(n + 1) * len(tokens)
    special = (ids == vocab.cls_id) | (ids == vocab.sep_id)
    out, positions, labels, pos_offsets = mask_batch(ids, offsets, special, cfg, vocab, MaskDraws.draw(3, len(ids), vocab.size))
    assert np.diff(pos_offsets).tolist() == [18] * n
    where = np.repeat(offsets[:-1], 18) + positions
    assert (labels == ids[where]).all() and not special[where].any()
    unmasked = np.ones(len(ids), bool)
    unmasked[where] = False
    assert (out[unmasked] == ids[unmasked]).all()
    mask = out[where] == vocab.mask_id
    kept = ~mask & (out[where] == ids[where])
    total = len(where)
    assert abs(mask.sum() / total - 0.8) < 0.01
    assert abs(kept.sum() / total - 0.1) < 0.01
    assert abs((total - mask.sum() - kept.sum()) / total - 0.1) < 0.01


def test_whole_word_masking_masks_whole_words(docs, vocab):
    cfg, instances = all_instances(docs[:30], vocab, max_seq_length=128, do_whole_word_mask=True)
    words_masked = 0
    for inst in instances:
        original = list(inst.input_ids)
        for p, label in zip(inst.masked_lm_positions, inst.masked_lm_ids):
            original[p] = label
        chosen = set(inst.masked_lm_positions)
        assert len(chosen) <= num_to_predict(len(original), cfg)
        # Words: a piece followed by its ## continuation pieces.
        word: list[int] = []
        for i, t in enumerate(original + [vocab.sep_id]):
            if word and (t in (vocab.cls_id, vocab.sep_id) or not vocab.continuation[t]):
                masked = [i in chosen for i in word]
                assert all(masked) or not any(masked), (word, masked)
                words_masked += len(word) > 1 and all(masked)
                word = []
            if t not in (vocab.cls_id, vocab.sep_id):
                word.append(i)
    assert words_masked > 20  # multi-piece words were really masked whole


def test_random_next_comes_from_another_document(vocab):
    # Every document's ids are its own (doc k uses 1000 + 100k ...), so B's source is visible.
    docs = [document(f"d{k}", [[1000 + 100 * k + j] * (3 + j) for j in range(6)]) for k in range(5)]
    cfg = InstanceConfig(max_seq_length=24, masking="dynamic", short_seq_prob=0.3)
    owner = lambda t: (t - 1000) // 100  # noqa: E731
    labels = Counter()
    for inst in rows(docs, cfg, vocab, seed=1, dupe_factor=20):
        doc = int(inst._iid.split(":")[0][1:])
        n_a = inst.token_type_ids.index(1) - 2
        a, b = inst.input_ids[1 : n_a + 1], inst.input_ids[n_a + 2 : -1]
        assert {owner(t) for t in a} == {doc}
        if inst.next_sentence_label:
            assert doc not in {owner(t) for t in b}
            assert len({owner(t) for t in b}) == 1
        else:
            assert {owner(t) for t in b} == {doc} and max(a) < min(b)  # B continues A
        labels[inst.next_sentence_label] += 1
    assert labels[0] > 50 and labels[1] > 50


def test_single_document_bucket_never_pairs_with_itself(vocab):
    doc = document("alone", [[2000 + j] * 5 for j in range(8)])
    cfg = InstanceConfig(max_seq_length=32, masking="dynamic")
    counts = Counter()
    instances = rows([doc], cfg, vocab, seed=0, dupe_factor=1, counts=counts)
    assert instances and all(i.next_sentence_label == 0 for i in instances)
    assert counts["nsp_no_partner"] > 0


def test_truncation_trims_the_longer_side_from_both_ends():
    ends = Counter()
    for seed in range(200):
        front_a, back_a, front_b, back_b = _trims(60, 20, 50, random.Random(seed))
        assert front_a + back_a == 30 and front_b == back_b == 0  # A stays the longer: only A is cut
        ends["front"] += front_a > 0
        ends["back"] += back_a > 0
    assert ends["front"] > 150 and ends["back"] > 150
    # Both long: they end within one token of each other.
    fa, ba, fb, bb = _trims(80, 70, 40, random.Random(1))
    assert (80 - fa - ba) + (70 - fb - bb) == 40 and abs((80 - fa - ba) - (70 - fb - bb)) <= 1


def test_packed_mlm_only_keeps_every_token_in_order(docs, vocab):
    cfg = InstanceConfig(max_seq_length=64, nsp=False, short_seq_prob=0.0, masking="dynamic")
    lengths = []
    for doc in docs[:20]:
        instances = rows([doc], cfg, vocab, seed=0, dupe_factor=1)
        lengths += [len(i.input_ids) for i in instances[:-1]]
        body = []
        for inst in instances:
            assert len(inst.input_ids) <= 64 and set(inst.token_type_ids) == {0}
            assert inst.input_ids[0] == vocab.cls_id and inst.input_ids[-1] == vocab.sep_id
            body.extend(inst.input_ids[1:-1])
        assert body == doc.tokens.tolist()
    # Packed with whole sentences, until the next one does not fit: sequences are nearly full.
    assert sum(lengths) / len(lengths) > 0.7 * 64


def test_short_seq_prob_makes_short_targets(docs, vocab):
    _, none = all_instances(docs, vocab, short_seq_prob=0.0, masking="dynamic")
    _, all_short = all_instances(docs, vocab, short_seq_prob=1.0, masking="dynamic")
    mean = lambda xs: sum(len(i.input_ids) for i in xs) / len(xs)  # noqa: E731
    assert not any(i.short_target for i in none) and all(i.short_target for i in all_short)
    assert mean(all_short) < 0.75 * mean(none)


def test_instances_are_deterministic_and_ids_unique(docs, vocab):
    cfg = InstanceConfig()
    first = rows(docs[:20], cfg, vocab, seed=5, dupe_factor=3)
    again = rows(docs[:20], cfg, vocab, seed=5, dupe_factor=3)
    other = rows(docs[:20], cfg, vocab, seed=6, dupe_factor=3)
    assert first == again and first != other
    assert len({i._iid for i in first}) == len(first)
    # Different dupes of a document mask differently.
    by_dupe = {i._iid: i for i in first}
    doc = docs[0].id
    assert by_dupe[f"{doc}:0:0"].masked_lm_positions != by_dupe[f"{doc}:1:0"].masked_lm_positions


def test_truncation_cuts_as_many_tokens_from_each_side_as_the_original_loop():
    rng = random.Random(0)
    for len_a in range(0, 40, 3):
        for len_b in range(0, 40, 5):
            for max_num in (5, 20, 50):
                # The original: trim the longer (B on a tie) one token at a time.
                a, b = len_a, len_b
                while a + b > max_num:
                    if a > b:
                        a -= 1
                    else:
                        b -= 1
                fa, ba, fb, bb = _trims(len_a, len_b, max_num, rng)
                assert (len_a - fa - ba, len_b - fb - bb) == (a, b)
                assert min(fa, ba, fb, bb) >= 0


def test_batched_masks_match_the_rule_per_sequence(docs, vocab):
    # A whole bucket masked at once: every sequence masks its own count, on non-specials,
    # and different passes of the same document draw different masks.
    cfg, instances = all_instances(docs[:40], vocab, dupe_factor=3, max_seq_length=96, max_predictions_per_seq=12)
    shares = Counter()
    for inst in instances:
        original = list(inst.input_ids)
        for p, label in zip(inst.masked_lm_positions, inst.masked_lm_ids):
            original[p] = label
        assert len(inst.masked_lm_positions) == num_to_predict(len(original), cfg)
        assert all(original[p] not in (vocab.cls_id, vocab.sep_id) for p in inst.masked_lm_positions)
        for p, label in zip(inst.masked_lm_positions, inst.masked_lm_ids):
            t = inst.input_ids[p]
            shares["mask" if t == vocab.mask_id else "kept" if t == label else "random"] += 1
    total = sum(shares.values())
    assert total > 5000
    assert abs(shares["mask"] / total - 0.8) < 0.02 and abs(shares["kept"] / total - 0.1) < 0.02


def test_batches_of_a_bucket_are_the_whole_bucket(docs, vocab):
    # Making a bucket's instances a few documents at a time changes nothing but the cut.
    cfg = InstanceConfig(max_seq_length=64)
    whole = rows(docs[:25], cfg, vocab, seed=3, docs_per_batch=25)
    assert len(list(make_batches(docs[:25], cfg, vocab, 3, 2, docs_per_batch=7))) == 4
    assert rows(docs[:25], cfg, vocab, seed=3, docs_per_batch=7) == whole


TRICKY = [
    "",
    "   ",
    "two  spaces and a trailing one ",
    "Café naïve RÉSUMÉ e\u0301 a \u0301b",  # precomposed and combining accents, a mark after a space
    "tab\there, new\nline, nbsp\u00a0here, ideographic\u3000space",
    "control\x1ccharacters\x00and\ufffdreplacement",
    "東京は日本の首都です and 中文 mixed",
    "punctuation!?--(brackets)[MASK] [CLS]glued[SEP]",
    "x" * 150 + " a-word-longer-than-max_input_chars_per_word",
]


@pytest.mark.parametrize("lowercase", [True, False])
def test_sentence_encoder_gives_the_ids_of_whole_sentences(lowercase):
    from bertflow.contracts.layout import read_vocab
    from bertflow.pipelines.bert_tokenizer import build_tokenizer

    tokenizer = build_tokenizer(read_vocab(str(vocab_folder() / "vocab.txt")), lowercase=lowercase)
    sentences = [s for r in book_documents(paragraphs_per_book=40) for s in r["sentences"]] + TRICKY
    want = [e.ids for e in tokenizer.encode_batch(sentences, add_special_tokens=False)]
    # a small cache: cleared many times on the way
    encoder = SentenceEncoder(tokenizer, max_words=500)
    assert encoder.by_word
    got = []
    for first in range(0, len(sentences), 97):
        tokens, lengths = encoder.encode(sentences[first : first + 97])
        assert tokens.dtype == np.int32 and lengths.sum() == len(tokens)
        got += [t.tolist() for t in np.split(tokens, np.cumsum(lengths)[:-1])]
    assert got == want
    last = {w for s in sentences[first:] for w in s.split(" ")}
    assert len(encoder.index) <= max(500, len(last)) < len({w for s in sentences for w in s.split(" ")})


def test_sentence_encoder_encodes_whole_sentences_for_other_tokenizers():
    from tokenizers import Tokenizer, models, pre_tokenizers

    # A pre-tokenizer that keeps the space in the word: words are not independent.
    tokenizer = Tokenizer(models.WordPiece({"[UNK]": 0, "▁a": 1, "▁b": 2, "a": 3}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    encoder = SentenceEncoder(tokenizer)
    assert not encoder.by_word
    tokens, lengths = encoder.encode(["a b", "a"])
    assert tokens.tolist() == [1, 2, 1] and lengths.tolist() == [2, 1]
