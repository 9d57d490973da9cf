"""Streaming pretraining examples from Parquet shards to padded batches, deterministically.

    python -m bertflow.trainer.data EXAMPLES_DIR --vocab VOCAB_DIR --batch-size 32 --batches 3

The examples folder holds ``train-SSSSS-of-NNNNN.parquet`` (and ``eval-*.parquet``) with
the columns ``input_ids``, ``token_type_ids``, ``masked_lm_positions``, ``masked_lm_ids``,
``next_sentence_label``; unpadded, [CLS]/[SEP] included. Empty ``masked_lm_*`` lists mean
"mask on the fly" (dynamic masking): we pick the positions here.

The order of examples is one global stream, the same whatever the worker count:

- a *unit* is one row group of one shard (the smallest thing Parquet reads on its own);
- each epoch shuffles the units by ``(seed, epoch)`` and cuts them into *windows* of a few
  units; the rows of a window are shuffled together by ``(seed, epoch, window)``;
- epochs follow each other, so global example ``p`` is ``epoch = p // N``, ``p % N``.

Global batch ``b`` is examples ``[b*G, (b+1)*G)``; worker ``r`` of ``W`` takes the examples
whose position is ``r`` modulo ``W`` (every W-th example), so the global batch is the same
set for any ``W``. A checkpoint stores the global position (``step * G``): a resumed run
skips whole windows by their footer row counts and continues with the exact batches the
uninterrupted run would have seen. Every worker reads every window and keeps its share,
which costs ``W`` times the (cheap) Parquet decode and never any coordination.

Memory: one window of rows per worker (``window_units`` row groups) plus the prefetch queue.
"""

from __future__ import annotations

import argparse
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa
import torch

from bertflow.contracts.hashing import stable_hash
from bertflow.contracts.layout import EXAMPLE_COLUMNS, IGNORE_INDEX, STATS, VOCAB, SpecialIds, list_shards, open_shard, read_vocab
from bertflow.contracts.storage import exists, join, read_json
from bertflow.trainer.pretrain_config import check_batch

log = logging.getLogger(__name__)

PAD_TO_MULTIPLE = 8  # tensor cores and SDPA kernels like sequence lengths that are multiples of 8


# ---------------------------------------------------------------------------------------
# Files


def load_vocab(folder: str) -> SpecialIds:
    """The size and special ids of ``folder``'s vocab.txt."""
    url = join(folder, VOCAB)
    return SpecialIds.of(read_vocab(url), where=url)


def read_stats(folder: str) -> dict:
    """``stats.json`` of the examples step, or ``{}`` when there is none."""
    url = join(folder, STATS)
    return read_json(url) if exists(url) else {}


@dataclass(frozen=True)
class Unit:
    """One row group of one shard."""

    url: str
    row_group: int
    num_rows: int


def scan_units(urls: list[str]) -> list[Unit]:
    """The row groups of ``urls`` from their footers (no data is read)."""
    units = []
    for url in urls:
        with open_shard(url) as shard:
            meta = shard.metadata
            missing = [c for c in EXAMPLE_COLUMNS if c not in meta.schema.to_arrow_schema().names]
            if missing:
                raise ValueError(f"{url}: missing columns {missing}; expected {EXAMPLE_COLUMNS} (pretraining_data output)")
            units += [Unit(url, i, meta.row_group(i).num_rows) for i in range(meta.num_row_groups)]
    return units


def _read_unit(unit: Unit) -> pa.Table:
    with open_shard(unit.url) as shard:
        return shard.read_row_group(unit.row_group, columns=EXAMPLE_COLUMNS)


# ---------------------------------------------------------------------------------------
# Examples


@dataclass
class Example:
    position: int  # global position in the stream: seeds dynamic masking, identifies the row
    input_ids: np.ndarray
    token_type_ids: np.ndarray
    masked_lm_positions: np.ndarray
    masked_lm_ids: np.ndarray
    next_sentence_label: int
    source: str  # "shard#row_group" for error messages


class _Columns:
    """A table's list columns as flat numpy values + offsets: row ``i`` without Python lists."""

    def __init__(self, table: pa.Table):
        self.lists = {}
        for name in EXAMPLE_COLUMNS[:4]:
            arr = table.column(name).combine_chunks()
            self.lists[name] = (arr.offsets.to_numpy(), arr.values.to_numpy(zero_copy_only=False))
        self.nsp = table.column("next_sentence_label").to_numpy(zero_copy_only=False)

    def row(self, i: int) -> dict:
        out = {}
        for name, (offsets, values) in self.lists.items():
            out[name] = values[offsets[i] : offsets[i + 1]]
        out["next_sentence_label"] = int(self.nsp[i])
        return out


class ExampleStream:
    """The global, endless, deterministic order of the examples in ``urls``.

    ``ExampleStream(urls, seed).iterate(start, rank, world)`` yields the examples at global
    positions ``p >= start`` with ``p % world == rank``.
    """

    def __init__(self, urls: list[str], seed: int, window_units: int = 4, shuffle: bool = True):
        if not urls:
            raise ValueError("no example shards to read")
        self.units = scan_units(urls)
        self.num_examples = sum(u.num_rows for u in self.units)
        if self.num_examples == 0:
            raise ValueError(f"the example shards hold no rows: {urls[0]} ...")
        self.seed, self.window_units, self.shuffle = seed, window_units, shuffle

    def windows(self, epoch: int) -> list[list[Unit]]:
        units = list(self.units)
        if self.shuffle:
            np.random.default_rng(stable_hash(self.seed, "units", epoch)).shuffle(units)
        k = self.window_units
        return [units[i : i + k] for i in range(0, len(units), k)]

    def iterate(self, start: int, rank: int = 0, world: int = 1) -> Iterator[Example]:
        epoch, offset = divmod(start, self.num_examples)
        while True:
            base = epoch * self.num_examples  # global position of this epoch's first example
            for w, window in enumerate(self.windows(epoch)):
                n = sum(u.num_rows for u in window)
                if offset >= n:  # skip whole windows by their footer counts
                    offset -= n
                    base += n
                    continue
                yield from self._window(window, epoch, w, base, offset, rank, world)
                base += n
                offset = 0
            epoch += 1

    def _window(self, window, epoch, w, base, offset, rank, world) -> Iterator[Example]:
        tables = [_read_unit(u) for u in window]
        sources = [f"{u.url}#rg{u.row_group}" for u, t in zip(window, tables) for _ in range(t.num_rows)]
        cols = _Columns(pa.concat_tables(tables))
        order = np.arange(len(sources))
        if self.shuffle:
            order = np.random.default_rng(stable_hash(self.seed, "rows", epoch, w)).permutation(len(sources))
        # the j-th row of the shuffled window sits at global position base + j
        first = offset + (rank - (base + offset)) % world
        for j in range(first, len(order), world):
            i = int(order[j])
            yield Example(position=base + j, source=sources[i], **cols.row(i))


def read_eval(urls: list[str], max_examples: int, rank: int = 0, world: int = 1) -> list[Example]:
    """The first ``max_examples`` held-out examples in file order, this worker's share."""
    out, seen = [], 0
    for unit in scan_units(urls):
        if seen >= max_examples:
            break
        cols = _Columns(_read_unit(unit))
        for i in range(unit.num_rows):
            if seen >= max_examples:
                break
            if seen % world == rank:
                out.append(Example(position=seen, source=f"{unit.url}#rg{unit.row_group}", **cols.row(i)))
            seen += 1
    return out


def eval_nsp_labels(urls: list[str], max_examples: int) -> set[int]:
    """The next-sentence labels of the examples ``read_eval`` gives the workers (the first
    ``max_examples`` in file order), reading that column alone."""
    labels, seen = set(), 0
    for unit in scan_units(urls):
        if seen >= max_examples:
            break
        with open_shard(unit.url) as shard:
            column = shard.read_row_group(unit.row_group, columns=["next_sentence_label"]).column(0)
        taken = column.to_numpy(zero_copy_only=False)[: max_examples - seen]
        labels.update(int(v) for v in np.unique(taken))
        seen += len(taken)
    return labels


# ---------------------------------------------------------------------------------------
# Batches


@dataclass
class Masking:
    """Dynamic masking as in BERT: 15% of the tokens (never [CLS]/[SEP]/[PAD]), of which
    80% become [MASK], 10% a random token, 10% stay; at most ``max_predictions``."""

    vocab: SpecialIds
    seed: int
    max_predictions: int = 20
    rate: float = 0.15

    def __call__(self, ex: Example, salt: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids = ex.input_ids.astype(np.int64).copy()
        rng = np.random.default_rng(stable_hash(self.seed, salt, ex.position))
        candidates = np.flatnonzero((ids != self.vocab.cls) & (ids != self.vocab.sep) & (ids != self.vocab.pad))
        n = min(self.max_predictions, max(1, int(round(len(ids) * self.rate))), len(candidates))
        positions = np.sort(rng.choice(candidates, size=n, replace=False))
        labels = ids[positions].copy()
        roll = rng.random(n)
        ids[positions[roll < 0.8]] = self.vocab.mask
        swap = positions[(roll >= 0.8) & (roll < 0.9)]
        ids[swap] = rng.integers(0, self.vocab.size, size=len(swap))
        return ids, positions, labels


class BadExample(ValueError):
    pass


def check(ex: Example, vocab_size: int) -> None:
    """Raise ``BadExample`` saying what is wrong with ``ex`` (the shards come from another
    step, possibly another version of it; the trainer must not crash deep in a kernel)."""
    n = len(ex.input_ids)
    if n < 2:
        raise BadExample("fewer than 2 tokens")
    if len(ex.token_type_ids) != n:
        raise BadExample(f"token_type_ids has {len(ex.token_type_ids)} values for {n} tokens")
    if len(ex.masked_lm_positions) != len(ex.masked_lm_ids):
        raise BadExample("masked_lm_positions and masked_lm_ids differ in length")
    if ex.input_ids.min() < 0 or ex.input_ids.max() >= vocab_size:
        raise BadExample(f"token id outside the vocab of {vocab_size}")
    if len(ex.masked_lm_positions) and (ex.masked_lm_positions.min() < 0 or ex.masked_lm_positions.max() >= n):
        raise BadExample("masked_lm_positions outside the sequence")
    if len(ex.masked_lm_ids) and (ex.masked_lm_ids.min() < 0 or ex.masked_lm_ids.max() >= vocab_size):
        raise BadExample(f"masked_lm_ids outside the vocab of {vocab_size}")


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@dataclass
class Collator:
    """Examples to one padded batch: sequences to the longest one (a multiple of 8), the
    prediction slots to the most any example has; padded labels are ``IGNORE_INDEX``."""

    vocab: SpecialIds
    masking: Masking
    salt: str = "train"  # dynamic masks differ between the train and eval streams
    skipped: int = 0
    # page-locked batches: the copy to a GPU is then asynchronous (``non_blocking``) and
    # direct; the trainer sets it when its device is CUDA
    pin_memory: bool = False

    def __call__(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        rows = []
        for ex in examples:
            try:
                check(ex, self.vocab.size)
            except BadExample as e:
                self.skipped += 1
                log.warning("skipping example %d from %s: %s", ex.position, ex.source, e)
                continue
            if len(ex.masked_lm_positions):
                ids, pos, lab = ex.input_ids.astype(np.int64), ex.masked_lm_positions, ex.masked_lm_ids
            else:
                ids, pos, lab = self.masking(ex, self.salt)
            rows.append((ids, ex.token_type_ids, pos, lab, ex.next_sentence_label))
        if not rows:
            where = ", ".join(sorted({ex.source for ex in examples}))
            raise ValueError(f"every example of a batch is malformed ({where}): rebuild the examples step")
        b = len(rows)
        length = _round_up(max(len(r[0]) for r in rows), PAD_TO_MULTIPLE)
        preds = max(1, max(len(r[2]) for r in rows))
        pin = {"dtype": torch.long, "pin_memory": self.pin_memory}
        input_ids = torch.full((b, length), self.vocab.pad, **pin)
        token_type_ids = torch.zeros((b, length), **pin)
        attention_mask = torch.zeros((b, length), **pin)
        positions = torch.zeros((b, preds), **pin)
        labels = torch.full((b, preds), IGNORE_INDEX, **pin)
        nsp = torch.empty(b, **pin)
        for i, (ids, types, pos, lab, is_random) in enumerate(rows):
            n, k = len(ids), len(pos)
            input_ids[i, :n] = torch.from_numpy(np.asarray(ids, dtype=np.int64))
            token_type_ids[i, :n] = torch.from_numpy(np.asarray(types, dtype=np.int64))
            attention_mask[i, :n] = 1
            positions[i, :k] = torch.from_numpy(np.asarray(pos, dtype=np.int64))
            labels[i, :k] = torch.from_numpy(np.asarray(lab, dtype=np.int64))
            nsp[i] = is_random
        return {
            "input_ids": input_ids,
            "token_type_ids": token_type_ids,
            "attention_mask": attention_mask,
            "masked_lm_positions": positions,
            "masked_lm_ids": labels,
            "next_sentence_label": nsp,
        }


def train_batches(
    stream: ExampleStream,
    collate: Collator,
    global_batch: int,
    start_step: int,
    rank: int,
    world: int,
    grad_accum: int = 1,
) -> Iterator[list[dict[str, torch.Tensor]]]:
    """Per optimizer step, this worker's ``grad_accum`` micro-batches, from ``start_step``."""
    per_worker = check_batch(global_batch, world, grad_accum)
    micro = per_worker // grad_accum
    examples = stream.iterate(start_step * global_batch, rank, world)
    while True:
        yield [collate([next(examples) for _ in range(micro)]) for _ in range(grad_accum)]


class Prefetch:
    """Runs an iterator in a background thread, ``depth`` items ahead; re-raises its errors."""

    _END = object()

    def __init__(self, iterator: Iterator, depth: int = 4):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(iterator,), daemon=True, name="prefetch")
        self._thread.start()

    def _fill(self, iterator):
        try:
            for item in iterator:
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._queue.put(self._END)
        except BaseException as e:  # handed to the consumer, which raises it
            self._queue.put(e)

    def __iter__(self):
        return self

    def __next__(self):
        item = self._queue.get()
        if item is self._END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self):
        # wait for the thread: one left inside torch as the interpreter exits can abort it
        self._stop.set()
        self._thread.join(timeout=10)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("examples", help="folder of train-*.parquet (any fsspec URL)")
    p.add_argument("--vocab", help="folder with vocab.txt (default: the examples folder)")
    p.add_argument("--split", default="train")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start-step", type=int, default=0)
    p.add_argument("--rank", type=int, default=0)
    p.add_argument("--world", type=int, default=1)
    args = p.parse_args(argv)
    vocab = load_vocab(args.vocab or args.examples)
    stream = ExampleStream(list_shards(args.examples, args.split), args.seed)
    collate = Collator(vocab, Masking(vocab, args.seed))
    print(f"{stream.num_examples} examples in {len(stream.units)} row groups")
    batches = train_batches(stream, collate, args.batch_size, args.start_step, args.rank, args.world)
    for step in range(args.start_step, args.start_step + args.batches):
        (batch,) = next(batches)
        shape = tuple(batch["input_ids"].shape)
        masked = int((batch["masked_lm_ids"] != IGNORE_INDEX).sum())
        print(f"step {step}: input_ids {shape}, {int(batch['attention_mask'].sum())} tokens, {masked} masked")


if __name__ == "__main__":
    main()
