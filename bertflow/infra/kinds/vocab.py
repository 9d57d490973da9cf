"""The ``vocab`` kind: a BERT WordPiece vocabulary and tokenizer from documents steps.

Learns one (``bertflow.pipelines.vocab`` counts words with Beam, ``bertflow.pipelines.wordpiece`` learns from
the counts) or reuses a given ``vocab_file``; either way it writes vocab.txt,
tokenizer.json, the transformers tokenizer configs, word_counts.tsv and report.json.
"""

from __future__ import annotations

from bertflow.pipelines.config import VocabConfig

from . import Input, StepKind, register


@register
class Vocab(StepKind):
    name = "vocab"
    version = 1
    Params = VocabConfig
    inputs = {"documents": Input(many=True)}

    def run(self, ctx):
        from bertflow.pipelines import vocab
        from bertflow.pipelines.local_runner import pipeline_options

        cfg = ctx.params
        if cfg.vocab_file:
            cfg = cfg.model_copy(update={"vocab_file": ctx.resolve_path(cfg.vocab_file)})
        counters = vocab.run(cfg, ctx.inputs["documents"], ctx.output, pipeline_options(**ctx.beam))
        ctx.log.info("%s: %s", ctx.step, counters)
        return counters
