"""The ``vocab`` kind: a BERT WordPiece vocabulary and tokenizer from documents steps.

Learns one (``pipelines.vocab`` counts words with Beam, ``pipelines.wordpiece`` learns from
the counts) or reuses a given ``vocab_file``; either way it writes vocab.txt,
tokenizer.json, the transformers tokenizer configs, word_counts.tsv and report.json.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from . import Input, Params, StepKind, register


class VocabParams(Params):
    vocab_size: int = Field(default=30522, ge=16, le=1_000_000, description="lines of vocab.txt, specials included")
    lowercase: bool = Field(default=True, description="uncased (lowercase, strip accents) or cased")
    min_count: int = Field(default=1, ge=1, description="words seen fewer times are not learned from")
    min_piece_count: int = Field(default=2, ge=1, description="lowest count a learned piece may have")
    max_words: int = Field(default=500_000, ge=1, description="most frequent distinct words kept for learning")
    num_unused: int = Field(default=0, ge=0, le=10_000, description="[unusedN] slots, in bert-base's layout")
    vocab_file: str | None = Field(default=None, min_length=1, description="reuse this vocab.txt: no learning")
    heldout_fraction: float = Field(default=0.02, ge=0, lt=1, description="documents held out for the report")
    seed: int = 12345
    max_unique_chars: int = Field(default=1000, ge=1, description="alphabet size of the learner")

    @model_validator(mode="after")
    def _room_for_reserved(self):
        if self.vocab_file is None and self.vocab_size <= self.num_unused + 5:
            raise ValueError(f"vocab_size {self.vocab_size} leaves no room after the 5 specials and num_unused")
        return self


@register
class Vocab(StepKind):
    name = "vocab"
    version = 1
    Params = VocabParams
    inputs = {"documents": Input(many=True)}

    def run(self, ctx):
        from pipelines import vocab
        from pipelines.local_runner import pipeline_options

        p = ctx.params
        cfg = vocab.VocabConfig(
            vocab_size=p.vocab_size,
            lowercase=p.lowercase,
            min_count=p.min_count,
            max_words=p.max_words,
            min_piece_count=p.min_piece_count,
            num_unused=p.num_unused,
            vocab_file=ctx.resolve_path(p.vocab_file) if p.vocab_file else None,
            heldout_fraction=p.heldout_fraction,
            seed=p.seed,
            max_unique_chars=p.max_unique_chars,
        )
        counters = vocab.run(ctx.inputs["documents"], ctx.output, cfg, pipeline_options(**ctx.beam))
        ctx.log.info("%s: %s", ctx.step, counters)
        return counters
