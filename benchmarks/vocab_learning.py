"""Vocabulary learning: our `vocab` step against `tokenizers`' WordPieceTrainer, side by side.

    .venv/bin/python benchmarks/vocab_learning.py                 # sizes 8000 and 30522
    .venv/bin/python benchmarks/vocab_learning.py --sizes 8000 --workers 2

The corpus is the sample data through the real corpus steps (the Wikipedia sample dump and
the six books, as documents shards). Documents are split into learning and held-out by the
vocab step's own hash rule; both learners get the same learning documents (ours from the
shards through Beam, `tokenizers` every sentence through ``train_from_iterator``), and both
vocabularies are scored on the same held-out documents with the same BERT tokenizer
(normalizer, pre-tokenizer, greedy WordPiece), so only the vocabulary differs.

Measured: tokens in the vocabulary, word pieces per word and [UNK] rate on held-out text,
and time: `tokenizers` counting + learning in process (Rust, all cores); ours as the whole
Beam step (read shards, count, learn, write the files, tokenize the held-out report) and
the learning from counts alone (``bertflow.pipelines.wordpiece.learn`` on word_counts.tsv).
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bertflow.pipelines.local_runner import pipeline_options  # noqa: E402
from bertflow.pipelines import books, bert_tokenizer, vocab, wikipedia, wordpiece  # noqa: E402
from bertflow.pipelines.config import BooksConfig, VocabConfig, WikipediaConfig  # noqa: E402
from bertflow.contracts.layout import list_shards, read_vocab  # noqa: E402
from bertflow.pipelines.shards import read_rows  # noqa: E402

HELDOUT_FRACTION = 0.1
SEED = 12345


def corpus(work: Path, workers: int) -> list[str]:
    """The documents folders of the sample corpus, made once and reused."""
    folders = {"wiki": work / "wiki", "books": work / "books"}
    if not list_shards(str(folders["wiki"]), "documents"):
        wikipedia.run(WikipediaConfig(dump=str(ROOT / "data/wikipedia/enwiki-sample.xml.bz2"), num_shards=4), str(folders["wiki"]),
                      pipeline_options(direct_num_workers=workers))
    if not list_shards(str(folders["books"]), "documents"):
        books.run(BooksConfig(files=str(ROOT / "data/books/*.txt"), num_shards=4), str(folders["books"]), pipeline_options(direct_num_workers=workers))
    return [str(f) for f in folders.values()]


def split_documents(inputs: list[str]) -> tuple[list[str], list[list[str]]]:
    """(learning sentences, held-out documents' sentences), by the vocab step's rule."""
    learn_sentences, heldout = [], []
    for folder in inputs:
        for row in read_rows(list_shards(folder, "documents"), columns=["id", "sentences"]):
            if vocab.is_heldout(row["id"], HELDOUT_FRACTION, SEED):
                heldout.append(row["sentences"])
            else:
                learn_sentences += row["sentences"]
    return learn_sentences, heldout


def score(tokens: list[str], heldout: list[list[str]]) -> dict:
    tok = bert_tokenizer.build_tokenizer(tokens, lowercase=True)
    unk = tok.token_to_id(bert_tokenizer.UNK)
    words = pieces = unknown = 0
    for sentences in heldout:
        for enc in tok.encode_batch(sentences, add_special_tokens=False):
            words += len(set(enc.word_ids))
            pieces += len(enc.ids)
            unknown += enc.ids.count(unk)
    return {"size": len(tokens), "ppw": pieces / words, "unk": unknown / pieces, "words": words}


def run_ours(inputs: list[str], size: int, out: Path, workers: int) -> tuple[list[str], float, float]:
    cfg = VocabConfig(vocab_size=size, heldout_fraction=HELDOUT_FRACTION, seed=SEED)
    start = time.perf_counter()
    vocab.run(cfg, inputs, str(out), pipeline_options(direct_num_workers=workers))
    step_s = time.perf_counter() - start
    with open(out / "word_counts.tsv", encoding="utf-8") as f:
        counts = list(wordpiece.read_word_counts(f))
    start = time.perf_counter()
    wordpiece.learn(counts, size, bert_tokenizer.reserved_tokens(0))
    learn_s = time.perf_counter() - start
    return read_vocab(str(out / "vocab.txt")), step_s, learn_s


def run_tokenizers(sentences: list[str], size: int) -> tuple[list[str], float]:
    from tokenizers import Tokenizer, models, trainers

    start = time.perf_counter()
    tok = Tokenizer(models.WordPiece(unk_token=bert_tokenizer.UNK))
    tok.normalizer = bert_tokenizer.normalizer(True)
    tok.pre_tokenizer = bert_tokenizer.pre_tokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=size, special_tokens=bert_tokenizer.reserved_tokens(0), show_progress=False
    )
    tok.train_from_iterator(sentences, trainer)
    seconds = time.perf_counter() - start
    return [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])], seconds


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8000, 30522])
    ap.add_argument("--workers", type=int, default=2, help="Beam worker processes for our step")
    ap.add_argument("--work", default=str(ROOT / "bench-runs" / "vocab_learning"))
    args = ap.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    inputs = corpus(work, args.workers)
    sentences, heldout = split_documents(inputs)
    print(f"learning text: {len(sentences)} sentences; held out: {len(heldout)} documents; "
          f"{os.cpu_count()} cores\n", flush=True)

    rows = []
    for size in args.sizes:
        theirs, their_s = run_tokenizers(sentences, size)
        ours, step_s, learn_s = run_ours(inputs, size, work / f"ours-{size}", args.workers)
        a, b = score(ours, heldout), score(theirs, heldout)
        rows.append(f"| {size} | bertflow `vocab` | {a['size']} | {a['ppw']:.4f} | {a['unk']:.5f} | "
                    f"{step_s:.1f} (learning from counts: {learn_s:.1f}) |")
        rows.append(f"| {size} | tokenizers WordPieceTrainer | {b['size']} | {b['ppw']:.4f} | {b['unk']:.5f} | "
                    f"{their_s:.1f} |")
        print(f"size {size}: held-out words {a['words']}", flush=True)

    print()
    print("| requested size | learner | tokens | pieces per held-out word | [UNK] rate | time (s) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
