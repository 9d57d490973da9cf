"""Plain-text books to documents: sharded Parquet of ``id``, ``title``, ``sentences``.

    python -m bertflow.pipelines.books --files "data/books/*.txt" --output /tmp/books --num-shards 2
    python -m bertflow.pipelines.books --files "corpus/*.txt" --output /tmp/bert-format --format sentences

Two input formats (``--format``):

- ``books``: one book per file, id = the file's name without extension. A Project
  Gutenberg header (up to its ``*** START OF ...`` line) and licence footer (from
  ``*** END OF ...``) are removed when present; hard-wrapped lines are joined into
  paragraphs (blank lines separate paragraphs); short unpunctuated lines such as
  ``Chapter 1`` are dropped as headings; paragraphs are split into sentences.
- ``sentences``: the original BERT tools' format, one sentence per line and a blank line
  between documents, many documents a file; ids ``<file name>:<n>``.

Files are streamed line by line, in the encoding they say: a byte order mark (UTF-8,
UTF-16, UTF-32), else UTF-8 line by line; a line that is not UTF-8 is decoded in the
encoding the file declares (a Gutenberg header's ``Character set encoding:``) or else
``--encoding`` (Windows-1252 by default, what such old texts almost always are), counted
and logged with its file and first such line. CRLF and CR line ends are line ends.
A file that is not text (NUL or control bytes, an image, an archive) or that is an HTML
or XML page is skipped, counted and logged. Work is spread by file.
"""

from __future__ import annotations

import argparse
import io
import logging
import posixpath
import re
from typing import Callable, Iterable, Iterator

import apache_beam as beam
import fsspec

from bertflow.contracts import storage
from bertflow.contracts.config import add_arguments, parse
from bertflow.contracts.layout import DOCUMENTS, DOCUMENTS_SCHEMA
from bertflow.pipelines.config import BooksConfig
from bertflow.pipelines.local_runner import freeze_heap, pipeline_options, worker_environment
from bertflow.pipelines.sniff import HEAD_BYTES, MARK, UNDECODABLE, ascii_compatible, bom_encoding, codec_name, is_markup, not_text
from bertflow.pipelines.sentences import split_sentences
from bertflow.pipelines.counters import Counters, log_skipped, metric_counters, skip_file
from bertflow.pipelines.shards import WriteParquetShards

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
# "Character set encoding: ISO-8859-1" in a Gutenberg header.
_DECLARED_ENCODING = re.compile(r"^\s*Character set encoding:\s*([A-Za-z][\w.-]*)", re.I)
# Labels that mean Windows-1252 in the texts that carry them (as the WHATWG encoding
# standard reads them): its bytes 0x80-0x9F are quotes and dashes, never C1 controls.
_READ_AS_WINDOWS_1252 = {"ascii", "iso8859-1", "cp1252"}
# A sentences-format file with this many lines and no blank line is one document: likely
# a file in another format.
ONE_DOCUMENT_WARNING = 1000

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


def read_lines(url: str, count: Count, encoding: str = "cp1252") -> Iterator[str]:
    """The lines of a text file, decoded, without line ends; streamed. A UTF-16/32 byte
    order mark (or an ``encoding`` that is not ASCII-compatible) decodes the whole file;
    else each line is UTF-8 when it can be, and otherwise in the encoding the file
    declares or ``encoding``."""
    with fsspec.open(url, "rb") as f:
        wide = bom_encoding(f.read(4))
        f.seek(0)
        if wide in (None, "utf-8") and not ascii_compatible(encoding):
            wide = encoding
        if wide not in (None, "utf-8"):
            yield from _decoded_lines(url, f, wide, count)
            return
        fallback, said = encoding, "set"
        first_bad = None
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                count("lines_not_utf8")
                if first_bad is None:
                    first_bad = number
                    log.warning("%s line %d is not UTF-8 (%s at byte %d); it and later such lines are decoded "
                                "as %s (%s), and counted", url, number, e.reason, e.start, fallback, said)
                line = raw.decode(fallback, "replace")
            if number == 1:
                line = line.lstrip("\ufeff")
            if number <= HEADER_LINES and first_bad is None and said == "set":
                declared = _DECLARED_ENCODING.match(line)
                name = codec_name(declared.group(1)) if declared else None
                if name and name != "utf-8" and ascii_compatible(name):
                    fallback, said = ("cp1252" if name in _READ_AS_WINDOWS_1252 else name), f"declared {declared.group(1)}"
            yield from _split_cr(line.rstrip("\r\n"))


def _decoded_lines(url: str, f, encoding: str, count: Count) -> Iterator[str]:
    """The lines of a file in an encoding that is not ASCII-compatible (UTF-16, UTF-32);
    undecodable bytes are counted and replaced."""
    text = io.TextIOWrapper(f, encoding=encoding, errors=MARK, newline=None)  # any line end is "\n"
    warned = False
    for number, line in enumerate(text, 1):
        if number == 1:
            line = line.lstrip("\ufeff")
        if UNDECODABLE in line:
            count("lines_undecodable")
            if not warned:
                warned = True
                log.warning("%s line %d has bytes that are not %s; replaced, and later such lines counted",
                            url, number, encoding)
            line = line.replace(UNDECODABLE, "\ufffd")
        yield line.rstrip("\n")


def _split_cr(line: str) -> Iterator[str]:
    """A line of a file with CR line ends (old Mac texts) is several lines."""
    if "\r" in line:
        yield from line.split("\r")
    else:
        yield line


def skip_reason(url: str, encoding: str) -> tuple[str, str] | None:
    """(counter, why) when the file at ``url`` is not a text to read: not text at all, or
    an HTML/XML page; None for text."""
    with fsspec.open(url, "rb") as f:
        head = f.read(HEAD_BYTES)
    wide = bom_encoding(head) or (None if ascii_compatible(encoding) else encoding)
    if wide is None:
        why = not_text(head)
        if why:
            if why.startswith("binary (NUL") and max(head[0::2].count(0), head[1::2].count(0)) > 0.4 * len(head):
                why += "; if it is UTF-16 without a byte order mark, set encoding: utf-16-le (or -be)"
            return "files_skipped_binary", f"not text: {why}"
    if is_markup(head.decode(wide or "utf-8", "replace")):
        return "files_skipped_markup", "an HTML or XML page, not plain text (convert it to text first)"
    return None


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


def book_document(url: str, name: str, count: Count, encoding: str = "cp1252") -> dict | None:
    """The one document of a book file, or None (counted) when it holds no text."""
    sentences: list[str] = []
    for k, paragraph in enumerate(paragraphs(strip_gutenberg(read_lines(url, count, encoding), count))):
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


def sentence_documents(url: str, name: str, count: Count, encoding: str = "cp1252") -> Iterator[dict]:
    """The documents of a one-sentence-per-line file: ``<name>:<n>``, n from 0. A file of
    many lines and no blank line is counted and logged: it is one document, which is
    rarely what was meant."""
    n, sentences = 0, []
    for line in read_lines(url, count, encoding):
        line = line.strip()
        if line:
            sentences.append(_SPACES.sub(" ", line))
        elif sentences:
            yield {"id": f"{name}:{n}", "title": name, "sentences": sentences}
            n, sentences = n + 1, []
    if sentences:
        if n == 0 and len(sentences) >= ONE_DOCUMENT_WARNING:
            count("files_one_document")
            log.warning("%s has %d sentences and no blank line: it is read as one document. The sentences "
                        "format puts a blank line between documents; is it a book (format: books)?",
                        url, len(sentences))
        yield {"id": f"{name}:{n}", "title": name, "sentences": sentences}


class _ReadDocuments(beam.DoFn):
    def __init__(self, format: str, encoding: str):
        self.format, self.encoding = format, encoding
        self.count = Counters(NAMESPACE)

    def setup(self):
        freeze_heap()

    def process(self, element):
        url, name = element
        count = self.count
        count("files")
        fs, path = fsspec.core.url_to_fs(url)
        if fs.size(path) == 0:
            skip_file(count, "files_empty", url, "empty file")
            return
        skip = skip_reason(url, self.encoding)
        if skip:
            skip_file(count, skip[0], url, skip[1])
            return
        if self.format == "books":
            docs = [d for d in [book_document(url, name, count, self.encoding)] if d is not None]
        else:
            docs = sentence_documents(url, name, count, self.encoding)
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
        | "Read" >> beam.ParDo(_ReadDocuments(cfg.format, cfg.encoding))
        | "Write" >> WriteParquetShards(output, DOCUMENTS, DOCUMENTS_SCHEMA, cfg.num_shards, key="id")
    )


def run(cfg: BooksConfig, output: str, options) -> dict[str, int]:
    """Run the job into ``output`` with Beam ``options``; returns its counters. Raises when
    no document came out."""
    with worker_environment(), beam.Pipeline(options=options) as p:
        build(p, cfg, output)
    counters = {k: v for k, v in metric_counters(p.result).items() if not k.endswith("_rows")}
    log_skipped(p.result, log)
    if not counters.get("documents"):
        skipped = sum(v for k, v in counters.items() if k.startswith("files_skipped_"))
        hint = f"{skipped} of {counters.get('files', 0)} files were not text and were skipped (see the warnings). " \
            if skipped else ""
        raise RuntimeError(f"no documents in {cfg.files} (format {cfg.format}): {counters}. {hint}"
                           "Check the path and the format.")
    return counters


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bertflow.pipelines.books", description=__doc__,
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
    from bertflow.pipelines import books

    books.main()
