"""Wikipedia ``pages-articles`` dumps to documents: sharded Parquet of ``id``, ``title``,
``sentences``.

    python -m bertflow.pipelines.wikipedia --dump data/wikipedia/enwiki-sample.xml.bz2 --output /tmp/wiki --num-shards 4

The input is one dump, a glob, a folder or a URL of ``*pages-articles*.xml.bz2`` files
(plain ``.xml`` works too), single-stream or multistream. A file is read by what it holds,
not by its name: bz2 data, or XML text; anything else (gzip, an image, an HTML page) is
skipped, counted and logged, and the job fails when no file was a dump. The XML's own
encoding is read: a byte order mark (UTF-8, UTF-16, UTF-32), the first bytes of UTF-16/32
without one, or the ``<?xml ... encoding="..."?>`` declaration (any encoding Python
knows), else UTF-8; a file in another encoding than UTF-8 is transcoded to UTF-8 as it
streams, so that pages are found and parsed one way. Work is split by file and, inside
a file, by byte range: the reader of a range decompresses every bz2 stream that *starts*
in it (a stream starts with ``BZh1``..``BZh9`` and the block magic ``1AY&SY``, byte
aligned), to its end. A multistream dump (~100 pages a stream) thus keeps every worker
busy; a single-stream file is read by one worker. Nothing holds more than one page and
one chunk of a file.

Every decision is a Beam counter (namespace ``wikipedia``): files read, empty, skipped
(not named as a dump, not bz2 nor XML, not a MediaWiki export), pages read, not articles, redirects (by the
``<redirect>`` element), empty after cleaning, malformed XML, undecodable bytes, too
large, truncated, bz2 streams read/corrupt/truncated, documents, sentences, words.
Bad input is logged with its file and position and skipped; what could be read is kept.
"""

from __future__ import annotations

import argparse
import bz2
import codecs
import logging
import posixpath
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Callable, Iterator

import apache_beam as beam
import fsspec
import pyarrow as pa
import pyarrow.compute as pc

from bertflow.contracts import storage
from bertflow.contracts.config import add_arguments, parse
from bertflow.contracts.hashing import stable_hash
from bertflow.contracts.layout import DOCUMENTS, DOCUMENTS_SCHEMA
from bertflow.pipelines.config import WikipediaConfig
from bertflow.pipelines.local_runner import freeze_heap, pipeline_options, worker_environment
from bertflow.pipelines.counters import Counters, log_skipped, metric_counters, skip_file
from bertflow.pipelines.sentences import split_sentences
from bertflow.pipelines.sniff import HEAD_BYTES, MARK, codec_name, not_text, xml_encoding
from bertflow.pipelines.shards import WriteParquetShards
from bertflow.pipelines.wikitext import to_paragraphs

log = logging.getLogger(__name__)

NAMESPACE = "wikipedia"  # of the Beam counters

STREAM_MAGIC = re.compile(rb"BZh[1-9]1AY&SY")  # stream header + first block's magic
BZ2_MAGIC = re.compile(rb"BZh[1-9]")
# What a dump's head holds: the export's root element, or pages (a fragment of one).
_DUMP_MARKERS = ("<mediawiki", "<page>")
_COMPRESSED = {"gzip", "xz", "zstd", "zip", "bzip2"}
READ_CHUNK = 1 << 20  # compressed bytes read at a time
OUT_CHUNK = 4 << 20  # most decompressed bytes at a time
MAX_SPLIT_BYTES = 32 << 20
MIN_SPLIT_BYTES = 256 << 10

Count = Callable[..., None]  # count(name, n=1)


@dataclass(frozen=True)
class Split:
    """Bytes ``[start, end)`` of one dump file: its reader owns the bz2 streams that
    start there. A file that is not bz2 is one split. ``encoding``: the XML's."""

    url: str
    start: int
    end: int
    dbname: str
    compressed: bool
    encoding: str = "utf-8"


@dataclass
class Page:
    title: str
    namespace: int
    page_id: str
    revision_id: int
    redirect: bool
    text: str


# ----------------------------------------------------------------------------- input


def is_dump_name(url: str) -> bool:
    """Whether a file's name is a dump's (``.xml.bz2`` or ``.xml``): a folder or a glob
    also holds files that are not read (``.xml.gz``, checksums, a download's ``.part``)."""
    return url.endswith((".xml.bz2", ".xml"))


def list_dumps(dump: str) -> list[str]:
    """The files named by ``dump``: a file, a glob, or a folder (its ``*pages-articles*``
    files; ``-index`` files are not dumps). Files whose name is no dump's are listed too:
    the job counts and names them as skipped (``plan_splits``)."""
    fs, path = storage.fs_for(dump)
    if any(c in path for c in "*?["):
        found = storage.glob(dump)
    elif fs.isdir(path):
        found = storage.glob(storage.join(dump, "*pages-articles*"))
    elif fs.exists(path):
        found = [storage.url_of(fs, path)]
    else:
        raise FileNotFoundError(f"wikipedia dump not found: {dump} (give a file, a glob or a folder of pages-articles*.xml.bz2)")
    found = [u for u in found if "-index" not in posixpath.basename(u) and not fs.isdir(u)]
    if not any(is_dump_name(u) for u in found):
        raise FileNotFoundError(f"no *.xml.bz2 or *.xml dump files in {dump}")
    return found


def _dbname(url: str, head: str) -> str:
    """The wiki's database name (``enwiki``): from ``<dbname>`` in the siteinfo at the head
    of the file, else from the file name (``enwiki-20240101-pages-articles...``)."""
    m = re.search(r"<dbname>([^<]+)</dbname>", head)
    if m:
        return m.group(1).strip()
    return posixpath.basename(url).split("-")[0].split(".")[0]


def _read_head(f, compressed: bool, limit: int = 1 << 20) -> bytes:
    """The first bytes of XML (through ``</siteinfo>`` when it comes early)."""
    if not compressed:
        return f.read(limit)
    d, out = bz2.BZ2Decompressor(), b""
    try:
        while not d.eof and len(out) < limit and b"</siteinfo>" not in out:
            chunk = f.read(64 << 10)
            if not chunk:
                break
            out += d.decompress(chunk, max_length=limit)
    except (OSError, EOFError):
        pass  # a broken first stream is counted by the reader that owns it
    return out


def _no_count(name: str, n: int = 1) -> None:
    pass


def plan_splits(url: str, split_bytes: int | None = None, count: Count = _no_count) -> list[Split]:
    """The splits of one dump file: ranges of ``split_bytes`` (default: about 64 ranges a
    file, between 256 KiB and 32 MiB). An empty file, one that is not a dump, or one whose
    name is no dump's, has none (counted and logged)."""
    if not is_dump_name(url):
        compressed = re.search(r"\.xml\.[^./]+$", url)
        hint = "; decompress it, or recompress it with bzip2" if compressed else ""
        skip_file(count, "files_skipped_by_name", url, f"not read, as its name does not end in .xml.bz2 or .xml{hint}")
        return []
    fs, path = fsspec.core.url_to_fs(url)
    size = fs.size(path)
    if size == 0:
        skip_file(count, "files_empty", url, "empty dump file")
        return []
    with fs.open(path, "rb") as f:
        first = f.read(HEAD_BYTES)
        f.seek(0)
        compressed = bool(BZ2_MAGIC.match(first))
        # (UTF-16/32 XML without a byte order mark has NUL bytes, and is text.)
        if not compressed and xml_encoding(first)[1] != "first bytes":
            what = not_text(first)
            if what:
                hint = "; decompress it, or recompress it with bzip2" if what in _COMPRESSED else ""
                skip_file(count, "files_skipped_not_bz2", url, f"{what}, neither bz2 nor XML text{hint}")
                return []
        head = _read_head(f, compressed)
    encoding, said = xml_encoding(head)
    if codec_name(encoding) is None:
        count("files_encoding_unknown")
        log.warning("%s declares the encoding %r, which Python does not know; read as UTF-8", url, encoding)
        encoding = "utf-8"
    text = head.decode(encoding, "replace")
    if head and not any(marker in text for marker in _DUMP_MARKERS):
        skip_file(count, "files_skipped_not_dump", url,
                  f"not a MediaWiki XML export (no <mediawiki> or <page> in its first {len(head)} bytes, "
                  f"read as {encoding} by its {said}): {text[:80]!r}")
        return []
    dbname = _dbname(url, text)
    if not compressed:
        return [Split(url, 0, size, dbname, False, encoding)]
    step = split_bytes or min(MAX_SPLIT_BYTES, max(MIN_SPLIT_BYTES, -(-size // 64)))
    return [Split(url, a, min(a + step, size), dbname, True, encoding) for a in range(0, size, step)]


def next_stream(f, start: int, end: int) -> int | None:
    """The first offset in ``[start, end)`` where a bz2 stream starts, or None."""
    overlap = 9  # a magic that straddles two reads
    pos = start
    while pos < end:
        f.seek(pos)
        data = f.read(min(READ_CHUNK, end - pos) + overlap)
        m = STREAM_MAGIC.search(data)
        if m and pos + m.start() < end:
            return pos + m.start()
        if len(data) <= overlap:
            return None
        pos += READ_CHUNK
    return None


class _StreamError(Exception):
    pass


def decompress_stream(f, offset: int, position: list[int]) -> Iterator[bytes]:
    """Decompressed chunks (at most ``OUT_CHUNK`` bytes each, whatever the compression
    ratio) of the bz2 stream at ``offset``; ``position[0]`` is set to the byte just after
    the stream once it ends. Raises ``_StreamError`` on corrupt or truncated data, after
    yielding what came before it."""
    f.seek(offset)
    d = bz2.BZ2Decompressor()
    at = offset
    while not d.eof:
        chunk = b""
        if d.needs_input:
            chunk = f.read(READ_CHUNK)
            if not chunk:
                raise _StreamError("truncated")
            at += len(chunk)
        try:
            out = d.decompress(chunk, max_length=OUT_CHUNK)
        except OSError as e:  # "Invalid data stream"
            raise _StreamError(f"corrupt ({e})") from None
        if out:
            yield out
    position[0] = at - len(d.unused_data)


class PageSplitter:
    """Cuts a stream of XML chunks into ``<page>...</page>`` byte strings, holding at most
    one page (up to ``max_page_bytes``) plus one chunk. A longer page is counted, logged
    and skipped as it streams by."""

    def __init__(self, max_page_bytes: int, count: Count, where: Callable[[int], str]):
        self.max_page_bytes, self.count, self.where = max_page_bytes, count, where
        self.buf = bytearray()
        self.dropped = 0  # bytes already removed from the front of buf
        self.page_start = -1  # index in buf of the open page's "<page>", -1 when none
        self.search = 0  # where to look next in buf
        self.oversized = False  # skipping the rest of a page that was too large

    def feed(self, chunk: bytes) -> Iterator[tuple[int, bytes]]:
        """``(XML offset, page bytes)`` of each page that ends in ``chunk``."""
        buf = self.buf
        buf += chunk
        while True:
            if self.page_start < 0 and not self.oversized:
                i = buf.find(b"<page>", self.search)
                if i < 0:
                    self.search = max(self.search, len(buf) - 5)
                    break
                self.page_start, self.search = i, i + 6
            j = buf.find(b"</page>", self.search)
            if j < 0:
                self.search = max(self.search, len(buf) - 6)
                if self.page_start >= 0 and len(buf) - self.page_start > self.max_page_bytes:
                    self.count("pages_too_large")
                    log.warning("page over %d bytes skipped at %s", self.max_page_bytes,
                                self.where(self.dropped + self.page_start))
                    self.oversized, self.page_start = True, -1
                break
            end = j + len(b"</page>")
            if self.oversized:
                self.oversized = False
            else:
                yield self.dropped + self.page_start, bytes(buf[self.page_start : end])
            self.page_start, self.search = -1, end
        self._drop(self.page_start if self.page_start >= 0 else self.search)

    def _drop(self, n: int) -> None:
        if n <= 0:
            return
        del self.buf[:n]
        self.dropped += n
        self.search -= n
        if self.page_start >= 0:
            self.page_start -= n

    def finish(self, reason: str) -> None:
        """The stream ended (``reason``): a page still open is truncated."""
        if self.page_start >= 0 or self.oversized:
            self.count("pages_truncated")
            at = self.dropped + max(self.page_start, 0)
            log.warning("page cut short (%s) at %s; skipped", reason, self.where(at))


def as_utf8(chunks: Iterator[bytes], encoding: str) -> Iterator[bytes]:
    """``chunks`` of XML in ``encoding`` as UTF-8 (the same chunks when it is UTF-8). An
    undecodable byte sequence becomes the byte 0xFF, which its page's decoding counts."""
    if codec_name(encoding) == "utf-8":
        yield from chunks
        return
    decoder = codecs.getincrementaldecoder(encoding)(MARK)
    for chunk in chunks:
        text = decoder.decode(chunk)
        if text:
            yield text.encode("utf-8", MARK)
    tail = decoder.decode(b"", final=True)  # a character cut off at the end
    if tail:
        yield tail.encode("utf-8", MARK)


def read_pages(split: Split, max_page_bytes: int, count: Count) -> Iterator[tuple[bytes, str]]:
    """``(page XML bytes, where it is)`` for every page of the streams ``split`` owns, as
    UTF-8 whatever the file's encoding."""
    fs, path = fsspec.core.url_to_fs(split.url)
    xml_byte = "XML byte" if codec_name(split.encoding) == "utf-8" else f"XML byte (of its {split.encoding} as UTF-8)"
    with fs.open(path, "rb") as f:
        if not split.compressed:
            where = lambda at: f"{split.url} {xml_byte} {at}"  # noqa: E731
            pages = PageSplitter(max_page_bytes, count, where)
            for chunk in as_utf8(iter(lambda: f.read(READ_CHUNK), b""), split.encoding):
                for at, page in pages.feed(chunk):
                    yield page, where(at)
            pages.finish("end of file")
            return
        offset = next_stream(f, split.start, split.end)
        while offset is not None and offset < split.end:
            count("bz2_streams")
            where = lambda at, o=offset: f"{split.url} (bz2 stream at byte {o}, {xml_byte} {at})"  # noqa: E731
            pages = PageSplitter(max_page_bytes, count, where)
            end = [0]
            try:
                for chunk in as_utf8(decompress_stream(f, offset, end), split.encoding):
                    for at, page in pages.feed(chunk):
                        yield page, where(at)
            except _StreamError as e:
                reason = str(e).split(" ")[0]
                count(f"bz2_streams_{reason}")
                log.warning("bz2 stream %s in %s at byte %d; its pages before that are kept",
                            e, split.url, offset)
                pages.finish(f"bz2 stream {reason}")
                offset = next_stream(f, offset + 1, split.end)
                continue
            pages.finish("end of bz2 stream")
            offset = end[0]
            if offset < split.end:
                f.seek(offset)
                if not STREAM_MAGIC.match(f.read(10)):  # bytes between streams: scan on
                    offset = next_stream(f, offset, split.end)


# ----------------------------------------------------------------------------- pages


def parse_page(xml: bytes, count: Count, where: str) -> Page | None:
    """The fields of one ``<page>`` element (UTF-8 bytes, as ``read_pages`` gives them), or
    None when it is not well-formed XML."""
    try:
        text = xml.decode("utf-8")
    except UnicodeDecodeError as e:
        count("pages_undecodable")
        log.warning("page has bytes that are not in the file's encoding (%s) at %s; they are replaced",
                    e.reason, where)
        text = xml.decode("utf-8", "replace")
    try:
        page = ET.fromstring(text)
    except ET.ParseError as e:
        count("pages_malformed")
        log.warning("malformed page XML (%s) at %s; skipped", e, where)
        return None
    revision = page.find("revision")
    ns = page.findtext("ns")
    try:
        return Page(
            title=(page.findtext("title") or "").strip(),
            namespace=int(ns) if ns is not None else 0,
            page_id=(page.findtext("id") or "").strip(),
            revision_id=int(revision.findtext("id") or 0) if revision is not None else 0,
            redirect=page.find("redirect") is not None,
            text=(revision.findtext("text") or "") if revision is not None else "",
        )
    except ValueError as e:
        count("pages_malformed")
        log.warning("malformed page fields (%s) at %s; skipped", e, where)
        return None


def page_document(page: Page, dbname: str, count: Count) -> dict | None:
    """The document of an article page, or None (counted) for anything else."""
    if page.namespace != 0:
        count("pages_non_article")
        return None
    if page.redirect:
        count("pages_redirect")
        return None
    if not page.page_id:
        count("pages_malformed")
        return None
    sentences = [s for paragraph in to_paragraphs(page.text) for s in split_sentences(paragraph)]
    if not sentences:
        count("pages_empty")
        return None
    return {"id": f"{dbname}:{page.page_id}", "title": page.title, "sentences": sentences,
            "revision": page.revision_id}


# ----------------------------------------------------------------------------- Beam


class _PlanSplits(beam.DoFn):
    def __init__(self, split_bytes):
        self.split_bytes = split_bytes
        self.count = Counters(NAMESPACE)

    def process(self, url):
        self.count("files")
        splits = plan_splits(url, self.split_bytes, self.count)
        # In a scattered order: the local runner deals the splits out to its workers in
        # turn, in the order they come, and neighbouring splits may differ in work.
        yield from sorted(splits, key=lambda s: stable_hash(s.url, s.start))


class _ExtractDocuments(beam.DoFn):
    def __init__(self, max_page_bytes: int):
        self.max_page_bytes = max_page_bytes
        self.count = Counters(NAMESPACE)

    def setup(self):
        freeze_heap()

    def process(self, split: Split):
        count = self.count
        for xml, where in read_pages(split, self.max_page_bytes, count):
            count("pages_read")
            page = parse_page(xml, count, where)
            if page is None:
                continue
            doc = page_document(page, split.dbname, count)
            if doc is not None:
                yield doc


def latest_revision(docs: list[dict]) -> dict:
    """Of documents with one id (a page in two files of the input, say the plain and the
    multistream dump of one wiki): the latest revision, ties broken by content, never by
    arrival order."""
    return max(docs, key=lambda d: (d["revision"], d["title"], d["sentences"]))


def _document_counts(docs: pa.Table) -> dict[str, int]:
    # Sentences have single spaces (the cleaner collapses whitespace).
    sentences = pc.list_flatten(docs.column("sentences"))
    spaces = pc.sum(pc.count_substring(sentences, " ")).as_py() or 0
    return {"documents": docs.num_rows, "sentences": len(sentences), "words": spaces + len(sentences)}


SPILL_SCHEMA = pa.schema([*DOCUMENTS_SCHEMA, ("revision", pa.int64())])


def build(pipeline, cfg: WikipediaConfig, output: str):
    """Add the extraction to ``pipeline``; returns the PCollection of written shards."""
    files = list_dumps(cfg.dump)
    return (
        pipeline
        | "Files" >> beam.Create(files)
        | "PlanSplits" >> beam.ParDo(_PlanSplits(cfg.split_bytes))
        | "Spread" >> beam.Reshuffle()
        | "Extract" >> beam.ParDo(_ExtractDocuments(cfg.max_page_bytes))
        | "Write" >> WriteParquetShards(output, DOCUMENTS, DOCUMENTS_SCHEMA, cfg.num_shards, key="id",
                                        pick=latest_revision, spill_schema=SPILL_SCHEMA, count_rows=_document_counts)
    )


def run(cfg: WikipediaConfig, output: str, options) -> dict[str, int]:
    """Run the extraction into ``output`` with Beam ``options``; returns its counters.
    Raises when no document came out (nothing to build a corpus from)."""
    with worker_environment(), beam.Pipeline(options=options) as p:
        build(p, cfg, output)
    counters = metric_counters(p.result)
    counters = {k: v for k, v in counters.items() if not k.endswith("_rows")}
    log_skipped(p.result, log)
    if not counters.get("documents"):
        skipped = sum(v for k, v in counters.items() if k.startswith("files_skipped_"))
        hint = f"{skipped} of {counters.get('files', 0)} files were not dumps and were skipped (see the warnings). " \
            if skipped else ""
        raise RuntimeError(
            f"no documents extracted from {cfg.dump}: {counters}. {hint}Check that it is a "
            "pages-articles dump (.xml.bz2) with articles (namespace 0) that are not redirects."
        )
    return counters


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bertflow.pipelines.wikipedia", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", required=True, help="output folder (any fsspec URL)")
    ap.add_argument("--workers", type=int, default=2, help="local Beam worker processes")
    add_arguments(ap, WikipediaConfig)
    return ap


def main(argv: list[str] | None = None) -> None:
    ap = parser()
    args = ap.parse_args(argv)
    cfg = parse(WikipediaConfig, args, ap)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    freeze_heap()
    for name, value in run(cfg, args.output, pipeline_options(direct_num_workers=args.workers)).items():
        print(f"{name}\t{value}")


if __name__ == "__main__":
    # Run the module's importable twin, so Beam pickles classes as pipelines.wikipedia.X
    # (not __main__.X, which worker processes cannot find).
    from bertflow.pipelines import wikipedia

    wikipedia.main()
