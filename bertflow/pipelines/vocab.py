"""The vocabulary job: documents shards in, a BERT WordPiece vocabulary and tokenizer out.

    python -m bertflow.pipelines.vocab --documents runs/wiki-ab12 runs/books-cd34 --output runs/vocab \\
        --vocab-size 8000 --workers 2

Reads every ``documents-*.parquet`` of every input folder, holds out a small share of
documents (chosen by a hash of the seed and the document id) for the report, and counts
the words of the rest after exactly the final tokenizer's normalization and
pre-tokenization. Counts are pre-aggregated per bundle (a hot word such as "the" leaves
each bundle once) and summed per word; words under ``min_count`` are dropped and the
``max_words`` most frequent kept, so the one worker that learns the vocabulary holds the
kept words only, however large the corpus. With ``vocab_file`` the given vocabulary is
used instead of learning one.

Writes, each file atomically: ``vocab.txt``, ``tokenizer.json``, ``tokenizer_config.json``,
``special_tokens_map.json`` (a folder ``transformers.AutoTokenizer`` loads),
``word_counts.tsv`` (the kept words, most frequent first) and ``report.json`` (word pieces
per word and the [UNK] rate on the held-out documents, and how the words were cut).
"""

from __future__ import annotations

import argparse
import json
import logging
import posixpath
from typing import Iterable

import apache_beam as beam
import fsspec
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from bertflow.contracts.config import add_arguments, parse
from bertflow.contracts.hashing import stable_hash
from bertflow.contracts.layout import UNK, open_shard, read_vocab
from bertflow.contracts.storage import write_bytes_atomic, write_json

from . import bert_tokenizer, wordpiece
from .config import VocabConfig
from .local_runner import freeze_heap, pipeline_options, worker_environment
from .counters import Counters, metric_counters
from .documents import document_shards
from .shards import read_rows

log = logging.getLogger(__name__)

NAMESPACE = "vocab"


def is_heldout(doc_id: str, fraction: float, seed: int) -> bool:
    return stable_hash(seed, "vocab-heldout", doc_id) < fraction * 2**64


class ReadDocuments(beam.DoFn):
    """A documents shard URL -> ``(id, sentences)``; malformed rows counted and logged."""

    def __init__(self):
        self.count = Counters(NAMESPACE)

    def setup(self):
        freeze_heap()

    def process(self, url: str):
        for i, row in enumerate(read_rows([url], columns=["id", "sentences"])):
            doc_id, sentences = row.get("id"), row.get("sentences")
            if not isinstance(doc_id, str) or not isinstance(sentences, list):
                self.count("documents_malformed")
                log.warning("%s row %d: no id or no sentences list, skipped", url, i)
                continue
            self.count("documents_read")
            yield doc_id, [s for s in sentences if isinstance(s, str)]


class CountWords(beam.DoFn):
    """Documents -> ``(word, count)``, summed within a bundle first so that a frequent word
    leaves each bundle once: the hot keys of natural language never reach the shuffle
    one occurrence at a time. The table is flushed when it grows past ``max_entries``."""

    def __init__(self, lowercase: bool, max_entries: int = 200_000):
        self.lowercase, self.max_entries = lowercase, max_entries
        self.count = Counters(NAMESPACE)

    def setup(self):
        freeze_heap()
        self._split = bert_tokenizer.WordSplitter(self.lowercase)

    def start_bundle(self):
        self._counts: dict[str, int] = {}

    def process(self, doc):
        _, sentences = doc
        counts, n = self._counts, 0
        # One call per document: the words are the same as sentence by sentence, since
        # the pre-tokenizer splits on the whitespace joining them.
        for word in self._split(" ".join(sentences)):
            counts[word] = counts.get(word, 0) + 1
            n += 1
        self.count("words_counted", n)
        if len(counts) > self.max_entries:
            yield from counts.items()
            self._counts = {}

    def finish_bundle(self):
        for kv in self._counts.items():
            yield WindowedValue(kv, GlobalWindow().max_timestamp(), [GlobalWindow()])
        self._counts = {}


class CorpusTotals(beam.CombineFn):
    """``(word, count)`` -> how many words were counted, and how many distinct."""

    def create_accumulator(self):
        return 0, 0

    def add_input(self, acc, kv):
        return acc[0] + kv[1], acc[1] + 1

    def merge_accumulators(self, accs):
        accs = list(accs)
        return sum(a[0] for a in accs), sum(a[1] for a in accs)

    def extract_output(self, acc):
        return {"words": acc[0], "distinct_words": acc[1]}


def _cut_summary(kept: list[tuple[str, int]]) -> dict:
    return {
        "kept_words": len(kept),
        "kept_occurrences": sum(c for _, c in kept),
        "kept_min_count": min((c for _, c in kept), default=0),
    }


class TokenizeStats(beam.DoFn):
    """A held-out document -> word, piece and [UNK] counts under the final tokenizer."""

    def __init__(self, lowercase: bool):
        self.lowercase = lowercase
        self._tokenizer = None

    def process(self, doc, vocab):
        if self._tokenizer is None:  # the side input is the same for every element
            self._tokenizer = bert_tokenizer.build_tokenizer(vocab["tokens"], self.lowercase)
            self._unk = self._tokenizer.token_to_id(UNK)
        _, sentences = doc
        stats = {"documents": 1, "sentences": len(sentences), "words": 0, "pieces": 0, "unknown": 0, "split_words": 0}
        for enc in self._tokenizer.encode_batch(sentences, add_special_tokens=False):
            pieces_per_word: dict[int, int] = {}
            for w in enc.word_ids:
                pieces_per_word[w] = pieces_per_word.get(w, 0) + 1
            stats["words"] += len(pieces_per_word)
            stats["pieces"] += len(enc.ids)
            stats["unknown"] += sum(1 for i in enc.ids if i == self._unk)
            stats["split_words"] += sum(1 for n in pieces_per_word.values() if n > 1)
        yield stats


def _sum_dicts(dicts: Iterable[dict]) -> dict:
    out: dict = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def _learn(kept: list[tuple[str, int]], cfg: VocabConfig, char_counts: list[tuple[str, int]]) -> dict:
    reserved = bert_tokenizer.reserved_tokens(cfg.num_unused)
    if not kept:
        raise ValueError(
            f"no word is seen at least min_count={cfg.min_count} times in the documents: "
            "check the input steps, or lower min_count"
        )
    learner = wordpiece.LearnerConfig(max_unique_chars=cfg.max_unique_chars, min_piece_count=cfg.min_piece_count)
    learned = wordpiece.learn(kept, cfg.vocab_size, reserved, learner, char_counts=char_counts)
    if len(learned.tokens) < cfg.vocab_size:
        log.warning("only %d tokens could be learned (asked for %d): the corpus is small", len(learned.tokens), cfg.vocab_size)
    return {
        "tokens": learned.tokens,
        "learned": {
            "threshold": learned.threshold,
            "alphabet": learned.alphabet,
            "words_used": learned.words_used,
            "words_skipped": learned.words_skipped,
        },
    }


def _write_word_counts(kept: list[tuple[str, int]], output: str) -> int:
    ranked = sorted(kept, key=lambda wc: (-wc[1], wc[0]))
    write_bytes_atomic(posixpath.join(output, "word_counts.tsv"), "".join(f"{w}\t{c}\n" for w, c in ranked).encode("utf-8"))
    return len(ranked)


def _write_tokenizer(vocab: dict, output: str, lowercase: bool) -> list[str]:
    names = bert_tokenizer.write_tokenizer_folder(vocab["tokens"], lowercase, output)
    if vocab.get("file_bytes") is not None:  # a given vocab.txt is kept byte for byte
        write_bytes_atomic(posixpath.join(output, "vocab.txt"), vocab["file_bytes"])
    return names


def _report(heldout: dict, corpus: dict, cut: dict, vocab: dict, cfg: VocabConfig) -> dict:
    words = heldout.get("words", 0)
    pieces = heldout.get("pieces", 0)
    return {
        "vocab_size": len(vocab["tokens"]),
        "vocab_size_requested": None if cfg.vocab_file else cfg.vocab_size,
        "source": cfg.vocab_file or "learned",
        "lowercase": cfg.lowercase,
        "learning": vocab.get("learned"),
        "corpus": {
            **corpus,
            "min_count": cfg.min_count,
            "max_words": cfg.max_words,
            **cut,
        },
        "heldout": {
            "fraction": cfg.heldout_fraction,
            **{k: heldout.get(k, 0) for k in ("documents", "sentences", "words", "pieces", "unknown", "split_words")},
            "pieces_per_word": round(pieces / words, 6) if words else None,
            "unk_rate": round(heldout.get("unknown", 0) / pieces, 8) if pieces else None,
            "split_word_rate": round(heldout.get("split_words", 0) / words, 6) if words else None,
        },
    }


def build(p: beam.Pipeline, cfg: VocabConfig, inputs: list[str], output: str, given_vocab: dict | None):
    """The job's graph. ``given_vocab`` ({"tokens", "file_bytes"}) replaces learning."""
    output = output.rstrip("/")
    shards = sorted({url for _, url in document_shards(inputs)})
    for url in shards:  # a truncated shard fails here, naming itself, rather than in a worker
        with open_shard(url):
            pass
    docs = (
        p
        | "Shards" >> beam.Create(shards)
        | "Spread" >> beam.Reshuffle()
        | "Read" >> beam.ParDo(ReadDocuments())
    )
    fraction, seed = cfg.heldout_fraction, cfg.seed
    learn_docs, heldout_docs = docs | "HoldOut" >> beam.Partition(
        lambda d, _: int(is_heldout(d[0], fraction, seed)), 2
    )

    counts = (
        learn_docs
        | "CountWords" >> beam.ParDo(CountWords(cfg.lowercase))
        | "SumPerWord" >> beam.CombinePerKey(sum)
    )
    corpus = counts | "Totals" >> beam.CombineGlobally(CorpusTotals())
    min_count = cfg.min_count
    # Ties at the cut are broken by the word, so the kept set never depends on order.
    kept = (
        counts
        | "MinCount" >> beam.Filter(lambda kv: kv[1] >= min_count)
        | "TopWords" >> beam.combiners.Top.Of(cfg.max_words, key=lambda kv: (kv[1], kv[0]))
    )
    kept | "WriteWordCounts" >> beam.Map(_write_word_counts, output)
    cut = kept | "CutSummary" >> beam.Map(_cut_summary)

    if given_vocab is None:
        # The alphabet comes from every word counted, also those the cut dropped, so a rare
        # script keeps its characters (and its words become pieces, not [UNK]).
        char_counts = (
            counts
            | "Characters" >> beam.FlatMap(lambda kv: ((ch, kv[1]) for ch in kv[0]))
            | "SumPerCharacter" >> beam.CombinePerKey(sum)
        )
        vocab = kept | "Learn" >> beam.Map(_learn, cfg, char_counts=beam.pvalue.AsList(char_counts))
    else:
        vocab = p | "GivenVocab" >> beam.Create([given_vocab])
    vocab | "WriteTokenizer" >> beam.Map(_write_tokenizer, output, cfg.lowercase)

    heldout = (
        heldout_docs
        | "Tokenize" >> beam.ParDo(TokenizeStats(cfg.lowercase), vocab=beam.pvalue.AsSingleton(vocab))
        | "SumStats" >> beam.CombineGlobally(_sum_dicts)
    )
    (
        heldout
        | "Report"
        >> beam.Map(
            _report,
            corpus=beam.pvalue.AsSingleton(corpus),
            cut=beam.pvalue.AsSingleton(cut),
            vocab=beam.pvalue.AsSingleton(vocab),
            cfg=cfg,
        )
        | "WriteReport" >> beam.Map(lambda r: write_json(posixpath.join(output, "report.json"), r))
    )


def run(cfg: VocabConfig, inputs: list[str], output: str, options) -> dict[str, float]:
    """Run the job on the documents folders ``inputs`` into ``output`` with Beam
    ``options``; returns flat counters (Beam's and the report's headline numbers)."""
    given_vocab = None
    if cfg.vocab_file:
        with fsspec.open(cfg.vocab_file, "rb") as f:
            file_bytes = f.read()
        tokens = read_vocab(cfg.vocab_file)
        bert_tokenizer.build_tokenizer(tokens, cfg.lowercase)  # a bad file fails here, not in a worker
        given_vocab = {"tokens": tokens, "file_bytes": file_bytes}
    fs, path = fsspec.core.url_to_fs(output)
    fs.makedirs(path, exist_ok=True)
    p = beam.Pipeline(options=options)
    build(p, cfg, inputs, output, given_vocab)
    with worker_environment():
        result = p.run()
        result.wait_until_finish()
    counters = {k: float(v) for k, v in metric_counters(result).items()}
    with fsspec.open(posixpath.join(output.rstrip("/"), "report.json"), "r") as f:
        report = json.load(f)
    counters.update(
        vocab_size=report["vocab_size"],
        distinct_words=report["corpus"]["distinct_words"],
        kept_words=report["corpus"]["kept_words"],
        heldout_documents=report["heldout"]["documents"],
        heldout_words=report["heldout"]["words"],
    )
    if report["heldout"]["pieces_per_word"] is not None:
        counters["heldout_pieces_per_word"] = report["heldout"]["pieces_per_word"]
        counters["heldout_unk_rate"] = report["heldout"]["unk_rate"]
    return counters


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bertflow.pipelines.vocab", description=__doc__.split("\n\n")[0])
    ap.add_argument("--documents", nargs="+", required=True, help="documents folders (any fsspec URL)")
    ap.add_argument("--output", required=True, help="output folder")
    ap.add_argument("--workers", type=int, default=2, help="local FnApiRunner worker processes")
    add_arguments(ap, VocabConfig)
    return ap


def main(argv: list[str] | None = None) -> None:
    ap = parser()
    args = ap.parse_args(argv)
    cfg = parse(VocabConfig, args, ap)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    freeze_heap()
    counters = run(cfg, args.documents, args.output, pipeline_options(direct_num_workers=args.workers))
    print(json.dumps({"config": cfg.model_dump(), "counters": counters}, indent=2))


if __name__ == "__main__":
    # The importable twin, so Beam pickles pipelines.vocab.X rather than __main__.X.
    from bertflow.pipelines import vocab

    vocab.main()
