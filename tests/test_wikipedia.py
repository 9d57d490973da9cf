"""The wikipedia Beam job on the real sample dump, on the FnApiRunner: counts, byte-stable
output across workers and dump layouts, and broken inputs built from the sample."""

import bz2
import codecs
import gzip
import logging
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bertflow.infra.kinds import KINDS, Resources, StepContext
from bertflow.pipelines.local_runner import pipeline_options
from bertflow.pipelines import wikipedia
from bertflow.pipelines.config import WikipediaConfig
from bertflow.pipelines.multistream import renumber, split_dump, write_multistream
from bertflow.contracts.layout import list_shards
from bertflow.pipelines.shards import read_rows

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = str(ROOT / "data" / "wikipedia" / "enwiki-sample.xml.bz2")
PAGE_ID = re.compile(rb"<id>(\d+)</id>")


def shard_bytes(folder):
    return {Path(u).name: Path(u).read_bytes() for u in list_shards(str(folder), "documents")}


def documents(folder):
    return list(read_rows(list_shards(str(folder), "documents")))


@pytest.fixture(scope="module")
def single_stream(tmp_path_factory):
    """The sample as published (one bz2 stream), one worker."""
    out = tmp_path_factory.mktemp("single")
    counters = wikipedia.run(WikipediaConfig(dump=SAMPLE, num_shards=3), str(out), pipeline_options(direct_num_workers=1))
    return out, counters


def test_sample_counts_and_layout(single_stream):
    out, counters = single_stream
    # 206 pages: 99 redirects, 1 page outside namespace 0, 1 article with no prose left.
    assert counters["pages_read"] == 206
    assert counters["pages_redirect"] == 99
    assert counters["pages_non_article"] == 1
    assert counters["documents"] == 105
    assert counters["pages_read"] == sum(counters[k] for k in (
        "pages_redirect", "pages_non_article", "pages_empty", "documents"))
    assert counters["words"] > 350_000
    assert sorted(shard_bytes(out)) == [f"documents-{i:05d}-of-00003.parquet" for i in range(3)]
    docs = documents(out)
    ids = [d["id"] for d in docs]
    assert len(set(ids)) == len(ids) == 105
    for url in list_shards(str(out), "documents"):
        shard_ids = [r["id"] for r in read_rows([url])]
        assert shard_ids == sorted(shard_ids)
    anarchism = next(d for d in docs if d["title"] == "Anarchism")
    assert anarchism["id"] == "enwiki:12"
    assert anarchism["sentences"][0].startswith("Anarchism is a political philosophy that advocates self-governed societies")
    assert all("AccessibleComputing" != d["title"] for d in docs)  # a redirect


def test_multistream_two_workers_and_the_kind_give_the_same_bytes(single_stream, tmp_path):
    out1, counters1 = single_stream
    dump = tmp_path / "dumps" / "enwiki-pages-articles-multistream.xml.bz2"
    dump.parent.mkdir()
    write_multistream(SAMPLE, str(dump), pages_per_stream=10)
    out2 = tmp_path / "out"
    kind = KINDS["wikipedia"]()
    ctx = StepContext(
        step="wiki", output=str(out2), inputs={},
        params=kind.Params(dump="dumps", num_shards=3, split_bytes=1 << 16),  # relative to base_dir
        resources=Resources(), base_dir=tmp_path,
        beam={"options": {"direct_num_workers": 2}},
    )
    counters2 = kind.run(ctx)
    assert counters2["bz2_streams"] == 23  # header, 21 of pages, footer
    assert {k: v for k, v in counters2.items() if k != "bz2_streams"} == \
        {k: v for k, v in counters1.items() if k != "bz2_streams"}
    assert shard_bytes(out2) == shard_bytes(out1)

    # The plain dump beside the multistream one: every page twice, each document once.
    (dump.parent / "enwiki-pages-articles.xml.bz2").write_bytes(Path(SAMPLE).read_bytes())
    out3 = tmp_path / "out3"
    counters3 = wikipedia.run(WikipediaConfig(dump=str(dump.parent), num_shards=3), str(out3), pipeline_options(direct_num_workers=2))
    assert counters3["pages_read"] == 2 * 206
    assert counters3["documents_duplicate"] == 105 and counters3["documents"] == 105
    assert shard_bytes(out3) == shard_bytes(out1)


def test_bad_params_fail_with_clear_messages():
    Params = KINDS["wikipedia"].Params
    with pytest.raises(ValueError, match="num_shards"):
        Params(dump="x.xml.bz2", num_shards=0)
    with pytest.raises(ValueError, match="extra|Extra"):
        Params(dump="x.xml.bz2", shards=3)
    with pytest.raises(FileNotFoundError, match="not found"):
        wikipedia.list_dumps("/nonexistent/enwiki.xml.bz2")


def _sample_parts():
    parts = list(split_dump(SAMPLE))
    return parts[0][1], [d for w, d in parts if w == "page"], parts[-1][1]


def _page_id(page: bytes) -> int:
    return int(PAGE_ID.search(page).group(1))


def test_broken_inputs_are_counted_and_survived(single_stream, tmp_path, caplog):
    clean_ids = {d["id"] for d in documents(single_stream[0])}
    head, pages, tail = _sample_parts()
    folder = tmp_path / "dumps"
    folder.mkdir()

    # a: multistream, 10 pages a stream; the 6th stream of pages is corrupted mid-way.
    streams = [bz2.compress(head)] + [bz2.compress(b"".join(pages[i : i + 10])) for i in range(0, len(pages), 10)]
    streams.append(bz2.compress(tail))
    bad = bytearray(streams[6])
    bad[len(bad) // 2 : len(bad) // 2 + 64] = bytes(64)
    streams[6] = bytes(bad)
    (folder / "a-pages-articles-multistream.xml.bz2").write_bytes(b"".join(streams))
    lost = {f"enwiki:{_page_id(p)}" for p in pages[50:60]}

    # b: copy 1 of the pages as one stream, cut off at 60% of its bytes.
    whole = bz2.compress(head + b"".join(renumber(p, 1, 10**8) for p in pages) + tail)
    (folder / "b-pages-articles.xml.bz2").write_bytes(whole[: len(whole) * 6 // 10])

    # c: plain XML, copy 2 of the first 30 pages: page 2 malformed, page 4 with bytes that
    # are not UTF-8 in its text, and a page of 3 MB (over the 1 MB limit of this run).
    c_pages = [renumber(p, 2, 10**8) for p in pages[:30]]
    articles = [k for k, p in enumerate(pages[:30]) if f"enwiki:{_page_id(p)}" in clean_ids]
    malformed, not_utf8 = articles[1], articles[2]
    c_pages[malformed] = c_pages[malformed].replace(b"</title>", b"", 1)
    c_pages[not_utf8] = c_pages[not_utf8].replace(b'preserve">', b'preserve">Caf\xe9 au lait\xff.\n\n', 1)
    huge = re.sub(rb"<text([^>]*)>.*?</text>", lambda m: b"<text" + m.group(1) + b">" + b"Word and word. " * 200_000 + b"</text>",
                  c_pages[1], flags=re.S)
    huge = PAGE_ID.sub(b"<id>999999999</id>", huge, count=1)
    (folder / "c-pages-articles.xml").write_bytes(head + b"".join(c_pages) + huge + tail)

    # d: an empty file; e: a gzip of the sample's XML named as a bz2 dump; f: a book in
    # UTF-16, named as a dump.
    (folder / "d-pages-articles.xml.bz2").write_bytes(b"")
    (folder / "e-pages-articles.xml.bz2").write_bytes(gzip.compress(head + b"".join(pages[:10]) + tail, 1))
    book = ROOT / "data" / "books" / "austen-persuasion.txt"
    (folder / "f-pages-articles.xml").write_bytes(book.read_text(encoding="utf-8")[:20_000].encode("utf-16"))
    # g: the sample's XML gzipped under a gzip's name: not read, by its name.
    (folder / "g-pages-articles.xml.gz").write_bytes(gzip.compress(head + b"".join(pages[:10]) + tail, 1))

    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        counters = wikipedia.run(WikipediaConfig(dump=str(folder), num_shards=2, split_bytes=1 << 16,
                                                 max_page_bytes=1 << 20), str(out), pipeline_options(direct_num_workers=2))
    # the job's caller names each skipped file (a step's log keeps its own thread's records)
    here = "\n".join(r.getMessage() for r in caplog.records if r.thread == threading.get_ident())
    for name in ("d-pages-articles.xml.bz2", "e-pages-articles.xml.bz2", "f-pages-articles.xml",
                 "g-pages-articles.xml.gz"):
        assert f"skipped {folder / name}: " in here, (name, here)
    # (the counters the kind returns are the manifest's)
    assert counters["files"] == 7 and counters["files_empty"] == 1
    assert counters["files_skipped_not_bz2"] == 1 and counters["files_skipped_not_dump"] == 1
    assert counters["files_skipped_by_name"] == 1
    assert counters["bz2_streams_corrupt"] == 1
    assert counters["bz2_streams_truncated"] == 1
    assert counters["pages_truncated"] >= 1  # the page open where b was cut
    assert counters["pages_malformed"] == 1
    assert counters["pages_undecodable"] == 1
    assert counters["pages_too_large"] == 1

    ids = {d["id"] for d in documents(out)}
    # a: everything but the corrupt stream's pages.
    assert {i for i in ids if int(i.split(":")[1]) < 10**8} == clean_ids - lost
    # b: what came before the cut.
    b_ids = {i for i in ids if 10**8 <= int(i.split(":")[1]) < 2 * 10**8}
    assert 20 < len(b_ids) < 105
    # c: the first 30 pages' articles but the malformed one; the page with bad bytes kept.
    c_expected = {f"enwiki:{_page_id(p) + 2 * 10**8}" for p in pages[:30]} & {
        f"enwiki:{int(i.split(':')[1]) + 2 * 10**8}" for i in clean_ids}
    c_ids = {i for i in ids if int(i.split(":")[1]) >= 2 * 10**8}
    assert c_ids == c_expected - {f"enwiki:{_page_id(c_pages[malformed])}"}
    assert "enwiki:999999999" not in ids
    kept = next(d for d in documents(out) if d["id"] == f"enwiki:{_page_id(c_pages[not_utf8])}")
    assert any("Caf\ufffd au lait\ufffd." in s for s in kept["sentences"])


def test_nothing_extracted_fails_with_a_message(tmp_path):
    head, pages, tail = _sample_parts()
    redirects = [p for p in pages if b"<redirect" in p][:5]
    dump = tmp_path / "dumps" / "enwiki-pages-articles.xml.bz2"
    dump.parent.mkdir()
    dump.write_bytes(bz2.compress(head + b"".join(redirects) + tail))
    # Beside it, a file that is no dump: an HTML page under a dump's name.
    (dump.parent / "enwiki-latest-pages-articles.xml").write_bytes(
        b"<!DOCTYPE html>\n<html><body><p>Wikimedia Downloads</p></body></html>\n")
    with pytest.raises(RuntimeError, match="no documents extracted.*1 of 2 files were not dumps and were skipped"):
        wikipedia.run(WikipediaConfig(dump=str(dump.parent), num_shards=1), str(tmp_path / "out"),
                      pipeline_options(direct_num_workers=1))


def _reader_pages(url, split_bytes=None):
    """What the job's reader functions make of a dump file: its pages, and the counts."""
    counts = {}

    def count(name, n=1):
        counts[name] = counts.get(name, 0) + n

    pages = []
    for split in wikipedia.plan_splits(url, split_bytes, count):
        for xml, where in wikipedia.read_pages(split, 32 << 20, count):
            pages.append(wikipedia.parse_page(xml, count, where))
    return pages, counts


def test_a_dump_in_the_encoding_its_xml_says_gives_the_same_pages(tmp_path):
    text = bz2.decompress(Path(SAMPLE).read_bytes()).decode("utf-8")
    plain = tmp_path / "enwiki-pages-articles.xml"
    plain.write_bytes(text.encode("utf-8"))
    original, _ = _reader_pages(str(plain))
    assert len(original) == 206

    def declared(encoding):
        return f'<?xml version="1.0" encoding="{encoding}"?>\n' + text

    variants = {
        # UTF-16 with a byte order mark (compressed below, as a multistream dump).
        "utf16-bom.xml": text.encode("utf-16"),
        # UTF-16 big-endian, no mark: its first "<?" says it.
        "utf16be.xml": declared("UTF-16").encode("utf-16-be"),
        # Declared ISO-8859-1: what Latin-1 lacks is written as character references.
        "latin1.xml": declared("ISO-8859-1").encode("latin-1", "xmlcharrefreplace"),
    }
    for name, data in variants.items():
        (tmp_path / name).write_bytes(data)
        pages, counts = _reader_pages(str(tmp_path / name))
        assert pages == original, name
        assert not {k for k in counts if k.startswith(("files_", "pages_"))}, (name, counts)

    # The multistream splitter cuts a UTF-16 dump between characters, into pages that
    # each read as one; its streams read back to the same pages, split by byte ranges.
    parts = list(split_dump(str(tmp_path / "utf16-bom.xml")))
    assert b"".join(d for _, d in parts) == text.encode("utf-16")
    pages = [d for w, d in parts if w == "page"]
    assert len(pages) == 206 and all(p.decode("utf-16-le").lstrip().startswith("<page>") for p in pages)
    streams = [parts[0][1]] + [b"".join(pages[i : i + 10]) for i in range(0, 206, 10)] + [parts[-1][1]]
    multistream = tmp_path / "utf16-multistream.xml.bz2"
    multistream.write_bytes(b"".join(bz2.compress(s, 1) for s in streams))
    pages, counts = _reader_pages(str(multistream), split_bytes=1 << 16)
    assert pages == original and counts["bz2_streams"] == 23

    # A byte that is not UTF-16 (half a surrogate pair) is counted, as a bad UTF-8 byte is.
    broken = text.encode("utf-16-le").replace("Anarchism is".encode("utf-16-le"), b"\x00\xd8" + "narchism is".encode("utf-16-le"), 1)
    (tmp_path / "broken.xml").write_bytes(codecs.BOM_UTF16_LE + broken)
    pages, counts = _reader_pages(str(tmp_path / "broken.xml"))
    assert counts["pages_undecodable"] == 1
    assert next(p for p in pages if p.title == "Anarchism").text.count("\ufffdnarchism is") == 1


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="the workers wait on a pidfd (Linux)")
def test_the_workers_of_a_killed_job_end_with_it(tmp_path):
    import psutil

    # Killed while its workers start: the moment they are left waiting longest.
    book = ROOT / "data" / "books" / "austen-persuasion.txt"
    job = subprocess.Popen([sys.executable, "-m", "bertflow.pipelines.books", "--files", str(book), "--output", str(tmp_path / "out"),
                            "--workers", "2"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                ours = psutil.Process(job.pid).children(recursive=True)
                workers = [p for p in ours if "sdk_worker_main" in " ".join(p.cmdline()) or "local_worker" in " ".join(p.cmdline())]
            except psutil.NoSuchProcess:  # one ended as we looked
                continue
            if len([p for p in workers if p.name() != "sh"]) == 2:
                break
            assert job.poll() is None and time.monotonic() < deadline, "the job ended before its workers started"
            time.sleep(0.05)
        job.kill()
        job.wait()
        deadline = time.monotonic() + 10
        left = ours
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = [p for p in left if _running(p)]
        assert not left, f"still running 10 s after the job was killed: {left}"
    finally:
        job.kill()


def _running(process) -> bool:
    import psutil

    try:
        return process.status() != psutil.STATUS_ZOMBIE  # a zombie has ended
    except psutil.NoSuchProcess:
        return False
