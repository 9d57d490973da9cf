"""The pretraining examples Beam job (bertflow/pipelines/examples.py) and the ``pretraining_data``
step kind, run for real on the FnApiRunner over documents made from the sample books."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from bertflow.pipelines.local_runner import pipeline_options
from bertflow.infra.kinds import KINDS, StepKind, register
from bertflow.infra.runner import Runner
from bertflow.infra.spec import SpecError, SpecFile
from bertflow.contracts.layout import EXAMPLES_SCHEMA as SCHEMA
from bertflow.contracts.layout import examples_folder, list_shards
from bertflow.pipelines.config import ExamplesConfig
from bertflow.pipelines.documents import split_of
from bertflow.pipelines.examples import run
from bertflow.pipelines.shards import read_rows
from tests.book_documents import book_documents, vocab_folder, write_documents


def options(workers: int) -> PipelineOptions:
    # 1 worker: in the runner's process; 2: worker processes. The same bytes either way.
    return pipeline_options(direct_num_workers=workers)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Two documents folders (as from two corpus steps) and a vocab folder."""
    root = tmp_path_factory.mktemp("inputs")
    rows = book_documents(paragraphs_per_book=90)
    write_documents(str(root / "books-a"), rows[: len(rows) // 2], num_shards=3)
    write_documents(str(root / "books-b"), rows[len(rows) // 2 :], num_shards=2)
    (root / "vocab").mkdir()
    for name in ("vocab.txt", "tokenizer.json"):
        shutil.copy(vocab_folder() / name, root / "vocab" / name)
    return {"documents": [str(root / "books-a"), str(root / "books-b")], "vocab": str(root / "vocab"), "rows": rows}


def config(**kw) -> ExamplesConfig:
    return ExamplesConfig(**{"dupe_factor": 2, "eval_fraction": 0.1, "num_shards": 3, "docs_per_bucket": 24, **kw})


def make(inputs, output, workers: int = 1, **kw) -> dict:
    """The job on the test inputs into ``output``, with ``config(**kw)``; its counters."""
    return run(config(**kw), inputs["documents"], inputs["vocab"], str(output), options(workers))


@pytest.fixture(scope="module")
def outputs(inputs, tmp_path_factory):
    """The same job with one and with two workers."""
    out = {}
    for workers in (1, 2):
        folder = tmp_path_factory.mktemp(f"examples-{workers}")
        out[workers] = (folder, make(inputs, folder, workers))
    return out


def test_output_files_and_schema(outputs):
    folder, counters = outputs[1]
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["eval-00000-of-00001.parquet", "stats.json", "tokenizer.json",
                     "train-00000-of-00003.parquet", "train-00001-of-00003.parquet",
                     "train-00002-of-00003.parquet", "vocab.txt"]  # fmt: skip
    for name in names:
        if name.endswith(".parquet"):
            assert pq.read_schema(folder / name).equals(SCHEMA)
    assert counters["documents_read"] == 90 and counters["instances"] > 1000
    assert counters["instances"] == counters["train_rows"] + counters["eval_rows"]
    assert counters["eval_rows"] > 0 and counters["nsp_no_partner"] == 0


def test_same_bytes_with_one_and_two_workers(outputs):
    one, two = outputs[1][0], outputs[2][0]
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in two.iterdir())
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name


def test_object_storage_output_equals_local_and_leaves_no_runs(inputs, outputs, s3_bucket):
    """Instances travel to the shard writers as run files under the output's ``_spill/``
    (on S3 here); they go when every shard is written."""
    out = f"{s3_bucket}/examples"
    make(inputs, out)
    fs, path = fsspec.core.url_to_fs(out)
    local = outputs[1][0]
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path)) == sorted(p.name for p in local.iterdir())
    for p in local.iterdir():
        assert fs.cat_file(f"{path}/{p.name}") == p.read_bytes(), p.name


def test_rows_are_valid_instances(outputs):
    folder, _ = outputs[1]
    rows = list(read_rows(list_shards(str(folder), "train")))
    for r in rows:
        ids = r["input_ids"]
        assert 4 <= len(ids) <= 128 and ids[0] == 101 and ids[-1] == 102
        assert len(r["token_type_ids"]) == len(ids) and r["token_type_ids"][0] == 0 and r["token_type_ids"][-1] == 1
        pos = r["masked_lm_positions"]
        assert len(pos) == len(r["masked_lm_ids"]) == min(20, max(1, round(len(ids) * 0.15)))
        assert all(0 < p < len(ids) - 1 for p in pos)
        assert r["next_sentence_label"] in (0, 1)
    # Shards are in a hashed order, not document order: neighbours come from many places.
    assert len({tuple(r["input_ids"][:6]) for r in rows}) > 0.9 * len(rows)


def test_stats_agree_with_the_shards(outputs):
    folder, counters = outputs[1]
    stats = json.loads((folder / "stats.json").read_text())
    assert stats["params"]["max_seq_length"] == 128 and stats["params"]["dupe_factor"] == 2
    for split in ("train", "eval"):
        rows = list(read_rows(list_shards(str(folder), split)))
        s = stats[split]
        assert s["instances"] == len(rows) == counters[f"{split}_rows"]
        assert s["tokens"] == sum(len(r["input_ids"]) for r in rows)
        assert s["masked_tokens"] == sum(len(r["masked_lm_ids"]) for r in rows)
        assert sum(s["length_histogram"].values()) == len(rows)
        assert s["nsp_random_rate"] == round(sum(r["next_sentence_label"] for r in rows) / len(rows), 6)
    train = stats["train"]
    assert 0.45 < train["nsp_random_rate"] < 0.65  # 0.5, plus single-sentence chunks
    assert 0.13 < train["masked_per_token"] < 0.16
    assert abs(train["mask_share"] - 0.8) < 0.03 and abs(train["kept_share"] - 0.1) < 0.03
    assert abs(train["random_share"] - 0.1) < 0.03
    assert 0.05 < train["short_target_share"] < 0.3 and 90 < train["mean_length"] < 128


def test_several_lengths_in_one_job_equal_one_job_each(inputs, outputs, tmp_path):
    """Both of BERT's phases from one reading of the documents: each length's folder holds
    the bytes a job making that length alone writes."""
    both = tmp_path / "both"
    counters = make(inputs, both, 2, max_seq_length=[128, 64], max_predictions_per_seq=[20, 10])
    alone64 = tmp_path / "alone64"
    make(inputs, alone64, max_seq_length=64, max_predictions_per_seq=10)
    assert sorted(p.name for p in both.iterdir()) == ["seq128", "seq64"]
    for folder, alone in ((both / "seq128", outputs[1][0]), (both / "seq64", alone64)):
        names = sorted(p.name for p in folder.iterdir())
        assert names == sorted(p.name for p in alone.iterdir()) and "vocab.txt" in names
        for name in names:
            assert (folder / name).read_bytes() == (alone / name).read_bytes(), (folder, name)
    rows64 = sum(counters[f"seq64_{split}_rows"] for split in ("train", "eval"))
    rows128 = sum(counters[f"seq128_{split}_rows"] for split in ("train", "eval"))
    assert counters["instances"] == rows64 + rows128 and rows64 > rows128
    assert counters["documents_read"] == 90  # read and tokenized once for both lengths

    assert examples_folder(str(both), 64) == str(both / "seq64")
    assert examples_folder(str(alone64), 64) == str(alone64)
    with pytest.raises(ValueError, match=r"several lengths \[64, 128\]: set max_seq_length"):
        examples_folder(str(both))
    with pytest.raises(ValueError, match=r"no examples of length 512; it has \[64, 128\]"):
        examples_folder(str(both), 512)
    with pytest.raises(ValueError, match="holds examples of length 64, not 128"):
        examples_folder(str(alone64), 128)


def test_eval_split_is_disjoint_by_document(inputs, tmp_path):
    # Unmasked, unpaired, full sequences: every instance is a span of exactly one document.
    folder = tmp_path / "ex"
    cfg = config(nsp=False, masking="dynamic", short_seq_prob=0.0, eval_fraction=0.25, dupe_factor=1)
    run(cfg, inputs["documents"], inputs["vocab"], str(folder), options(2))
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(vocab_folder() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    text = {"train": [], "eval": []}
    for index, folder_in in enumerate(inputs["documents"]):
        for r in read_rows(list_shards(folder_in, "documents")):
            ids = [t for e in tok.encode_batch(r["sentences"], add_special_tokens=False) for t in e.ids]
            text[split_of(cfg.seed, f"{index}/{r['id']}", cfg.eval_fraction)].append("," + ",".join(map(str, ids)) + ",")
    assert text["eval"] and text["train"]
    joined = {k: "|".join(v) for k, v in text.items()}
    for split, other in (("train", "eval"), ("eval", "train")):
        rows = list(read_rows(list_shards(str(folder), split)))
        assert rows
        for r in rows[:300]:
            assert r["masked_lm_positions"] == [] and set(r["token_type_ids"]) == {0}
            body = "," + ",".join(map(str, r["input_ids"][1:-1])) + ","
            assert body in joined[split] and body not in joined[other]
    stats = json.loads((folder / "stats.json").read_text())
    assert stats["eval"]["instances"] > 0 and stats["train"]["nsp_random_rate"] == 0


def test_bad_documents_are_counted_and_skipped(inputs, tmp_path):
    import pyarrow as pa

    from bertflow.pipelines.shards import write_table
    from bertflow.contracts.layout import DOCUMENTS_SCHEMA as DOCS

    docs = tmp_path / "docs"
    rows = inputs["rows"][:40] + [
        {"id": "empty", "title": "t", "sentences": []},
        {"id": "blank", "title": "t", "sentences": ["", "   "]},
        {"id": None, "title": "no id", "sentences": ["A sentence."]},
    ]
    write_table(pa.Table.from_pylist(rows, schema=DOCS), str(docs / "documents-00000-of-00001.parquet"))
    counters = run(ExamplesConfig(dupe_factor=1, num_shards=1), [str(docs)], inputs["vocab"], str(tmp_path / "out"), options(1))
    assert counters["documents_malformed"] == 1 and counters["documents_empty"] == 2
    assert counters["documents_read"] == 42 and counters["instances"] > 0


def test_clear_errors_for_unusable_inputs(inputs, tmp_path):
    (tmp_path / "novocab").mkdir()
    (tmp_path / "nodocs").mkdir()
    with pytest.raises(FileNotFoundError, match="has no vocab.txt: give the output folder of a vocab step"):
        run(ExamplesConfig(), inputs["documents"], str(tmp_path / "novocab"), str(tmp_path / "o"), options(1))
    with pytest.raises(FileNotFoundError, match="holds no documents"):
        run(ExamplesConfig(), [str(tmp_path / "nodocs")], inputs["vocab"], str(tmp_path / "o"), options(1))


# --- the step kind, through the runner ---------------------------------------------------


class FolderParams(StepKind.Params):
    source: str


@register
class CopyFolder(StepKind):
    """Test-only: a step whose output is a copy of a prepared folder."""

    name = "test_copy_folder"
    Params = FolderParams

    def run(self, ctx):
        fs, out = fsspec.core.url_to_fs(ctx.output)
        files = sorted(Path(ctx.params.source).iterdir())
        for f in files:
            fs.put_file(str(f), f"{out}/{f.name}")
        return {"files": len(files)}


def spec(inputs, storage, **params) -> dict:
    steps = {
        "books": {"kind": "test_copy_folder", "params": {"source": inputs["documents"][1]}},
        "vocab": {"kind": "test_copy_folder", "params": {"source": inputs["vocab"]}},
        "examples": {
            "kind": "pretraining_data",
            "inputs": {"documents": ["books"], "vocab": "vocab"},
            "params": {"dupe_factor": 1, "num_shards": 2, **params},
        },
    }
    return {"storage": storage, "beam": {"runner": "DirectRunner", "options": {"direct_num_workers": 1}},
            "workflows": {"w": {"steps": steps}}}  # fmt: skip


def test_kind_runs_through_the_runner(inputs, tmp_path):
    assert KINDS["pretraining_data"].inputs.keys() == {"documents", "vocab"}
    runner = Runner(SpecFile(spec(inputs, str(tmp_path / "runs"), max_seq_length=64, max_predictions_per_seq=10, masking="dynamic"), tmp_path / "w.yaml").workflow("w"))
    runner.run()
    out = runner.output("examples")
    manifest = json.loads(Path(out, "_SUCCESS.json").read_text())
    assert manifest["counters"]["instances"] > 100
    rows = list(read_rows(list_shards(out, "train")))
    assert rows and all(len(r["input_ids"]) <= 64 and r["masked_lm_ids"] == [] for r in rows)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"dupe_factor": 0}, "examples.params.dupe_factor: must be >= 1"),
        ({"masked_lm_prob": 1.5}, "examples.params.masked_lm_prob: must be < 1"),
        ({"masking": "sometimes"}, "examples.params.masking"),
        ({"max_predictions_per_seq": 300}, "max_predictions_per_seq (300) must be <= max_seq_length (128)"),
        ({"max_seq_length": [128, 128]}, "a list of distinct lengths"),
        ({"max_seq_length": [128, 512], "max_predictions_per_seq": [20]}, "one per max_seq_length (2), got 1"),
        ({"max_seq_length": [128, 4]}, "examples.params.max_seq_length"),
        ({"dupefactor": 3}, "examples.params.dupefactor: unknown key"),
    ],
)
def test_bad_params_name_their_key(inputs, tmp_path, params, message):
    with pytest.raises(SpecError) as e:
        SpecFile(spec(inputs, str(tmp_path), **params), tmp_path / "w.yaml").workflow("w")
    assert message in str(e.value)


def test_a_tiny_eval_fraction_still_holds_out_two_documents(inputs, tmp_path):
    """With eval_fraction > 0 and four or more documents the eval split holds at least two:
    the documents with the two least split hashes are held out even when no hash falls
    under the fraction (90 documents at 1e-6: none would), so that its next-sentence pairs
    find random partners on the eval side."""
    from bertflow.contracts.hashing import stable_hash

    counters = make(inputs, tmp_path / "ex", eval_fraction=1e-6, dupe_factor=1, short_seq_prob=0.0)
    assert counters["eval_rows"] > 0 and counters["train_rows"] > 0
    uids = [f"{index}/{r['id']}" for index, folder in enumerate(inputs["documents"])
            for r in read_rows(list_shards(folder, "documents"), columns=["id"])]
    least_two = sorted(uids, key=lambda uid: stable_hash(12345, "split", uid))[:2]
    assert not any(split_of(12345, uid, 1e-6) == "eval" for uid in uids)
    # Every eval instance's segments are spans of those two documents, and some pairs are
    # random ones: their second segment comes from the other held-out document.
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(vocab_folder() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    texts = []
    for uid in least_two:
        index, doc_id = uid.split("/", 1)
        doc = next(r for r in read_rows(list_shards(inputs["documents"][int(index)], "documents")) if r["id"] == doc_id)
        texts.append("," + ",".join(str(t) for e in tok.encode_batch(doc["sentences"], add_special_tokens=False)
                                   for t in e.ids) + ",")
    rows = list(read_rows(list_shards(str(tmp_path / "ex"), "eval")))
    for r in rows:
        ids, types = list(r["input_ids"]), r["token_type_ids"]
        for position, original in zip(r["masked_lm_positions"], r["masked_lm_ids"]):
            ids[position] = original
        a = [t for t, k in zip(ids[1:-1], types[1:-1]) if k == 0][:-1]  # less [SEP]
        b = [t for t, k in zip(ids[1:-1], types[1:-1]) if k == 1]
        sources = [[i for i, text in enumerate(texts) if "," + ",".join(map(str, seg)) + "," in text] for seg in (a, b)]
        assert sources[0] and sources[1], r
        if r["next_sentence_label"] == 1:  # random next: from the other document
            assert set(sources[0]) != set(sources[1]) or len(sources[0]) == 2
    assert {r["next_sentence_label"] for r in rows} == {0, 1}
    stats = json.loads((tmp_path / "ex" / "stats.json").read_text())
    assert stats["eval"]["instances"] == counters["eval_rows"] and stats["params"]["eval_fraction"] == 1e-6


def test_split_hashes_at_or_above_2_63_cross_beam(tmp_path):
    """Split hashes are unsigned 64-bit; Beam codes an int as a signed 64-bit varint and
    sizes the first elements of every transform's output with that coder, so a hash at or
    above 2**63 in a one-element bundle would stop the job. The two documents here are
    chosen so that one's hash is that large (fixed ids and seed: no luck involved)."""
    from bertflow.contracts.hashing import stable_hash

    rows = book_documents(paragraphs_per_book=12, paragraphs_per_doc=6)[:2]
    assert max(stable_hash(7, "split", f"0/{r['id']}") for r in rows) >= 2**63
    write_documents(str(tmp_path / "docs"), rows, num_shards=1)
    counters = run(config(eval_fraction=0.5, seed=7), [str(tmp_path / "docs")], str(vocab_folder()),
                   str(tmp_path / "ex"), options(1))
    assert counters["documents_read"] == 2 and counters["eval_rows"] > 0 and counters["train_rows"] > 0


def test_many_one_document_books_with_several_seeds(tmp_path):
    """The books step on 36 small books (a document each, from the sample books), then the
    examples job with three seeds: every split hash of 36 documents crosses Beam, half of
    them at or above 2**63."""
    from bertflow.pipelines.books import run as books_run
    from bertflow.pipelines.config import BooksConfig

    books = tmp_path / "books"
    books.mkdir()
    for r in book_documents(paragraphs_per_book=36, paragraphs_per_doc=6):
        (books / f"{r['id']}.txt").write_text(" ".join(r["sentences"]) + "\n", encoding="utf-8")
    docs = str(tmp_path / "docs")
    books_run(BooksConfig(files=str(books), num_shards=2), docs, options(1))
    for seed in (1, 2, 3):
        counters = run(config(seed=seed, eval_fraction=0.05), [docs], str(vocab_folder()),
                       str(tmp_path / f"ex-{seed}"), options(2))
        assert counters["documents_read"] == 36
        assert counters["eval_rows"] > 0 and counters["train_rows"] > 0
