"""Rewrite a ``pages-articles`` dump as a multistream dump, the layout Wikimedia publishes
as ``*-pages-articles-multistream.xml.bz2``: one bz2 stream for the header, one per
``pages_per_stream`` pages, one for the footer, concatenated.

    python -m pipelines.multistream data/wikipedia/enwiki-sample.xml.bz2 /tmp/sample-multistream.xml.bz2
    python -m pipelines.multistream data/wikipedia/enwiki-sample.xml.bz2 /tmp/x8.xml.bz2 --repeat 8

``--repeat N`` writes the pages N times as distinct pages (copy k > 0 gets page id
``id + k * id_stride`` and title ``"title (k)"``): a bigger dump of real text for
benchmarks. The source is streamed; nothing holds more than one stream of pages.
"""

from __future__ import annotations

import argparse
import bz2
import re
from typing import Iterator

import fsspec

_PAGE_ID = re.compile(rb"(<page>.*?<id>)(\d+)(</id>)", re.S)
_TITLE = re.compile(rb"<title>(.*?)</title>", re.S)


def read_xml_chunks(url: str, chunk: int = 1 << 20) -> Iterator[bytes]:
    with fsspec.open(url, "rb") as raw:
        f = bz2.BZ2File(raw) if url.endswith(".bz2") else raw
        yield from iter(lambda: f.read(chunk), b"")


def split_dump(url: str) -> Iterator[tuple[str, bytes]]:
    """``("head", bytes)``, then ``("page", bytes)`` per page, then ``("tail", bytes)``."""
    buf, head_done = b"", False
    for chunk in read_xml_chunks(url):
        buf += chunk
        while True:
            start = buf.find(b"<page>")
            if start < 0:
                break
            if not head_done:
                # The indentation before the first <page> belongs to the page.
                cut = buf.rfind(b"\n", 0, start) + 1
                yield "head", buf[:cut]
                buf, head_done = buf[cut:], True
                continue
            end = buf.find(b"</page>", start)
            if end < 0:
                break
            end = buf.find(b"\n", end) + 1 or len(buf)
            yield "page", buf[:end]
            buf = buf[end:]
    if not head_done:
        raise ValueError(f"no <page> in {url}")
    yield "tail", buf


def renumber(page: bytes, copy: int, id_stride: int) -> bytes:
    """Copy ``copy`` of a page as a distinct page: new page id and title."""
    if copy == 0:
        return page
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

        tail = b""
        for copy in range(repeat):
            for what, data in split_dump(src):
                if what == "head":
                    if copy == 0:
                        out.write(bz2.compress(data, 9))
                elif what == "page":
                    batch.append(renumber(data, copy, id_stride))
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
