"""Rewrite a ``pages-articles`` dump as a multistream dump, the layout Wikimedia publishes
as ``*-pages-articles-multistream.xml.bz2``: one bz2 stream for the header, one per
``pages_per_stream`` pages, one for the footer, concatenated.

    python -m bertflow.pipelines.multistream data/wikipedia/enwiki-sample.xml.bz2 /tmp/sample-multistream.xml.bz2
    python -m bertflow.pipelines.multistream data/wikipedia/enwiki-sample.xml.bz2 /tmp/x8.xml.bz2 --repeat 8

``--repeat N`` writes the pages N times as distinct pages (copy k > 0 gets page id
``id + k * id_stride`` and title ``"title (k)"``): a bigger dump of real text for
benchmarks. The source is streamed; nothing holds more than one stream of pages. The
dump keeps its encoding: pages are found by the encoded ``<page>`` and ``</page>``, at
whole code units in UTF-16/32 (where ``<`` is one unit, never half of a pair), so the
pieces are cut between characters.
"""

from __future__ import annotations

import argparse
import bz2
import re
from typing import Iterator

import fsspec

from bertflow.pipelines.sniff import ascii_compatible, xml_encoding

_PAGE_ID = re.compile(rb"(<page>.*?<id>)(\d+)(</id>)", re.S)
_TITLE = re.compile(rb"<title>(.*?)</title>", re.S)


def read_xml_chunks(url: str, chunk: int = 1 << 20) -> Iterator[bytes]:
    with fsspec.open(url, "rb") as raw:
        f = bz2.BZ2File(raw) if url.endswith(".bz2") else raw
        yield from iter(lambda: f.read(chunk), b"")


class _Encoded:
    """The markers ``split_dump`` looks for, in a dump's encoding, found at whole code
    units only."""

    def __init__(self, encoding: str):
        self.encoding = encoding
        self.unit = 1 if ascii_compatible(encoding) else len("<".encode(encoding))
        self.page, self.end_page, self.newline = ("<page>".encode(encoding), "</page>".encode(encoding),
                                                  "\n".encode(encoding))

    def find(self, buf: bytes, pattern: bytes, start: int = 0) -> int:
        i = buf.find(pattern, start)
        while i > 0 and i % self.unit:
            i = buf.find(pattern, i + 1)
        return i

    def rfind(self, buf: bytes, pattern: bytes, end: int) -> int:
        i = buf.rfind(pattern, 0, end)
        while i > 0 and i % self.unit:
            i = buf.rfind(pattern, 0, i)
        return i


def split_dump(url: str) -> Iterator[tuple[str, bytes]]:
    """``("head", bytes)``, then ``("page", bytes)`` per page, then ``("tail", bytes)``, in
    the dump's own encoding."""
    buf, head_done, marks = b"", False, None
    for chunk in read_xml_chunks(url):
        buf += chunk
        if marks is None:
            marks = _Encoded(xml_encoding(buf)[0])
        while True:
            start = marks.find(buf, marks.page)
            if start < 0:
                break
            if not head_done:
                # The indentation before the first <page> belongs to the page.
                nl = marks.rfind(buf, marks.newline, start)
                cut = nl + len(marks.newline) if nl >= 0 else 0
                yield "head", buf[:cut]
                buf, head_done = buf[cut:], True
                continue
            end = marks.find(buf, marks.end_page, start)
            if end < 0:
                break
            nl = marks.find(buf, marks.newline, end)
            end = nl + len(marks.newline) if nl >= 0 else len(buf)
            yield "page", buf[:end]
            buf = buf[end:]
    if not head_done:
        raise ValueError(f"no <page> in {url}")
    yield "tail", buf


def renumber(page: bytes, copy: int, id_stride: int, encoding: str = "utf-8") -> bytes:
    """Copy ``copy`` of a page (in ``encoding``) as a distinct page: new page id and title."""
    if copy == 0:
        return page
    if not ascii_compatible(encoding):
        return renumber(page.decode(encoding).encode("utf-8"), copy, id_stride).decode("utf-8").encode(encoding)
    page = _PAGE_ID.sub(lambda m: m.group(1) + str(int(m.group(2)) + copy * id_stride).encode() + m.group(3), page, count=1)
    return _TITLE.sub(lambda m: b"<title>" + m.group(1) + b" (%d)</title>" % copy, page, count=1)


def write_multistream(src: str, dst: str, pages_per_stream: int = 100, repeat: int = 1,
                      id_stride: int = 100_000_000) -> int:
    """Write ``src`` (plain or bz2 XML dump) to ``dst`` as a multistream dump; returns the
    number of pages written. Written to a temporary name, then renamed."""
    fs, path = fsspec.core.url_to_fs(dst)
    tmp = path + ".tmp"
    written = 0
    with fs.open(tmp, "wb") as out:
        batch: list[bytes] = []

        def flush():
            if batch:
                out.write(bz2.compress(b"".join(batch), 9))
                batch.clear()

        tail, encoding = b"", "utf-8"
        for copy in range(repeat):
            for what, data in split_dump(src):
                if what == "head":
                    encoding = xml_encoding(data)[0]
                    if copy == 0:
                        out.write(bz2.compress(data, 9))
                elif what == "page":
                    batch.append(renumber(data, copy, id_stride, encoding))
                    written += 1
                    if len(batch) == pages_per_stream:
                        flush()
                else:
                    tail = data
        flush()
        out.write(bz2.compress(tail, 9))
    fs.mv(tmp, path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="a pages-articles dump (.xml or .xml.bz2)")
    parser.add_argument("dst", help="the multistream dump to write (.xml.bz2)")
    parser.add_argument("--pages-per-stream", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    n = write_multistream(args.src, args.dst, args.pages_per_stream, args.repeat)
    print(f"{n} pages written to {args.dst}")


if __name__ == "__main__":
    main()
