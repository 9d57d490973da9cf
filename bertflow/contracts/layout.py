"""The files one step writes and another reads: names, schemas, folders, the vocabulary.

A step's folder is its interface: the corpus steps write ``documents-*`` shards, the
vocab step ``vocab.txt`` and the tokenizer files, the examples step ``train-*`` and
``eval-*`` shards (one ``seq{L}/`` folder per length when it made several), which the
trainer reads.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from . import storage

# --- shards ----------------------------------------------------------------------------

DOCUMENTS = "documents"
DOCUMENTS_SCHEMA = pa.schema([("id", pa.string()), ("title", pa.string()), ("sentences", pa.list_(pa.string()))])

SPLITS = ("train", "eval")
# Unpadded; [CLS]/[SEP] included; next_sentence_label 1 = B is a random sentence.
EXAMPLES_SCHEMA = pa.schema(
    [
        ("input_ids", pa.list_(pa.int32())),
        ("token_type_ids", pa.list_(pa.int8())),
        ("masked_lm_positions", pa.list_(pa.int32())),
        ("masked_lm_ids", pa.list_(pa.int32())),
        ("next_sentence_label", pa.int8()),
    ]
)
EXAMPLE_COLUMNS = EXAMPLES_SCHEMA.names
STATS = "stats.json"


def shard_name(prefix: str, index: int, num_shards: int) -> str:
    return f"{prefix}-{index:05d}-of-{num_shards:05d}.parquet"


def list_shards(folder: str, prefix: str) -> list[str]:
    """The URLs of ``{prefix}-*.parquet`` in ``folder``, in shard order."""
    return storage.glob(storage.join(folder, f"{prefix}-*.parquet"))


class DamagedShard(OSError):
    """A shard in a step's output that does not read: truncated or overwritten after the
    step wrote it (a bad copy, a full disk)."""


def writer_step(url: str) -> str | None:
    """The step whose output folder (``{step}-{hash}``, or a ``seq{L}/`` folder in one)
    holds the file ``url``, or None when the folder is not named so."""
    folder = posixpath.basename(posixpath.dirname(url.rstrip("/")))
    if re.fullmatch(r"seq\d+", folder):
        folder = posixpath.basename(posixpath.dirname(posixpath.dirname(url.rstrip("/"))))
    step, dash, digest = folder.rpartition("-")
    return step if dash and step and digest.isalnum() else None


@contextlib.contextmanager
def open_shard(url: str):
    """The ``pyarrow.parquet.ParquetFile`` of the shard at ``url``. What pyarrow raises on
    a damaged file, when opening it or reading it inside the block, is raised as
    ``DamagedShard``, naming the file and the step to redo."""
    fs, path = storage.fs_for(url)
    try:
        with fs.open(path, "rb") as f:
            yield pq.ParquetFile(f)
    except DamagedShard:
        raise
    except (pa.ArrowException, OSError) as e:
        step = writer_step(url)
        redo = (f"the output of step {step!r} is damaged; `bertflow run <spec> --force {step}` redoes it"
                if step else "the step that wrote it must be run again")
        raise DamagedShard(f"{url} does not read as Parquet ({type(e).__name__}: {e}): {redo}") from e


# --- sequence lengths ------------------------------------------------------------------


def length_folder_name(length: int) -> str:
    return f"seq{length}"


def examples_folder(url: str, max_seq_length: int | None = None) -> str:
    """The examples of one sequence length in an examples step's folder ``url``: ``url``
    itself when the step made one length, else its ``seq{L}/`` folder. Errors say what to
    set."""
    fs, path = storage.fs_for(url)
    made = sorted(int(p.rsplit("seq", 1)[1]) for p in fs.glob(posixpath.join(path, "seq*"))
                  if p.rsplit("seq", 1)[1].isdigit() and fs.isdir(p))
    if not made:
        stats = posixpath.join(path, STATS)
        if max_seq_length is not None and fs.exists(stats):
            with fs.open(stats, "rb") as f:
                flat = json.load(f).get("params", {}).get("max_seq_length")
            if flat is not None and flat != max_seq_length:
                raise ValueError(f"{url} holds examples of length {flat}, not {max_seq_length}")
        return url
    if max_seq_length is None:
        raise ValueError(f"{url} holds examples of several lengths {made}: set max_seq_length to one of them")
    if max_seq_length not in made:
        raise ValueError(f"{url} holds no examples of length {max_seq_length}; it has {made}")
    return storage.join(url, length_folder_name(max_seq_length))


# --- the vocabulary --------------------------------------------------------------------

VOCAB = "vocab.txt"
TOKENIZER = "tokenizer.json"
# What transformers' BertTokenizerFast reads beside the two above.
TOKENIZER_CONFIGS = ("tokenizer_config.json", "special_tokens_map.json")
TOKENIZER_FILES = (VOCAB, TOKENIZER, *TOKENIZER_CONFIGS)

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIALS = (PAD, UNK, CLS, SEP, MASK)

IGNORE_INDEX = -100  # a label the losses skip (torch's cross_entropy ignore_index)


def read_vocab(url: str) -> list[str]:
    """A vocab.txt file: one token per line, in UTF-8; the line number (from 0) is the id.
    BERT's special tokens are among them and no token is there twice. Errors name the
    file, and the line."""
    fs, path = storage.fs_for(url)
    with fs.open(path, "rb") as f:
        lines = f.read().split(b"\n")
    tokens = []
    for number, raw in enumerate(lines, 1):
        try:
            tokens.append(raw.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as e:
            raise ValueError(f"{url} line {number}: not UTF-8 ({e.reason} at byte {e.start} of the line); "
                             "a vocab.txt is UTF-8, one token a line") from None
    while tokens and not tokens[-1]:
        tokens.pop()
    if not tokens:
        raise ValueError(f"{url}: empty vocabulary file")
    line_of: dict[str, int] = {}
    for number, token in enumerate(tokens, 1):
        if token in line_of:
            raise ValueError(f"{url} line {number}: {token!r} again (line {line_of[token]} has it); "
                             "a token's line is its id, so each token is on one line")
        line_of[token] = number
    missing = [t for t in SPECIALS if t not in line_of]
    if missing:
        raise ValueError(f"{url} lacks the special tokens {missing}: a BERT vocab.txt has each of "
                         f"{list(SPECIALS)} on a line of its own")
    return tokens


@dataclass(frozen=True)
class SpecialIds:
    """The size of a vocabulary and the ids of its special tokens."""

    size: int
    pad: int
    unk: int
    cls: int
    sep: int
    mask: int

    @classmethod
    def of(cls, tokens: list[str], where: str = "vocab.txt") -> "SpecialIds":
        index = {t: i for i, t in enumerate(tokens)}
        missing = [t for t in SPECIALS if t not in index]
        if missing:
            raise ValueError(f"{where} lacks the special tokens {missing}: is it a BERT vocab?")
        return cls(len(tokens), *(index[t] for t in SPECIALS))
