"""Plain-text books to documents: sharded Parquet of ``id``, ``title``, ``sentences``.

    python -m pipelines.books --files "data/books/*.txt" --output /tmp/books --num-shards 2
    python -m pipelines.books --files "corpus/*.txt" --output /tmp/bert-format --format sentences

Two input formats (``--format``):

- ``books``: one book per file, id = the file's name without extension. A Project
  Gutenberg header (up to its ``*** START OF ...`` line) and licence footer (from
  ``*** END OF ...``) are removed when present; hard-wrapped lines are joined into
  paragraphs (blank lines separate paragraphs); short unpunctuated lines such as
  ``Chapter 1`` are dropped as headings; paragraphs are split into sentences.
- ``sentences``: the original BERT tools' format, one sentence per line and a blank line
  between documents, many documents a file; ids ``<file name>:<n>``.

Files are streamed line by line. A line that is not UTF-8 is decoded as Windows-1252
(what such old texts almost always are), counted and logged with its file and line.
Work is spread by file.
"""

from __future__ import annotations

import argparse
import logging
import posixpath
import re
from typing import Callable, Iterable, Iterator

import apache_beam as beam
import fsspec

from contracts import storage
from contracts.config import add_arguments, parse
from contracts.layout import DOCUMENTS, DOCUMENTS_SCHEMA
from pipelines.config import BooksConfig
from pipelines.local_runner import freeze_heap, pipeline_options, worker_allocators
from pipelines.sentences import split_sentences
from pipelines.counters import Counters, metric_counters
from pipelines.shards import WriteParquetShards

log = logging.getLogger(__name__)

NAMESPACE = "books"

# Gutenberg's markers, old and new: "*** START OF THE PROJECT GUTENBERG EBOOK EMMA ***",
# "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*...", "End of the Project Gutenberg EBook".
_GUTENBERG_START = re.compile(r"^\s*(\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG|\*END\*THE SMALL PRINT)", re.I)
_GUTENBERG_END = re.compile(r"^\s*(\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg)", re.I)
# The transcriber's credit that opens many Gutenberg texts, right after the header.
_GUTENBERG_CREDIT = re.compile(r"^(Produced|Transcribed|Prepared|E-?text prepared|Scanned) by\b", re.I)
HEADER_LINES = 1000  # a Gutenberg header ends within this many lines, or there is none
_EMPHASIS = re.compile(r"(?<![\w*])[_*](\S(?:[^_*\n]*?\S)?)[_*](?![\w*])")  # _word_ -> word
_SPACES = re.compile(r"\s+")
_SENTENCE_END = ".!?\"'”’:;"

Count = Callable[..., None]


def list_files(files: str) -> list[str]:
    """The files named by ``files``: one file, a glob, or a folder (its files)."""
    fs, path = storage.fs_for(files)
    if any(c in path for c in "*?["):
        found = storage.glob(files)
    elif fs.isdir(path):
        found = [storage.url_of(fs, p) for p in sorted(fs.find(path))]
    elif fs.exists(path):
        found = [storage.url_of(fs, path)]
    else:
        raise FileNotFoundError(f"books not found: {files} (give a file, a glob or a folder of .txt files)")
    found = [u for u in found if not fs.isdir(u) and not posixpath.basename(u).startswith(".")]
    if not found:
        raise FileNotFoundError(f"no files in {files}")
    return found


def document_names(urls: list[str]) -> dict[str, str]:
    """A unique name per file: its name without extension, or, when two files share
    one, its path under the files' common folder."""
    stems = {u: posixpath.splitext(posixpath.basename(u))[0] for u in urls}
    if len(set(stems.values())) == len(stems):
        return stems
    root = posixpath.commonpath([posixpath.dirname(u.split("://")[-1]) for u in urls])
    return {u: posixpath.splitext(posixpath.relpath(u.split("://")[-1], root))[0] for u in urls}


def read_lines(url: str, count: Count) -> Iterator[str]:
    """The lines of a text file, decoded, without line ends; streamed."""
    with fsspec.open(url, "rb") as f:
        first = True
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                count("lines_not_utf8")
                log.warning("%s line %d is not UTF-8 (%s at byte %d); decoded as Windows-1252",
                            url, number, e.reason, e.start)
                line = raw.decode("cp1252", "replace")
            if first:
                line, first = line.lstrip("\ufeff"), False
            yield line.rstrip("\r\n")


def strip_gutenberg(lines: Iterable[str], count: Count) -> Iterator[str]:
    """The lines between a Project Gutenberg header and licence footer, when present."""
    lines = iter(lines)
    head: list[str] = []
    for line in lines:
        if _GUTENBERG_START.match(line):
            count("gutenberg_headers_removed")
            head = []
            break
        head.append(line)
        if len(head) >= HEADER_LINES:
            break
    for line in _chain(head, lines):
        if _GUTENBERG_END.match(line):
            count("gutenberg_footers_removed")
            return
        yield line


def _chain(first: list[str], rest: Iterator[str]) -> Iterator[str]:
    yield from first
    yield from rest


def paragraphs(lines: Iterable[str]) -> Iterator[str]:
    """Hard-wrapped lines joined: a paragraph ends at a blank line."""
    current: list[str] = []
    for line in lines:
        if line.strip():
            current.append(line.strip())
        elif current:
            yield " ".join(current)
            current = []
    if current:
        yield " ".join(current)


def is_heading(paragraph: str) -> bool:
    """``Chapter 1``, ``VOLUME I``, ``by Jane Austen``, ``* * *``: short, and not ended
    like a sentence."""
    return len(paragraph.split()) <= 8 and not paragraph.endswith(tuple(_SENTENCE_END))


def book_document(url: str, name: str, count: Count) -> dict | None:
    """The one document of a book file, or None (counted) when it holds no text."""
    sentences: list[str] = []
    for k, paragraph in enumerate(paragraphs(strip_gutenberg(read_lines(url, count), count))):
        paragraph = _SPACES.sub(" ", _EMPHASIS.sub(r"\1", paragraph)).strip()
        if k < 5 and _GUTENBERG_CREDIT.match(paragraph):
            count("gutenberg_credits_removed")
            continue
        if is_heading(paragraph) or not any(c.isalpha() for c in paragraph):
            count("paragraphs_dropped_as_headings")
            continue
        count("paragraphs")
        sentences.extend(split_sentences(paragraph))
    if not sentences:
        count("books_empty")
        log.warning("no text in book %s; skipped", url)
        return None
    return {"id": name, "title": name, "sentences": sentences}


def sentence_documents(url: str, name: str, count: Count) -> Iterator[dict]:
    """The documents of a one-sentence-per-line file: ``<name>:<n>``, n from 0."""
    n, sentences = 0, []
    for line in read_lines(url, count):
        line = line.strip()
        if line:
            sentences.append(_SPACES.sub(" ", line))
        elif sentences:
            yield {"id": f"{name}:{n}", "title": name, "sentences": sentences}
            n, sentences = n + 1, []
    if sentences:
        yield {"id": f"{name}:{n}", "title": name, "sentences": sentences}


class _ReadDocuments(beam.DoFn):
    def __init__(self, format: str):
        self.format = format
        self.count = Counters(NAMESPACE)

    def setup(self):
        freeze_heap()

    def process(self, element):
        url, name = element
        count = self.count
        count("files")
        fs, path = fsspec.core.url_to_fs(url)
        if fs.size(path) == 0:
            count("files_empty")
            log.warning("empty file skipped: %s", url)
            return
        if self.format == "books":
            docs = [d for d in [book_document(url, name, count)] if d is not None]
        else:
            docs = sentence_documents(url, name, count)
        for doc in docs:
            count("documents")
            count("sentences", len(doc["sentences"]))
            count("words", sum(len(s.split()) for s in doc["sentences"]))
            yield doc


def build(pipeline, cfg: BooksConfig, output: str):
    """Add the job to ``pipeline``; returns the PCollection of written shards."""
    urls = list_files(cfg.files)
    names = document_names(urls)
    return (
        pipeline
        | "Files" >> beam.Create([(u, names[u]) for u in urls])
        | "Spread" >> beam.Reshuffle()
        | "Read" >> beam.ParDo(_ReadDocuments(cfg.format))
        | "Write" >> WriteParquetShards(output, DOCUMENTS, DOCUMENTS_SCHEMA, cfg.num_shards, key="id")
    )


def run(cfg: BooksConfig, output: str, options) -> dict[str, int]:
    """Run the job into ``output`` with Beam ``options``; returns its counters. Raises when
    no document came out."""
    with worker_allocators(), beam.Pipeline(options=options) as p:
        build(p, cfg, output)
    counters = {k: v for k, v in metric_counters(p.result).items() if not k.endswith("_rows")}
    if not counters.get("documents"):
        raise RuntimeError(f"no documents in {cfg.files} (format {cfg.format}): {counters}. "
                           "Check the path and the format.")
    return counters


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pipelines.books", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", required=True, help="output folder (any fsspec URL)")
    ap.add_argument("--workers", type=int, default=2, help="local Beam worker processes")
    add_arguments(ap, BooksConfig)
    return ap


def main(argv: list[str] | None = None) -> None:
    ap = parser()
    args = ap.parse_args(argv)
    cfg = parse(BooksConfig, args, ap)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    freeze_heap()
    for name, value in run(cfg, args.output, pipeline_options(direct_num_workers=args.workers)).items():
        print(f"{name}\t{value}")


if __name__ == "__main__":
    # The importable twin, so Beam pickles pipelines.books.X rather than __main__.X.
    from pipelines import books

    books.main()
