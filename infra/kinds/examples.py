"""``pretraining_data``: documents + a vocabulary -> BERT pretraining examples (a Beam job).

The work is ``pipelines.examples``; this maps the step's params and inputs onto it. For
BERT's two phases, write two steps reading the same documents and vocab (128 with 20
predictions, 512 with 80).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from . import Input, Params, StepKind, register


class PretrainingDataParams(Params):
    # The original generator's names and defaults.
    max_seq_length: int = Field(default=128, ge=8, le=8192)
    max_predictions_per_seq: int = Field(default=20, ge=1)
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

    @model_validator(mode="after")
    def _predictions_fit(self):
        if self.max_predictions_per_seq > self.max_seq_length:
            raise ValueError("max_predictions_per_seq must be <= max_seq_length")
        return self


@register
class PretrainingData(StepKind):
    name = "pretraining_data"
    version = 3  # 2: vectorized masks, new row order; 3: buckets per documents row group (different bytes, same law)
    Params = PretrainingDataParams
    inputs = {"documents": Input(many=True), "vocab": Input()}

    def run(self, ctx):
        from pipelines.examples import ExamplesConfig, run
        from pipelines.instances import InstanceConfig

        p = ctx.params
        cfg = ExamplesConfig(
            documents=ctx.inputs["documents"],
            vocab=ctx.input("vocab"),
            output=ctx.output,
            instances=InstanceConfig(
                max_seq_length=p.max_seq_length,
                max_predictions_per_seq=p.max_predictions_per_seq,
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
        counters = run(cfg, ctx.beam_options())
        ctx.log.info("%s: %s", ctx.step, counters)
        return counters
