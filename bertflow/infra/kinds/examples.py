"""``pretraining_data``: documents + a vocabulary -> BERT pretraining examples (a Beam job).

The job and its settings are ``bertflow.pipelines.examples``. For BERT's two phases, give both
lengths to one step (the documents are read and tokenized once): ``max_seq_length: [128,
512]``, ``max_predictions_per_seq: [20, 80]``; the output then has ``seq128/`` and
``seq512/``, and each ``pretrain`` step names its length (``max_seq_length: 512``).
"""

from __future__ import annotations

from bertflow.pipelines.config import ExamplesConfig

from . import Input, StepKind, register


@register
class PretrainingData(StepKind):
    name = "pretraining_data"
    version = 5  # 4: the eval split is never empty when eval_fraction > 0; 5: two held out from four documents
    Params = ExamplesConfig
    inputs = {"documents": Input(many=True), "vocab": Input()}

    def run(self, ctx):
        from bertflow.pipelines.examples import run
        from bertflow.pipelines.local_runner import pipeline_options

        counters = run(ctx.params, ctx.inputs["documents"], ctx.input("vocab"), ctx.output, pipeline_options(**ctx.beam))
        ctx.log.info("%s: %s", ctx.step, counters)
        return counters
