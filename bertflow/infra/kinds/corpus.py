"""The corpus kinds: ``wikipedia`` (dumps) and ``books`` (plain-text books), both writing
the documents format (``bertflow.contracts.layout.DOCUMENTS``). The jobs and their settings are
``bertflow.pipelines.wikipedia`` and ``bertflow.pipelines.books``."""

from __future__ import annotations

from bertflow.pipelines.config import BooksConfig, WikipediaConfig

from . import StepKind, register


@register
class Wikipedia(StepKind):
    name = "wikipedia"
    version = 4  # 4: row groups of at most 16 MB of text
    Params = WikipediaConfig
    inputs = {}

    def run(self, ctx):
        from bertflow.pipelines import wikipedia
        from bertflow.pipelines.local_runner import pipeline_options

        cfg = ctx.params.model_copy(update={"dump": ctx.resolve_path(ctx.params.dump)})
        counters = wikipedia.run(cfg, ctx.output, pipeline_options(**ctx.beam))
        ctx.log.info("%s: %s", ctx.step, counters)
        return counters


@register
class Books(StepKind):
    name = "books"
    version = 3  # 3: row groups of at most 16 MB of text
    Params = BooksConfig
    inputs = {}

    def run(self, ctx):
        from bertflow.pipelines import books
        from bertflow.pipelines.local_runner import pipeline_options

        cfg = ctx.params.model_copy(update={"files": ctx.resolve_path(ctx.params.files)})
        counters = books.run(cfg, ctx.output, pipeline_options(**ctx.beam))
        ctx.log.info("%s: %s", ctx.step, counters)
        return counters
