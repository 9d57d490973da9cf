"""The corpus kinds: ``wikipedia`` (dumps) and ``books`` (plain-text books), both writing
the documents format: ``documents-SSSSS-of-NNNNN.parquet`` with ``id``, ``title``,
``sentences``. The work is ``pipelines.wikipedia`` and ``pipelines.books``; these map the
step's params onto them and return their Beam counters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from . import Params, StepKind, register


class WikipediaParams(Params):
    dump: str = Field(min_length=1, description="a pages-articles*.xml.bz2 file, glob, folder or URL")
    num_shards: int = Field(default=8, ge=1, le=100_000)
    # Ours: how work is cut, and the page size past which a page is counted and skipped.
    split_bytes: int | None = Field(default=None, ge=1 << 16, description="compressed bytes per work unit")
    max_page_bytes: int = Field(default=32 << 20, ge=1 << 16)


class BooksParams(Params):
    files: str = Field(min_length=1, description="a file, glob, folder or URL of plain-text files")
    # books: one book per file; sentences: one sentence per line, a blank line between
    # documents (the original BERT tools' format).
    format: Literal["books", "sentences"] = "books"
    num_shards: int = Field(default=8, ge=1, le=100_000)


@register
class Wikipedia(StepKind):
    name = "wikipedia"
    version = 4  # 2: shards written from spilled runs, row group by row group; 3: a pipe that begins a word is dropped; 4: row groups of at most 16 MB of text
    Params = WikipediaParams
    inputs = {}

    def run(self, ctx):
        from pipelines import wikipedia
        from pipelines.local_runner import pipeline_options

        p = ctx.params
        counters = wikipedia.run(ctx.resolve_path(p.dump), ctx.output, p.num_shards, pipeline_options(**ctx.beam),
                                 split_bytes=p.split_bytes, max_page_bytes=p.max_page_bytes)
        ctx.log.info("%s: %s", ctx.step, counters)
        return counters


@register
class Books(StepKind):
    name = "books"
    version = 3  # 2: shards written from spilled runs, row group by row group; 3: row groups of at most 16 MB of text
    Params = BooksParams
    inputs = {}

    def run(self, ctx):
        from pipelines import books
        from pipelines.local_runner import pipeline_options

        p = ctx.params
        counters = books.run(ctx.resolve_path(p.files), ctx.output, p.num_shards, pipeline_options(**ctx.beam), format=p.format)
        ctx.log.info("%s: %s", ctx.step, counters)
        return counters
