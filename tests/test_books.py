"""The books Beam job on the real sample books, on the FnApiRunner: both formats,
byte-stable output across worker counts, Gutenberg wrappers and broken files."""

import gzip
import logging
import re
import threading
from pathlib import Path

import pytest

from bertflow.infra.kinds import KINDS, Resources, StepContext
from bertflow.pipelines.local_runner import pipeline_options
from bertflow.pipelines import books
from bertflow.pipelines.config import BooksConfig
from bertflow.contracts.layout import list_shards
from bertflow.pipelines.shards import read_rows
from tests.real_files import real_png

BOOKS = Path(__file__).resolve().parents[1] / "data" / "books"


def shard_bytes(folder):
    return {Path(u).name: Path(u).read_bytes() for u in list_shards(str(folder), "documents")}


def documents(folder):
    return {d["id"]: d for d in read_rows(list_shards(str(folder), "documents"))}


@pytest.fixture(scope="module")
def two_books(tmp_path_factory):
    folder = tmp_path_factory.mktemp("books")
    for name in ("austen-persuasion.txt", "austen-northanger-abbey.txt"):
        (folder / name).write_bytes((BOOKS / name).read_bytes())
    return folder


def test_books_one_and_two_workers_same_bytes(two_books, tmp_path):
    out1, out2 = tmp_path / "w1", tmp_path / "w2"
    c1 = books.run(BooksConfig(files=str(two_books / "*.txt"), num_shards=2), str(out1), pipeline_options(direct_num_workers=1))
    c2 = books.run(BooksConfig(files=str(two_books), num_shards=2), str(out2), pipeline_options(direct_num_workers=2))
    assert c1 == c2
    assert shard_bytes(out1) == shard_bytes(out2)
    assert c1["files"] == 2 and c1["documents"] == 2
    docs = documents(out1)
    assert sorted(docs) == ["austen-northanger-abbey", "austen-persuasion"]
    persuasion = docs["austen-persuasion"]["sentences"]
    # Title lines and chapter headings are gone; hard-wrapped lines are joined.
    assert persuasion[0].startswith("Sir Walter Elliot, of Kellynch Hall, in Somersetshire, was a man who, for his own amusement")
    assert not any(s.startswith("Chapter ") for s in persuasion)
    assert all("\n" not in s for s in persuasion)
    assert c1["sentences"] == sum(len(d["sentences"]) for d in docs.values())
    assert 150_000 < c1["words"] < 200_000


def test_gutenberg_wrapper_non_utf8_and_empty_files(tmp_path, caplog):
    folder = tmp_path / "in"
    folder.mkdir()
    text = (BOOKS / "austen-persuasion.txt").read_text(encoding="utf-8")
    body = text[text.index("Sir Walter Elliot") :][:20_000]
    header = ("The Project Gutenberg EBook of Persuasion, by Jane Austen\n\nThis eBook is for the use of "
              "anyone anywhere at no cost.\n\nTitle: Persuasion\n\n*** START OF THIS PROJECT GUTENBERG EBOOK "
              "PERSUASION ***\n\n\n\n\nProduced by Sharon Partridge.\n\n")
    footer = ("\n\nEnd of the Project Gutenberg EBook of Persuasion, by Jane Austen\n\n"
              "*** END OF THIS PROJECT GUTENBERG EBOOK PERSUASION ***\n\nSection 1. General Terms of Use.\n")
    (folder / "pg105.txt").write_text(header + body + footer, encoding="utf-8")
    # An old text in Windows-1252: one line with an e-acute and curly quotes.
    (folder / "cp1252.txt").write_bytes(
        b"She had been a \x93na\xefve\x94 girl, they said, and a caf\xe9 was no place for her.\n\n"
        + body[:3000].encode("utf-8"))
    (folder / "empty.txt").write_bytes(b"")
    # Files that are not books: an image, a gzipped book, the book as an HTML page.
    (folder / "cover.png").write_bytes(real_png())
    (folder / "pg105.txt.gz").write_bytes(gzip.compress((folder / "pg105.txt").read_bytes(), 1))
    (folder / "pg105.html").write_bytes(b"<!DOCTYPE html>\n<html><body><pre>\n" + (folder / "pg105.txt").read_bytes()
                                         + b"</pre></body></html>\n")
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        counters = books.run(BooksConfig(files=str(folder), num_shards=1), str(out), pipeline_options(direct_num_workers=2))
    # Each skipped file is named by the job's caller (a step's log keeps its own thread's
    # records), not only by the worker that skipped it.
    here = "\n".join(r.getMessage() for r in caplog.records if r.thread == threading.get_ident())
    for name, why in [("cover.png", "PNG image"), ("pg105.txt.gz", "gzip"), ("pg105.html", "HTML"), ("empty.txt", "empty")]:
        assert re.search(rf"skipped {re.escape(str(folder / name))}: .*{why}", here), (name, here)
    assert counters["files"] == 6 and counters["files_empty"] == 1 and counters["documents"] == 2
    assert counters["files_skipped_binary"] == 2 and counters["files_skipped_markup"] == 1
    assert counters["gutenberg_headers_removed"] == 1 and counters["gutenberg_footers_removed"] == 1
    assert counters["lines_not_utf8"] == 1
    docs = documents(out)
    pg = docs["pg105"]["sentences"]
    assert pg[0].startswith("Sir Walter Elliot")
    assert not any("Gutenberg" in s or "Produced by" in s for s in pg)
    assert docs["cp1252"]["sentences"][0] == "She had been a “naïve” girl, they said, and a café was no place for her."


def test_sentences_format_through_the_kind(tmp_path):
    # The original BERT tools' format, from real sentences of a sample book.
    sentences = [s for s in (BOOKS / "austen-emma.txt").read_text(encoding="utf-8").split(".") if len(s.split()) > 3]
    sentences = [" ".join(s.split()) + "." for s in sentences[:40]]
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "part-1.txt").write_text("\n".join(sentences[:5]) + "\n\n" + "\n".join(sentences[5:12]) + "\n\n\n"
                                       + "\n".join(sentences[12:20]) + "\n")
    (folder / "part-2.txt").write_text("\n".join(sentences[20:40]))
    kind = KINDS["books"]()
    ctx = StepContext(
        step="bookcorpus", output=str(tmp_path / "out"), inputs={},
        params=kind.Params(files="corpus/*.txt", format="sentences", num_shards=2),
        resources=Resources(), base_dir=tmp_path,
        beam={"options": {"direct_num_workers": 2}},
    )
    counters = kind.run(ctx)
    assert counters["documents"] == 4 and counters["sentences"] == 40
    docs = documents(tmp_path / "out")
    assert sorted(docs) == ["part-1:0", "part-1:1", "part-1:2", "part-2:0"]
    assert docs["part-1:1"]["sentences"] == sentences[5:12]
    assert docs["part-2:0"]["sentences"] == sentences[20:40]


def test_bad_params_and_paths():
    Params = KINDS["books"].Params
    with pytest.raises(ValueError, match="format"):
        Params(files="x/*.txt", format="epub")
    with pytest.raises(FileNotFoundError, match="not found"):
        books.list_files("/nonexistent/folder")


def _counter():
    counts = {}

    def count(name, n=1):
        counts[name] = counts.get(name, 0) + n

    return counts, count


def test_a_book_in_another_encoding_or_line_end_gives_the_same_sentences(tmp_path):
    book = BOOKS / "austen-mansfield-park.txt"  # ASCII but for one line's pound sign
    text = book.read_text(encoding="utf-8")
    original = books.book_document(str(book), "mp", _counter()[1])["sentences"]
    crlf = text.replace("\n", "\r\n")
    for name, data, not_utf8 in [("cp1252-crlf.txt", crlf.encode("cp1252"), 1),
                                 ("utf16-crlf.txt", crlf.encode("utf-16"), 0),
                                 ("utf32-cr.txt", text.replace("\n", "\r").encode("utf-32"), 0)]:
        (tmp_path / name).write_bytes(data)
        counts, count = _counter()
        assert books.book_document(str(tmp_path / name), "mp", count)["sentences"] == original, name
        assert counts.get("lines_not_utf8", 0) == not_utf8, name

    # UTF-16 without a byte order mark, when the configured encoding says so.
    (tmp_path / "utf16le.txt").write_bytes(crlf.encode("utf-16-le"))
    assert books.book_document(str(tmp_path / "utf16le.txt"), "mp", _counter()[1], "utf-16-le")["sentences"] == original

    # The encoding of a text that is not UTF-8: the one its Gutenberg header declares,
    # else the configured one.
    chapter = "\n".join(text.split("\n")[15150:15300])
    pound = next(s for s in original if "£20,000" in s)
    (tmp_path / "cp437.txt").write_bytes(chapter.encode("cp437"))
    (tmp_path / "declared.txt").write_bytes(("Character set encoding: ISO-8859-1\n\n" + chapter).encode("latin-1"))
    for name, encoding in [("cp437.txt", "cp437"), ("declared.txt", "cp437")]:
        sentences = books.book_document(str(tmp_path / name), "mp", _counter()[1], encoding)["sentences"]
        assert pound in sentences, name
    with pytest.raises(ValueError, match="unknown encoding 'klingon'"):
        BooksConfig(files="x.txt", encoding="klingon")


def test_sentences_format_without_blank_lines_is_warned_of(tmp_path, caplog):
    # A book given as the sentences format, one sentence a line: one document of them all.
    sentences = books.book_document(str(BOOKS / "austen-persuasion.txt"), "p", _counter()[1])["sentences"]
    (tmp_path / "persuasion.txt").write_text("\n".join(sentences) + "\n")
    counts, count = _counter()
    docs = list(books.sentence_documents(str(tmp_path / "persuasion.txt"), "p", count))
    assert len(docs) == 1 and docs[0]["sentences"] == sentences
    assert counts["files_one_document"] == 1
    assert "persuasion.txt has %d sentences and no blank line" % len(sentences) in caplog.text
    # With a blank line between chapters' sentences, nothing to warn of.
    (tmp_path / "chapters.txt").write_text("\n".join(sentences[:2000]) + "\n\n" + "\n".join(sentences[2000:]))
    counts, count = _counter()
    assert len(list(books.sentence_documents(str(tmp_path / "chapters.txt"), "p", count))) == 2
    assert "files_one_document" not in counts
