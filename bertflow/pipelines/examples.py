"""BERT pretraining examples: documents + a vocabulary in, masked-LM / NSP shards out (Beam).

    python -m bertflow.pipelines.examples --documents runs/wiki runs/books --vocab runs/vocab \\
        --output runs/examples --max-seq-length 128 --max-predictions-per-seq 20 --workers 2

Reads every ``documents-*.parquet`` of each ``--documents`` folder (``id``, ``title``,
``sentences``) and ``vocab.txt`` + ``tokenizer.json`` of ``--vocab``; writes
``train-SSSSS-of-NNNNN.parquet``, ``eval-SSSSS-of-NNNNN.parquet``, ``stats.json``, and a
copy of the ``vocab.txt`` and ``tokenizer.json`` the ids refer to.

The job, stage by stage:

1. the work units are runs of consecutive row groups of the documents shards, at least
   ``docs_per_bucket`` documents each (``bertflow.pipelines.documents``, from the Parquet footers);
   each is read by one worker, so the raw text never goes through the runner's shuffle
   (the local runner would hold it all in memory);
2. per unit: its documents are split into ``eval`` and ``train`` by a hash of the id
   (the least split hash of the corpus is always eval, and the two least with four
   documents or more, so that the eval split is not empty unless those documents are, and
   its next-sentence pairs find random partners on the eval side).
   The train documents are grouped into buckets by a hash of the id (about
   ``docs_per_bucket`` each: where random-next partners come from); the eval documents,
   a small share, are shuffled into eval buckets that span the corpus. Per bucket, in one
   step: tokenize every sentence (``bertflow.pipelines.tokens``), make and mask every instance as
   flat numpy columns (``bertflow.pipelines.instances``), count the statistics
   (``bertflow.pipelines.stats``), and cut the instances by output shard; a bundle's instances go,
   sorted by a hash of the instance id, into runs under ``_spill/`` (``bertflow.pipelines.shards``);
   only the runs' URLs go through the shuffle;
3. each shard's runs are merged and written row group by row group, so a writer's memory
   does not grow with the shard; the statistics' counts are summed into ``stats.json``;
   ``_spill/`` is removed once every shard is written.

Units and buckets depend on the documents and their layout, never on the worker count,
so the output bytes do not either.

Sequence lengths: one job may make several from the same documents (BERT's two phases:
``--max-seq-length 128 512 --max-predictions-per-seq 20 80``). Each bucket is read and
tokenized once, then cut at every length; each length gets its own folder ``seq{L}/`` in
the one-length layout (shards, ``stats.json``, the vocabulary), byte for byte what a job
making that length alone writes. One length writes its folder's files at the top.

Output columns (unpadded; ``[CLS]``/``[SEP]`` included; the loader pads):
``input_ids: list<int32>``, ``token_type_ids: list<int8>``, ``masked_lm_positions:
list<int32>``, ``masked_lm_ids: list<int32>``, ``next_sentence_label: int8``
(1 = B is a random sentence).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import posixpath
from collections import Counter

import apache_beam as beam
import fsspec
import numpy as np
import pyarrow as pa
from apache_beam.transforms.window import GlobalWindows

from bertflow.contracts import storage
from bertflow.contracts.config import add_arguments, parse
from bertflow.contracts.hashing import stable_hasher
from bertflow.contracts.layout import (CLS, EXAMPLES_SCHEMA, MASK, SEP, SPLITS, STATS, TOKENIZER, VOCAB, length_folder_name,
                              shard_name)
from bertflow.contracts.storage import write_bytes_atomic, write_json
from bertflow.pipelines.config import ExamplesConfig, InstanceConfig
from bertflow.pipelines.counters import Counters, metric_counters
from bertflow.pipelines.documents import bucket_of, held_out_count, num_buckets, plan_units, read_unit, split_hashes, split_of
from bertflow.pipelines.instances import SHUFFLED, batch_table, make_batches
from bertflow.pipelines.local_runner import freeze_heap, pipeline_options, worker_environment
from bertflow.pipelines.shards import SPILL, MergeShards, Runs, merge_all, regroup, write_row_groups
from bertflow.pipelines.stats import SumCounts, add_counts, batch_counts, summarize, zero_counts
from bertflow.pipelines.tokens import SentenceEncoder, Vocab, tokenize_documents

log = logging.getLogger(__name__)

NAMESPACE = "examples"  # of the Beam counters

VOCAB_FILES = (VOCAB, TOKENIZER)  # what the examples folder carries of the vocabulary


def length_folders(cfg: ExamplesConfig, output: str) -> list[str]:
    """Where the instances of each length go: ``output`` for one length, else a ``seq{L}/``
    folder each."""
    lengths = cfg.seq_lengths()
    return [output] if len(lengths) == 1 else [storage.join(output, length_folder_name(n)) for n in lengths]


def eval_shards(cfg: ExamplesConfig) -> int:
    # Eval shards hold about as many instances each as train shards do.
    return max(1, math.ceil(cfg.num_shards * cfg.eval_fraction))


# The job's settings stats.json records beside each length's instance settings.
STATS_PARAMS = {"dupe_factor", "seed", "eval_fraction", "num_shards", "docs_per_bucket"}


# --- the vocabulary folder -------------------------------------------------------------


def load_tokenizer(vocab_dir: str):
    """``tokenizer.json`` of ``vocab_dir``, set to emit bare ids (no truncation, no padding:
    a shipped tokenizer.json may carry both)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(storage.read_text(storage.join(vocab_dir, TOKENIZER)))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def load_vocab(vocab_dir: str) -> Vocab:
    return Vocab.read(storage.join(vocab_dir, VOCAB))


def check_vocab_folder(vocab_dir: str) -> Vocab:
    """Fail early, with what to fix, when the vocab folder is unusable."""
    for name in VOCAB_FILES:
        if not storage.exists(storage.join(vocab_dir, name)):
            raise FileNotFoundError(f"{vocab_dir} has no {name}: give the output folder of a vocab step")
    vocab = load_vocab(vocab_dir)
    tokenizer = load_tokenizer(vocab_dir)
    for token, want in ((CLS, vocab.cls_id), (SEP, vocab.sep_id), (MASK, vocab.mask_id)):
        if tokenizer.token_to_id(token) != want:
            raise ValueError(f"{vocab_dir}: tokenizer.json and vocab.txt disagree on the id of {token}")
    if tokenizer.get_vocab_size() > vocab.size:
        raise ValueError(f"{vocab_dir}: tokenizer.json has more ids than vocab.txt has lines")
    return vocab


# --- Beam stages ------------------------------------------------------------------------


# A bundle's instances are buffered up to RUN_BYTES (Arrow bytes), then written as runs,
# one per (length, split, shard), sorted in shard order (``shards.Runs``).
RUN_BYTES = 32 << 20
ORDER = [("_order", "ascending"), ("_iid", "ascending")]  # the rows' order in a shard


class _Instances(beam.DoFn):
    """Buckets of raw documents -> their instances at each sequence length (``cfgs``, one
    per length; index ``i``), cut per output shard into run files under ``spill`` (tagged
    "rows": ((i, split, shard), run URL)), and statistics' counts (tagged "stats": ((i,
    split), counts))."""

    def __init__(self, vocab_dir: str, cfgs: list[InstanceConfig], seed: int, dupe_factor: int, shards: dict[str, int], spill: str):
        self.vocab_dir, self.cfgs, self.seed, self.dupe_factor, self.shards = vocab_dir, cfgs, seed, dupe_factor, shards
        self.spill = spill
        self.count = Counters(NAMESPACE)

    def setup(self):
        freeze_heap()
        # Parallelism comes from Beam workers; a tokenizer thread pool per worker would
        # only oversubscribe the cores.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.encoder = SentenceEncoder(load_tokenizer(self.vocab_dir))
        self.order_of = stable_hasher(self.seed, "order")
        self.vocab = load_vocab(self.vocab_dir)

    def unique(self, docs) -> list[tuple[str, list[str]]]:
        """``docs`` in a fixed order whatever their order of arrival; a repeated id keeps one
        document (the one whose sentences sort first), so that instance ids stay unique."""
        unique: dict[str, list[str]] = {}
        for uid, sentences in sorted(docs):
            self.count("documents_read")
            if uid in unique:
                self.count("documents_duplicate_id")
                log.warning("documents: id %s appears more than once; keeping one", uid)
                continue
            unique[uid] = sentences
        return list(unique.items())

    def zero_stats(self) -> list[dict]:
        return [zero_counts(cfg.max_seq_length) for cfg in self.cfgs]

    def bucket_instances(self, split: str, bucket: list[tuple[str, list[str]]], stats: list[dict]):
        docs, words_before = [], self.encoder.words
        for doc in tokenize_documents(self.encoder, bucket):  # once, for every length
            if doc is None:
                self.count("documents_empty")
            else:
                self.count("input_tokens", len(doc.tokens))
                docs.append(doc)
        self.count("input_words", self.encoder.words - words_before)
        counts: Counter = Counter()
        for i, cfg in enumerate(self.cfgs):
            tables, orders = [], []
            for batch in make_batches(docs, cfg, self.vocab, self.seed, self.dupe_factor, counts):
                self.count("instances", len(batch))
                stats[i] = add_counts(stats[i], batch_counts(batch, cfg.max_seq_length, self.vocab.mask_id))
                # The order of rows in the shards: a hash of the instance id; the shard: its residue.
                orders.append(np.fromiter(map(self.order_of, batch.ids), dtype=np.uint64, count=len(batch)))
                tables.append(batch_table(batch, orders[-1]))
            if not tables:
                continue
            table = pa.concat_tables(tables)
            shard_of = np.concatenate(orders) % np.uint64(self.shards[split])
            for shard in np.unique(shard_of).tolist():
                self.runs.add((i, split, shard), table.filter(pa.array(shard_of == shard)))
        self.count("nsp_no_partner", counts["nsp_no_partner"])
        if self.runs.nbytes >= RUN_BYTES:
            yield from self.write_runs()

    def start_bundle(self):
        self.runs = Runs(self.spill, SHUFFLED, ORDER)

    def finish_bundle(self):
        for out in self.write_runs():
            yield beam.pvalue.TaggedOutput(out.tag, GlobalWindows.windowed_value(out.value))

    def write_runs(self):
        """The bundle's pending instances as runs: the shuffle moves only their URLs, so
        memory does not grow with the corpus (the local runner holds what it shuffles)."""
        for key, run in self.runs.flush():
            yield beam.pvalue.TaggedOutput("rows", (key, run))

    def emit_stats(self, split: str, stats: list[dict]):
        for i, counts in enumerate(stats):
            yield beam.pvalue.TaggedOutput("stats", ((i, split), counts))


class _UnitInstances(_Instances):
    """A unit of documents -> the instances of its train documents, bucket by bucket (the
    buckets: about ``docs_per_bucket`` documents each, by a hash of the id); its eval
    documents go on (tagged "eval_docs": (eval bucket, (uid, sentences)))."""

    def __init__(self, *args, eval_fraction: float, eval_buckets: int, docs_per_bucket: int):
        super().__init__(*args)
        self.eval_fraction, self.eval_buckets, self.docs_per_bucket = eval_fraction, eval_buckets, docs_per_bucket

    def process(self, unit, least_hashes=()):
        docs = []
        for uid, sentences in read_unit(unit, self.count):
            if split_of(self.seed, uid, self.eval_fraction, least_hashes) == "eval":
                yield beam.pvalue.TaggedOutput("eval_docs", (bucket_of(self.seed, uid, self.eval_buckets), (uid, sentences)))
            else:
                docs.append((uid, sentences))
        k = num_buckets(len(docs), self.docs_per_bucket)
        train: dict[int, list] = {}
        for uid, sentences in docs:
            train.setdefault(bucket_of(self.seed, uid, k), []).append((uid, sentences))
        stats = self.zero_stats()
        for bucket in sorted(train):
            yield from self.bucket_instances("train", self.unique(train[bucket]), stats)
        yield from self.emit_stats("train", stats)


class _EvalInstances(_Instances):
    """(eval bucket, [(uid, sentences)]) -> the bucket's instances."""

    def process(self, element):
        _, docs = element
        stats = self.zero_stats()
        yield from self.bucket_instances("eval", self.unique(docs), stats)
        yield from self.emit_stats("eval", stats)


class _ExampleShard:
    """((length index, split, shard), run URLs) -> one Parquet shard, rows in hash order,
    in the length's folder."""

    def __init__(self, folders: list[str], shards: dict[str, int], spill: str):
        self.folders, self.shards, self.spill = folders, shards, spill
        self.count = Counters(NAMESPACE)

    def __call__(self, key: tuple[int, str, int], runs: list[str]) -> tuple[str, int]:
        i, split, shard = key
        name = shard_name(split, shard, self.shards[split])
        groups = regroup(t.select(EXAMPLES_SCHEMA.names) for t in merge_all(runs, ORDER, self.spill))
        rows = write_row_groups(groups, storage.join(self.folders[i], name), EXAMPLES_SCHEMA)
        self.count(f"{split}_rows" if len(self.folders) == 1 else f"{posixpath.basename(self.folders[i])}_{split}_rows", rows)
        return name, rows


def build(p: beam.Pipeline, cfg: ExamplesConfig, documents: list[str], vocab: str, output: str) -> None:
    """Add the job's stages to ``p``: units of documents in, one shuffle of compact
    instance batches into shards."""
    check_vocab_folder(vocab)  # fail before any work when the vocab is missing
    units, total_docs = plan_units(documents, cfg.docs_per_bucket)
    num_shards = {"train": cfg.num_shards, "eval": eval_shards(cfg)}
    instances = cfg.instance_configs()
    folders = length_folders(cfg, output)
    spill = storage.join(output, SPILL)
    common = (vocab, instances, cfg.seed, cfg.dupe_factor, num_shards, spill)
    spread = p | "Units" >> beam.Create(units) | "Spread" >> beam.Reshuffle()
    least_hashes = None
    if cfg.eval_fraction > 0 and held_out_count(total_docs):
        # One cheap pass over the ids: the documents with the least split hashes are eval.
        least_hashes = beam.pvalue.AsSingleton(
            spread
            | "SplitHashes" >> beam.FlatMap(split_hashes, cfg.seed)
            | "Least" >> beam.combiners.Top.Smallest(held_out_count(total_docs)))
    train = spread | "TrainInstances" >> beam.ParDo(
        _UnitInstances(*common, eval_fraction=cfg.eval_fraction, docs_per_bucket=cfg.docs_per_bucket,
                       eval_buckets=num_buckets(total_docs * cfg.eval_fraction, cfg.docs_per_bucket)),
        least_hashes=least_hashes,
    ).with_outputs("rows", "stats", "eval_docs")
    evals = (
        train.eval_docs
        | "GroupEvalBuckets" >> beam.GroupByKey()
        | "EvalInstances" >> beam.ParDo(_EvalInstances(*common)).with_outputs("rows", "stats")
    )
    shard_keys = [(i, split, s) for i in range(len(folders)) for split in SPLITS for s in range(num_shards[split])]
    _ = (train.rows, evals.rows) | "Shards" >> MergeShards(shard_keys, _ExampleShard(folders, num_shards, spill), spill)
    common_params = cfg.model_dump(include=STATS_PARAMS)

    def write_stats(counts: dict) -> None:
        for i, icfg in enumerate(instances):
            stats = {}
            for split in SPLITS:
                c = counts.get((i, split), zero_counts(icfg.max_seq_length))
                stats[split] = summarize(c["lengths"], c["random_next"], c["short_target"], c["masked"], c["mask"], c["random"], c["kept"])
            write_json(storage.join(folders[i], STATS), {**stats, "params": {**icfg.model_dump(), **common_params}})

    (
        (train.stats, evals.stats)
        | "AllStats" >> beam.Flatten()
        | "SumStats" >> beam.CombinePerKey(SumCounts())
        | "OneDict" >> beam.combiners.ToDict()
        | "WriteStats" >> beam.Map(write_stats)
    )


def run(cfg: ExamplesConfig, documents: list[str], vocab: str, output: str, options) -> dict[str, int]:
    """Run the job on the documents folders ``documents`` and the vocab folder ``vocab``
    (vocab.txt and tokenizer.json) into ``output``, with Beam ``options``; returns its
    counters."""
    storage.makedirs(output)
    p = beam.Pipeline(options=options)
    build(p, cfg, documents, vocab, output)
    with worker_environment():
        result = p.run()
        result.wait_until_finish()
    for folder in length_folders(cfg, output):
        copy_vocab(vocab, folder)
    return metric_counters(result)


def copy_vocab(vocab_dir: str, output: str) -> None:
    """The examples folder carries the vocabulary its ids mean (the trainer needs it for
    dynamic masking and for the model folder it exports)."""
    for name in VOCAB_FILES:
        with fsspec.open(storage.join(vocab_dir, name), "rb") as f:
            data = f.read()
        write_bytes_atomic(storage.join(output, name), data)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bertflow.pipelines.examples", description=__doc__.split("\n\n")[0])
    ap.add_argument("--documents", nargs="+", required=True, help="documents folders (any fsspec URL)")
    ap.add_argument("--vocab", required=True, help="folder with vocab.txt and tokenizer.json")
    ap.add_argument("--output", required=True, help="output folder")
    ap.add_argument("--workers", type=int, default=1, help="local FnApiRunner worker processes")
    add_arguments(ap, ExamplesConfig)
    return ap


def main(argv=None) -> None:
    ap = parser()
    args = ap.parse_args(argv)
    cfg = parse(ExamplesConfig, args, ap)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    freeze_heap()
    counters = run(cfg, args.documents, args.vocab, args.output, pipeline_options(direct_num_workers=args.workers))
    print(json.dumps(counters, indent=2))


if __name__ == "__main__":
    # The importable twin, so Beam pickles pipelines.examples.X rather than __main__.X.
    from bertflow.pipelines import examples

    examples.main()
