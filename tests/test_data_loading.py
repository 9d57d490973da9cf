"""The pretraining loader: disjoint worker shares, the same global batches for any worker
count, exact resume from a data position, padding, dynamic masking, bad rows."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tests.pretrain_examples import SCHEMA, write_examples
from bertflow.contracts.layout import IGNORE_INDEX, list_shards
from bertflow.trainer.data import (
    Collator,
    ExampleStream,
    Masking,
    Prefetch,
    load_vocab,
    read_eval,
    train_batches,
)

NUM_TRAIN = 120


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    return write_examples(str(tmp_path_factory.mktemp("examples")), num_train=NUM_TRAIN, num_eval=20, row_group_size=8)


@pytest.fixture(scope="module")
def vocab(examples):
    return load_vocab(examples)


def stream(examples, seed=0):
    return ExampleStream(list_shards(examples, "train"), seed, window_units=2)


def key(ex) -> tuple:
    return tuple(ex.input_ids.tolist()) + (ex.next_sentence_label,)


def file_rows(examples) -> Counter:
    rows = Counter()
    for url in list_shards(examples, "train"):
        for r in pq.read_table(url).to_pylist():
            rows[tuple(r["input_ids"]) + (r["next_sentence_label"],)] += 1
    return rows


def take(it, n):
    return [next(it) for _ in range(n)]


def test_workers_read_disjoint_parts_that_cover_an_epoch(examples):
    s = stream(examples)
    assert s.num_examples == NUM_TRAIN and len(s.units) > 6
    world = 2
    parts = [take(s.iterate(0, rank, world), NUM_TRAIN // world) for rank in range(world)]
    positions = [[ex.position for ex in part] for part in parts]
    assert set(positions[0]).isdisjoint(positions[1])
    assert sorted(positions[0] + positions[1]) == list(range(NUM_TRAIN))
    assert all(p % world == r for r in range(world) for p in positions[r])
    # one epoch is every row of the files exactly once
    assert Counter(key(ex) for part in parts for ex in part) == file_rows(examples)


def test_global_batch_is_the_same_for_any_worker_count(examples, vocab):
    s = stream(examples)
    collate = Collator(vocab, Masking(vocab, seed=0))
    one = train_batches(s, collate, global_batch=8, start_step=0, rank=0, world=1)
    two = [train_batches(s, collate, global_batch=8, start_step=0, rank=r, world=2) for r in range(2)]
    for _ in range(3):
        (whole,) = next(one)
        halves = [next(t)[0] for t in two]
        # worker r holds every 2nd example of the global batch, in order
        for r, half in enumerate(halves):
            n = half["input_ids"].shape[1]
            assert torch.equal(whole["input_ids"][r::2, :n], half["input_ids"])
            assert torch.equal(whole["masked_lm_ids"][r::2, : half["masked_lm_ids"].shape[1]], half["masked_lm_ids"])


def test_resume_from_a_data_position_gives_the_same_batches_across_epochs(examples, vocab):
    s = stream(examples)
    collate = Collator(vocab, Masking(vocab, seed=0))
    per_epoch = NUM_TRAIN // 8
    straight = train_batches(s, collate, 8, 0, rank=1, world=2, grad_accum=2)
    batches = take(straight, per_epoch + 3)
    start = per_epoch - 2  # resumed two steps before the epoch boundary
    resumed = take(train_batches(stream(examples), collate, 8, start, rank=1, world=2, grad_accum=2), 5)
    for a, b in zip(batches[start:], resumed):
        assert len(a) == len(b) == 2  # grad_accum micro-batches of 2
        for ma, mb in zip(a, b):
            assert ma["input_ids"].shape[0] == 2
            for name in ma:
                assert torch.equal(ma[name], mb[name]), name


def test_order_is_deterministic_and_reshuffled_per_epoch_and_seed(examples):
    first = [ex.position for ex in take(stream(examples).iterate(0), 2 * NUM_TRAIN)]
    again = [ex.position for ex in take(stream(examples).iterate(0), 2 * NUM_TRAIN)]
    assert first == again
    a = [key(ex) for ex in take(stream(examples).iterate(0), 2 * NUM_TRAIN)]
    assert a[:NUM_TRAIN] != a[NUM_TRAIN:]  # epoch 1 is another order...
    assert Counter(a[:NUM_TRAIN]) == Counter(a[NUM_TRAIN:])  # ...of the same rows
    other = [key(ex) for ex in take(stream(examples, seed=1).iterate(0), NUM_TRAIN)]
    assert other != a[:NUM_TRAIN]


def test_padding_masks_and_labels(examples, vocab):
    s = stream(examples)
    exs = take(s.iterate(0), NUM_TRAIN)
    collate = Collator(vocab, Masking(vocab, seed=0, max_predictions=20))
    batch = collate(exs)
    lengths = [len(ex.input_ids) for ex in exs]
    b, length = batch["input_ids"].shape
    assert b == NUM_TRAIN and length % 8 == 0 and max(lengths) <= length < max(lengths) + 8
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert (batch["input_ids"][batch["attention_mask"] == 0] == vocab.pad).all()
    assert (batch["token_type_ids"][batch["attention_mask"] == 0] == 0).all()
    dynamic = static = 0
    for i, ex in enumerate(exs):
        real = batch["masked_lm_ids"][i] != IGNORE_INDEX
        positions = batch["masked_lm_positions"][i][real]
        labels = batch["masked_lm_ids"][i][real]
        assert len(positions) > 0 and (positions < lengths[i]).all()
        if len(ex.masked_lm_positions):  # static: from the file
            static += 1
            assert positions.tolist() == ex.masked_lm_positions.tolist()
            assert labels.tolist() == ex.masked_lm_ids.tolist()
            assert torch.equal(batch["input_ids"][i, : lengths[i]], torch.from_numpy(ex.input_ids.astype(np.int64)))
        else:  # dynamic: chosen here, never on [CLS]/[SEP], labels are the original tokens
            dynamic += 1
            original = torch.from_numpy(ex.input_ids.astype(np.int64))
            assert not set(original[positions].tolist()) & {vocab.cls, vocab.sep}
            assert torch.equal(labels, original[positions])
            assert len(positions) == min(20, max(1, round(lengths[i] * 0.15)))
        # padded prediction slots point at position 0 and are ignored
        assert (batch["masked_lm_positions"][i][~real] == 0).all()
    assert dynamic and static
    # the 80/10/10 split over many dynamic masks
    many = ExampleStream(list_shards(examples, "train"), 0)
    picked = [e for e in take(many.iterate(0), NUM_TRAIN) if not len(e.masked_lm_positions)]
    masked = total = 0
    for ex in picked:
        ids, pos, labels = collate.masking(ex, "train")
        masked += int((ids[pos] == vocab.mask).sum())
        total += len(pos)
    assert 0.7 < masked / total < 0.9


def test_dynamic_masks_are_deterministic_per_example(examples, vocab):
    ex = next(e for e in stream(examples).iterate(0) if not len(e.masked_lm_positions))
    m = Masking(vocab, seed=3)
    a, b = m(ex, "train"), m(ex, "train")
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    exs = [e for e in take(stream(examples).iterate(0), NUM_TRAIN) if not len(e.masked_lm_positions)]
    assert any(not np.array_equal(m(e, "train")[1], Masking(vocab, seed=4)(e, "train")[1]) for e in exs)
    assert any(not np.array_equal(m(e, "train")[1], m(e, "eval")[1]) for e in exs)


def test_eval_split_is_shared_between_workers(examples):
    urls = list_shards(examples, "eval")
    parts = [read_eval(urls, 15, rank, 2) for rank in range(2)]
    assert [len(p) for p in parts] == [8, 7]
    assert sorted(e.position for p in parts for e in p) == list(range(15))


def test_bad_rows_are_skipped_and_counted(tmp_path, vocab):
    good = {"input_ids": [101, 2000, 2001, 102], "token_type_ids": [0, 0, 0, 0],
            "masked_lm_positions": [1], "masked_lm_ids": [2000], "next_sentence_label": 0}
    bad_id = dict(good, input_ids=[101, 10**6, 2001, 102])
    bad_len = dict(good, token_type_ids=[0, 0])
    pq.write_table(pa.Table.from_pylist([good, bad_id, good, bad_len], schema=SCHEMA), tmp_path / "train-00000-of-00001.parquet")
    s = ExampleStream(list_shards(str(tmp_path), "train"), 0, shuffle=False)
    collate = Collator(vocab, Masking(vocab, 0))
    batch = collate(take(s.iterate(0), 4))
    assert batch["input_ids"].shape[0] == 2 and collate.skipped == 2
    with pytest.raises(ValueError, match="malformed"):
        collate([take(s.iterate(1), 1)[0]])


def test_missing_columns_and_empty_input_fail_clearly(tmp_path):
    pq.write_table(pa.table({"input_ids": [[1, 2]]}), tmp_path / "train-00000-of-00001.parquet")
    with pytest.raises(ValueError, match="missing columns"):
        ExampleStream(list_shards(str(tmp_path), "train"), 0)
    with pytest.raises(ValueError, match="no example shards"):
        ExampleStream(list_shards(str(tmp_path / "nothing"), "train"), 0)


def test_streams_from_fsspec_storage(examples):
    import fsspec

    fs = fsspec.filesystem("memory")
    for url in list_shards(examples, "train"):
        fs.pipe(f"/loader-test/{url.rsplit('/', 1)[1]}", open(url, "rb").read())
    urls = list_shards("memory://loader-test", "train")
    assert urls[0].startswith("memory://")
    local = [key(e) for e in take(stream(examples).iterate(5), 20)]
    remote = [key(e) for e in take(ExampleStream(urls, 0, window_units=2).iterate(5), 20)]
    assert local == remote


def test_prefetch_keeps_order_and_reraises():
    assert list(Prefetch(iter(range(10)), depth=2)) == list(range(10))

    def broken():
        yield 1
        raise RuntimeError("shard unreadable")

    it = Prefetch(broken())
    assert next(it) == 1
    with pytest.raises(RuntimeError, match="unreadable"):
        next(it)
