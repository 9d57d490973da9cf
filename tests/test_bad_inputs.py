"""Bad files among good inputs, and damaged files where a step reads: real files (an image
and an HTML page shipped with our dependencies, a real book gzipped or re-encoded, the
sample dump) placed beside the real data; each is skipped with a counter and a warning
naming it, or fails with a message naming it."""

import bz2
import gzip
from pathlib import Path

import pytest

from bertflow.pipelines import books, wikipedia
from tests.real_files import book_in_html, real_html, real_png

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "data" / "books" / "austen-persuasion.txt"
SAMPLE = ROOT / "data" / "wikipedia" / "enwiki-sample.xml.bz2"


def _counter():
    counts = {}

    def count(name, n=1):
        counts[name] = counts.get(name, 0) + n

    return counts, count


def test_books_tell_text_from_what_is_not(tmp_path):
    files = {
        "persuasion.txt": (BOOK.read_bytes(), None),
        "persuasion-utf16.txt": (BOOK.read_text(encoding="utf-8").encode("utf-16"), None),
        "cover.png": (real_png(), "files_skipped_binary"),
        "persuasion.txt.gz": (gzip.compress(BOOK.read_bytes()), "files_skipped_binary"),
        "projector.html": (real_html(), "files_skipped_markup"),
        "persuasion.html": (book_in_html(), "files_skipped_markup"),
    }
    for name, (data, skipped) in files.items():
        (tmp_path / name).write_bytes(data)
        reason = books.skip_reason(str(tmp_path / name), "cp1252")
        assert (reason and reason[0]) == skipped, (name, reason)
    assert "PNG image" in books.skip_reason(str(tmp_path / "cover.png"), "cp1252")[1]
    assert "gzip" in books.skip_reason(str(tmp_path / "persuasion.txt.gz"), "cp1252")[1]
    # UTF-16 without a byte order mark: skipped, with the setting that reads it.
    (tmp_path / "utf16le.txt").write_bytes(BOOK.read_text(encoding="utf-8").encode("utf-16-le"))
    assert "set encoding: utf-16-le" in books.skip_reason(str(tmp_path / "utf16le.txt"), "cp1252")[1]
    assert books.skip_reason(str(tmp_path / "utf16le.txt"), "utf-16-le") is None


def test_dump_files_that_are_not_dumps_are_skipped_by_what_they_hold(tmp_path, caplog):
    xml = bz2.decompress(SAMPLE.read_bytes())
    files = {
        "a-pages-articles.xml.bz2": (SAMPLE.read_bytes(), None),
        "b-pages-articles.xml": (xml, None),  # plain XML, read as it is
        "c-pages-articles.xml.bz2": (gzip.compress(xml, 1), "files_skipped_not_bz2"),
        "d-pages-articles.xml.bz2": (real_png(), "files_skipped_not_bz2"),
        "e-pages-articles.xml": (real_html(), "files_skipped_not_dump"),
        "f-pages-articles.xml": (BOOK.read_text(encoding="utf-8").encode("utf-16"), "files_skipped_not_dump"),
        "g-pages-articles.xml.bz2": (bz2.compress(real_html()), "files_skipped_not_dump"),
        # Not read by its name (a folder also holds checksums, a download's .part).
        "h-pages-articles.xml.gz": (gzip.compress(xml, 1), "files_skipped_by_name"),
    }
    for name, (data, skipped) in files.items():
        (tmp_path / name).write_bytes(data)
        counts, count = _counter()
        caplog.clear()
        splits = wikipedia.plan_splits(str(tmp_path / name), count=count)
        if skipped:
            assert not splits and counts == {skipped: 1}, (name, counts)
            assert f"{tmp_path / name} skipped" in caplog.text
            if name.startswith("c-"):
                assert "gzip, neither bz2 nor XML text; decompress it, or recompress it with bzip2" in caplog.text
            if name.startswith("h-"):
                assert "its name does not end in .xml.bz2 or .xml; decompress it, or recompress it with bzip2" \
                    in caplog.text
        else:
            assert splits and not counts, (name, counts)


def test_a_vocab_file_that_is_not_utf8_or_not_berts_is_named_with_its_line(tmp_path):
    from bertflow.contracts.layout import read_vocab
    from bertflow.pipelines.tokens import Vocab
    from tests.book_documents import vocab_folder

    tokens = (vocab_folder() / "vocab.txt").read_text(encoding="utf-8").split("\n")  # bert-base-uncased's
    first_non_ascii = next(n for n, t in enumerate(tokens, 1) if not t.isascii())
    latin1 = tmp_path / "latin1" / "vocab.txt"
    latin1.parent.mkdir()
    latin1.write_bytes("\n".join(tokens).encode("latin-1", "replace"))
    with pytest.raises(ValueError, match=rf"latin1/vocab.txt line {first_non_ascii}: not UTF-8"):
        read_vocab(str(latin1))
    with pytest.raises(ValueError, match=rf"latin1/vocab.txt line {first_non_ascii}: not UTF-8"):
        Vocab.read(str(latin1))  # the examples job's reader

    no_mask = tmp_path / "no-mask.txt"
    no_mask.write_text("\n".join(t for t in tokens if t != "[MASK]"), encoding="utf-8")
    with pytest.raises(ValueError, match=r"no-mask.txt lacks the special tokens \['\[MASK\]'\]"):
        read_vocab(str(no_mask))

    twice = tmp_path / "twice.txt"
    twice.write_text("\n".join(tokens[:-1] + ["the"]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"twice.txt line {len(tokens)}: 'the' again \(line {tokens.index('the') + 1} has it\)"):
        read_vocab(str(twice))


def _damaged_copies(shard: Path) -> dict[str, bytes]:
    data = shard.read_bytes()
    inside = bytearray(data)
    inside[len(data) // 3 : len(data) // 3 + 200] = bytes(200)  # its footer whole
    return {"truncated": data[: len(data) // 2], "overwritten inside": bytes(inside)}


def test_a_damaged_shard_of_a_finished_step_names_the_file_and_the_step_to_redo(tmp_path):
    from bertflow.contracts.layout import DamagedShard, shard_name
    from bertflow.pipelines import vocab
    from bertflow.pipelines.config import VocabConfig
    from bertflow.pipelines.documents import plan_units, read_unit
    from bertflow.pipelines.local_runner import pipeline_options
    from bertflow.pipelines.shards import read_rows
    from tests.book_documents import book_documents, write_documents

    # Documents written from a real book by a step "books"; one shard damaged after.
    folder = tmp_path / "runs" / "books-3f2a9c1e7b"
    write_documents(str(folder), book_documents(60)[:40], 2)
    shard = folder / shard_name("documents", 1, 2)
    units, _ = plan_units([str(folder)], docs_per_bucket=8)
    unit = next(u for u in units if all(url == str(shard) for _, url, _ in u))
    message = rf"{shard} does not read as Parquet \(.*\): the output of step 'books' is damaged; " \
              r"`bertflow run <spec> --force books` redoes it"
    for damage, data in _damaged_copies(shard).items():
        shard.write_bytes(data)
        with pytest.raises(DamagedShard, match=message):  # the vocab job's reader
            list(read_rows([str(shard)]))
        with pytest.raises(DamagedShard, match=message):  # the examples job's
            plan_units([str(folder)], docs_per_bucket=8) if damage == "truncated" else read_unit(unit, lambda *a: None)
    # The vocab job looks at every shard's footer before it starts its workers; damage inside
    # a shard is met by a worker, and the job's error is that worker's, in one line.
    for damage, data in _damaged_copies(shard).items():
        shard.write_bytes(data)
        with pytest.raises(DamagedShard, match=message) as raised:
            vocab.run(VocabConfig(vocab_size=1000), [str(folder)], str(tmp_path / f"vocab-{damage[:4]}"),
                      pipeline_options(direct_num_workers=1))
        assert "\n" not in str(raised.value), damage


def test_a_damaged_examples_shard_fails_the_loader_with_its_url(tmp_path):
    from bertflow.contracts.layout import DamagedShard
    from tests.pretrain_examples import write_examples
    from bertflow.trainer.data import scan_units, read_eval

    folder = tmp_path / "examples-9e1d0c" / "seq64"
    write_examples(str(folder), num_train=32, num_eval=16, num_shards=1, with_vocab=False)
    shard = folder / "eval-00000-of-00001.parquet"
    message = rf"{shard} does not read as Parquet .*step 'examples' is damaged; `bertflow run <spec> --force examples`"
    for damage, data in _damaged_copies(shard).items():
        shard.write_bytes(data)
        with pytest.raises(DamagedShard, match=message):
            read_eval([str(shard)], max_examples=16) if damage != "truncated" else scan_units([str(shard)])


def test_books_with_no_text_among_them_fail_saying_why(tmp_path):
    from bertflow.pipelines.config import BooksConfig
    from bertflow.pipelines.local_runner import pipeline_options

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cover.png").write_bytes(real_png())
    (tmp_path / "in" / "persuasion.txt.gz").write_bytes(gzip.compress(BOOK.read_bytes(), 1))
    with pytest.raises(RuntimeError, match="no documents in .*2 of 2 files were not text and were skipped"):
        books.run(BooksConfig(files=str(tmp_path / "in"), num_shards=1), str(tmp_path / "out"),
                  pipeline_options(direct_num_workers=1))
