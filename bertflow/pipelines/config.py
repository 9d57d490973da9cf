"""The settings of each Beam job: one pydantic model per job, its one schema.

A step kind uses the model as its ``params:`` schema; the job's ``python -m`` command line
is generated from it (``bertflow.contracts.config.add_arguments``). Where a job reads and writes
(inputs, output, workers) is wiring, not settings: the kind or the command line passes it
to the job's ``run``. This module imports no engine, so that loading the kinds stays quick.
"""

from __future__ import annotations

import codecs
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from bertflow.contracts.config import Config, data_path, operational


class WikipediaConfig(Config):
    dump: str = data_path(min_length=1, description="a pages-articles*.xml.bz2 file, glob, folder or URL")
    num_shards: int = Field(8, ge=1, le=100_000, description="documents-*.parquet files written")
    # The reader of a byte range reads each bz2 stream that starts in it to its end, so the
    # ranges cut the work, never the pages.
    split_bytes: int | None = operational(None, ge=1 << 16, description="compressed bytes per work unit")
    max_page_bytes: int = Field(32 << 20, ge=1 << 16, description="a larger page is counted and skipped")


class BooksConfig(Config):
    files: str = data_path(min_length=1, description="a file, glob, folder or URL of plain-text files")
    format: Literal["books", "sentences"] = Field(
        "books", description="books: one book per file; sentences: one sentence per line, "
        "a blank line between documents (the original BERT tools' format)")
    num_shards: int = Field(8, ge=1, le=100_000, description="documents-*.parquet files written")
    # Windows-1252: what old texts that are not UTF-8 almost always are (and what their
    # "ISO-8859-1" labels mean in practice).
    encoding: str = Field("cp1252", min_length=1, description="of a file without a byte order mark whose lines "
                          "are not UTF-8, unless the file declares its own (any encoding Python knows)")

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, name: str) -> str:
        try:
            codecs.lookup(name)
        except LookupError:
            raise ValueError(f"unknown encoding {name!r} (give one Python knows: cp1252, latin-1, utf-16, ...)") from None
        return name


class VocabConfig(Config):
    vocab_size: int = Field(30522, ge=16, le=1_000_000, description="lines of vocab.txt, specials included")
    lowercase: bool = Field(True, description="uncased (lowercase, strip accents) or cased")
    min_count: int = Field(1, ge=1, description="words seen fewer times are not learned from")
    min_piece_count: int = Field(2, ge=1, description="lowest count a learned piece may have")
    max_words: int = Field(500_000, ge=1, description="most frequent distinct words kept for learning")
    num_unused: int = Field(0, ge=0, le=10_000, description="[unusedN] slots, in bert-base's layout")
    vocab_file: str | None = data_path(None, min_length=1, description="reuse this vocab.txt: no learning")
    heldout_fraction: float = Field(0.02, ge=0, lt=1, description="documents held out for the report")
    seed: int = 12345
    max_unique_chars: int = Field(1000, ge=1, description="alphabet size of the learner")

    @model_validator(mode="after")
    def _room_for_reserved(self):
        if self.vocab_file is None and self.vocab_size <= self.num_unused + 5:
            raise ValueError(f"vocab_size {self.vocab_size} leaves no room after the 5 specials and num_unused")
        return self


Length = Annotated[int, Field(ge=8, le=8192)]
Predictions = Annotated[int, Field(ge=1)]


class InstanceConfig(Config):
    """How the instances of one sequence length are cut and masked (the names and defaults
    of the original generator, ``create_pretraining_data.py``; see ``bertflow.pipelines.instances``)."""

    model_config = ConfigDict(frozen=True)

    max_seq_length: Length = 128
    max_predictions_per_seq: Predictions = 20
    masked_lm_prob: float = Field(0.15, gt=0, lt=1)
    short_seq_prob: float = Field(0.1, ge=0, le=1, description="share of instances with a shorter random target")
    do_whole_word_mask: bool = False
    nsp: bool = Field(True, description="sentence pairs for next-sentence prediction; false: MLM only, "
                      "sentences packed into full sequences")
    masking: Literal["static", "dynamic"] = Field("static", description="dynamic: stored unmasked, the trainer masks")

    @model_validator(mode="after")
    def _predictions_fit(self):
        if self.max_predictions_per_seq > self.max_seq_length:
            raise ValueError(f"max_predictions_per_seq ({self.max_predictions_per_seq}) must be <= "
                             f"max_seq_length ({self.max_seq_length})")
        return self


class ExamplesConfig(InstanceConfig):
    """The examples job: the instance settings, for one or several sequence lengths (the
    documents are read and tokenized once for all), and how the output is split."""

    max_seq_length: Length | list[Length] = Field(128, description="one length, or several: a seq{L}/ folder each")
    max_predictions_per_seq: Predictions | list[Predictions] = Field(
        20, description="one number (for every length), or one per max_seq_length")
    dupe_factor: int = Field(10, ge=1, description="passes over each document, each with its own random stream")
    seed: int = 12345
    eval_fraction: float = Field(0.01, ge=0, lt=1, description="share of documents held out")
    num_shards: int = Field(16, ge=1, description="train-*.parquet files (per length)")
    docs_per_bucket: int = Field(256, ge=2, description="documents a worker groups for random-next partners")

    def seq_lengths(self) -> list[int]:
        return self.max_seq_length if isinstance(self.max_seq_length, list) else [self.max_seq_length]

    def lengths(self) -> list[tuple[int, int]]:
        """(max_seq_length, max_predictions_per_seq) of each length the job makes."""
        lengths = self.seq_lengths()
        predictions = self.max_predictions_per_seq
        if not isinstance(predictions, list):
            predictions = [predictions] * len(lengths)
        return list(zip(lengths, predictions))

    def instance_configs(self) -> list[InstanceConfig]:
        """One ``InstanceConfig`` per length, in the order given."""
        shared = self.model_dump(include=set(InstanceConfig.model_fields) - {"max_seq_length", "max_predictions_per_seq"})
        return [InstanceConfig(max_seq_length=length, max_predictions_per_seq=predictions, **shared)
                for length, predictions in self.lengths()]

    @model_validator(mode="after")
    def _predictions_fit(self):
        lengths = self.seq_lengths()
        if not lengths or len(set(lengths)) != len(lengths):
            raise ValueError(f"max_seq_length: give one length or a list of distinct lengths, got {lengths}")
        if isinstance(self.max_predictions_per_seq, list) and len(self.max_predictions_per_seq) != len(lengths):
            raise ValueError("max_predictions_per_seq: give one number, or one per max_seq_length "
                             f"({len(lengths)}), got {len(self.max_predictions_per_seq)}")
        for length, predictions in self.lengths():
            if predictions > length:
                raise ValueError(f"max_predictions_per_seq ({predictions}) must be <= max_seq_length ({length})")
        return self
