"""``pretraining_data``: documents + a vocabulary -> BERT pretraining examples (a Beam job).

The work is ``pipelines.examples``; this maps the step's params and inputs onto it. For
BERT's two phases, give both lengths to one step (the documents are read and tokenized
once): ``max_seq_length: [128, 512]``, ``max_predictions_per_seq: [20, 80]``; the output
then has ``seq128/`` and ``seq512/``, and each ``pretrain`` step names its length
(``max_seq_length: 512``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from . import Input, Params, StepKind, register


class PretrainingDataParams(Params):
    # The original generator's names and defaults.
    # a list makes several lengths in one job; a scalar max_predictions_per_seq goes with each
    max_seq_length: Annotated[int, Field(ge=8, le=8192)] | list[Annotated[int, Field(ge=8, le=8192)]] = 128
    max_predictions_per_seq: Annotated[int, Field(ge=1)] | list[Annotated[int, Field(ge=1)]] = 20
    masked_lm_prob: float = Field(default=0.15, gt=0, lt=1)
    dupe_factor: int = Field(default=10, ge=1)
    short_seq_prob: float = Field(default=0.1, ge=0, le=1)
    do_whole_word_mask: bool = False
    seed: int = 12345
    # Ours.
    nsp: bool = True  # false: MLM only, sentences packed into full sequences
    masking: Literal["static", "dynamic"] = "static"  # dynamic: stored unmasked, the trainer masks
    eval_fraction: float = Field(default=0.01, ge=0, lt=1)  # share of documents held out
    num_shards: int = Field(default=16, ge=1)
    docs_per_bucket: int = Field(default=256, ge=2)  # documents a worker groups for random-next partners

    def seq_lengths(self) -> list[int]:
        return self.max_seq_length if isinstance(self.max_seq_length, list) else [self.max_seq_length]

    def lengths(self) -> list[tuple[int, int]]:
        """(max_seq_length, max_predictions_per_seq) of each length the step makes."""
        lengths = self.seq_lengths()
        predictions = self.max_predictions_per_seq
        if not isinstance(predictions, list):
            predictions = [predictions] * len(lengths)
        return list(zip(lengths, predictions))

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


@register
class PretrainingData(StepKind):
    name = "pretraining_data"
    version = 3  # 2: vectorized masks, new row order; 3: buckets per documents row group (different bytes, same law)
    Params = PretrainingDataParams
    inputs = {"documents": Input(many=True), "vocab": Input()}

    def run(self, ctx):
        from pipelines.examples import ExamplesConfig, run
        from pipelines.instances import instance_configs
        from pipelines.local_runner import pipeline_options

        p = ctx.params
        cfg = ExamplesConfig(
            documents=ctx.inputs["documents"],
            vocab=ctx.input("vocab"),
            output=ctx.output,
            instances=instance_configs(
                p.lengths(),
                masked_lm_prob=p.masked_lm_prob,
                short_seq_prob=p.short_seq_prob,
                do_whole_word_mask=p.do_whole_word_mask,
                nsp=p.nsp,
                masking=p.masking,
            ),
            dupe_factor=p.dupe_factor,
            seed=p.seed,
            eval_fraction=p.eval_fraction,
            num_shards=p.num_shards,
            docs_per_bucket=p.docs_per_bucket,
        )
        counters = run(cfg, pipeline_options(**ctx.beam))
        ctx.log.info("%s: %s", ctx.step, counters)
        return counters
