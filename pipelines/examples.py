"""BERT pretraining examples: documents + a vocabulary in, masked-LM / NSP shards out (Beam).

    python -m pipelines.examples --documents runs/wiki runs/books --vocab runs/vocab \\
        --output runs/examples --max-seq-length 128 --max-predictions-per-seq 20 --workers 2

Reads every ``documents-*.parquet`` of each ``--documents`` folder (``id``, ``title``,
``sentences``) and ``vocab.txt`` + ``tokenizer.json`` of ``--vocab``; writes
``train-SSSSS-of-NNNNN.parquet``, ``eval-SSSSS-of-NNNNN.parquet``, ``stats.json``, and a
copy of the ``vocab.txt`` and ``tokenizer.json`` the ids refer to.

The job, stage by stage:

1. tokenize each document (a batch call over its sentences); empty documents are counted
   and dropped; the document goes to ``eval`` when ``hash(seed, id)`` falls under
   ``eval_fraction``, else to ``train``;
2. count the documents of each split, and group them into buckets of about
   ``docs_per_bucket`` by a hash of their id: a bucket is what one worker holds, and where
   random-next partners come from (see ``pipelines.instances``);
3. make every instance of a bucket (``dupe_factor`` passes per document, each with its own
   random stream seeded from (seed, document id, pass));
4. write the shards of each split (deterministic order: a hash of the instance id), and
   the statistics, computed by a Beam combiner over the instances.

Sequence lengths: one job makes one length. BERT's two phases (128 with 20 predictions,
512 with 80) are two ``pretraining_data`` steps reading the same documents and vocabulary.

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
from dataclasses import asdict, dataclass, field

import apache_beam as beam
import fsspec
import pyarrow as pa

from pipelines.instances import Document, InstanceConfig, Vocab, bucket_instances, tokenize_document
from pipelines.shards import WriteParquetShards, list_shards, metric_counters, read_rows, stable_hash

log = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        ("input_ids", pa.list_(pa.int32())),
        ("token_type_ids", pa.list_(pa.int8())),
        ("masked_lm_positions", pa.list_(pa.int32())),
        ("masked_lm_ids", pa.list_(pa.int32())),
        ("next_sentence_label", pa.int8()),
    ]
)
SPLITS = ("train", "eval")
VOCAB_FILES = ("vocab.txt", "tokenizer.json")


@dataclass
class ExamplesConfig:
    documents: list[str]  # documents folders (fsspec URLs)
    vocab: str  # folder with vocab.txt and tokenizer.json
    output: str  # output folder
    instances: InstanceConfig = field(default_factory=InstanceConfig)
    dupe_factor: int = 10
    seed: int = 12345
    eval_fraction: float = 0.01
    num_shards: int = 16
    docs_per_bucket: int = 256

    def __post_init__(self):
        if self.dupe_factor < 1:
            raise ValueError("dupe_factor must be >= 1")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError("eval_fraction must be in [0, 1)")
        if self.num_shards < 1 or self.docs_per_bucket < 2:
            raise ValueError("num_shards must be >= 1 and docs_per_bucket >= 2")

    @property
    def eval_shards(self) -> int:
        # Eval shards hold about as many instances each as train shards do.
        return max(1, math.ceil(self.num_shards * self.eval_fraction))


# --- the vocabulary folder -------------------------------------------------------------


def _read_text(url: str) -> str:
    with fsspec.open(url, "rt", encoding="utf-8") as f:
        return f.read()


def load_tokenizer(vocab_dir: str):
    """``tokenizer.json`` of ``vocab_dir``, set to emit bare ids (no truncation, no padding:
    a shipped tokenizer.json may carry both)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(_read_text(posixpath.join(vocab_dir, "tokenizer.json")))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def load_vocab(vocab_dir: str) -> Vocab:
    return Vocab.from_text(_read_text(posixpath.join(vocab_dir, "vocab.txt")))


def check_vocab_folder(vocab_dir: str) -> Vocab:
    """Fail early, with what to fix, when the vocab folder is unusable."""
    fs, path = fsspec.core.url_to_fs(vocab_dir)
    for name in ("vocab.txt", "tokenizer.json"):
        if not fs.exists(posixpath.join(path, name)):
            raise FileNotFoundError(f"{vocab_dir} has no {name}: give the output folder of a vocab step")
    vocab = load_vocab(vocab_dir)
    tokenizer = load_tokenizer(vocab_dir)
    for token, want in (("[CLS]", vocab.cls_id), ("[SEP]", vocab.sep_id), ("[MASK]", vocab.mask_id)):
        if tokenizer.token_to_id(token) != want:
            raise ValueError(f"{vocab_dir}: tokenizer.json and vocab.txt disagree on the id of {token}")
    if tokenizer.get_vocab_size() > vocab.size:
        raise ValueError(f"{vocab_dir}: tokenizer.json has more ids than vocab.txt has lines")
    return vocab


# --- Beam stages ------------------------------------------------------------------------


def split_of(seed: int, doc_id: str, eval_fraction: float) -> str:
    return "eval" if stable_hash(seed, "split", doc_id) < eval_fraction * 2.0**64 else "train"


def num_buckets(num_docs: int, docs_per_bucket: int) -> int:
    return max(1, math.ceil(num_docs / docs_per_bucket))


def _read_documents(element):
    """(input index, shard URL) -> (document uid, sentences). The uid is prefixed with the
    input's index, so that two inputs may reuse an id."""
    index, url = element
    bad = beam.metrics.Metrics.counter("examples", "documents_malformed")
    for row in read_rows([url], columns=["id", "sentences"]):
        doc_id, sentences = row.get("id"), row.get("sentences")
        if doc_id is None or sentences is None or any(not isinstance(s, str) for s in sentences):
            bad.inc()
            log.warning("%s: skipping document %r: no id or sentences that are not strings", url, doc_id)
            continue
        yield f"{index}/{doc_id}", sentences


class _Tokenize(beam.DoFn):
    def __init__(self, vocab_dir: str, seed: int, eval_fraction: float):
        self.vocab_dir, self.seed, self.eval_fraction = vocab_dir, seed, eval_fraction
        self.read = beam.metrics.Metrics.counter("examples", "documents_read")
        self.empty = beam.metrics.Metrics.counter("examples", "documents_empty")
        self.tokens = beam.metrics.Metrics.counter("examples", "input_tokens")
        self.words = beam.metrics.Metrics.counter("examples", "input_words")

    def setup(self):
        # Parallelism comes from Beam workers; a tokenizer thread pool per worker would
        # only oversubscribe the cores.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.tokenizer = load_tokenizer(self.vocab_dir)

    def process(self, element):
        uid, sentences = element
        self.read.inc()
        self.words.inc(sum(len(s.split()) for s in sentences))
        doc = tokenize_document(self.tokenizer, uid, sentences) if sentences else None
        if doc is None:
            self.empty.inc()
            return
        self.tokens.inc(len(doc.tokens))
        yield split_of(self.seed, uid, self.eval_fraction), doc


def _to_bucket(element, counts: dict, seed: int, docs_per_bucket: int):
    split, doc = element
    bucket = stable_hash(seed, "bucket", doc.id) % num_buckets(counts.get(split, 0), docs_per_bucket)
    return (split, bucket), doc


class _MakeInstances(beam.DoFn):
    def __init__(self, vocab_dir: str, cfg: InstanceConfig, seed: int, dupe_factor: int):
        self.vocab_dir, self.cfg, self.seed, self.dupe_factor = vocab_dir, cfg, seed, dupe_factor
        self.duplicates = beam.metrics.Metrics.counter("examples", "documents_duplicate_id")
        self.no_partner = beam.metrics.Metrics.counter("examples", "nsp_no_partner")
        self.instances = beam.metrics.Metrics.counter("examples", "instances")

    def setup(self):
        self.vocab = load_vocab(self.vocab_dir)

    def process(self, element):
        (split, _), docs = element
        # A fixed order whatever the order of arrival; a repeated id keeps one document
        # (the one whose tokens sort first), so that instance ids stay unique.
        unique: dict[str, Document] = {}
        for doc in sorted(docs, key=lambda d: (d.id, d.tokens.tobytes())):
            if doc.id in unique:
                self.duplicates.inc()
                log.warning("documents: id %s appears more than once; keeping one", doc.id)
                continue
            unique[doc.id] = doc
        counts: Counter = Counter()
        made = 0
        for iid, inst in bucket_instances(list(unique.values()), self.cfg, self.vocab, self.seed, self.dupe_factor, counts):
            made += 1
            yield beam.pvalue.TaggedOutput(
                split,
                {
                    "input_ids": inst.input_ids,
                    "token_type_ids": inst.token_type_ids,
                    "masked_lm_positions": inst.masked_lm_positions,
                    "masked_lm_ids": inst.masked_lm_ids,
                    "next_sentence_label": inst.next_sentence_label,
                    # Not written: the shard order key, and a flag for the statistics.
                    "_key": (stable_hash(self.seed, "order", iid), iid),
                    "_short": inst.short_target,
                },
            )
        self.instances.inc(made)
        self.no_partner.inc(counts["nsp_no_partner"])


class InstanceStats(beam.CombineFn):
    """The statistics of a split, combined over instances (nothing holds them all)."""

    def __init__(self, max_seq_length: int, mask_id: int):
        self.max_seq_length, self.mask_id = max_seq_length, mask_id

    def create_accumulator(self):
        return {"lengths": [0] * (self.max_seq_length + 1), "random_next": 0, "short_target": 0,
                "masked": 0, "mask": 0, "random": 0, "kept": 0}  # fmt: skip

    def add_input(self, acc, row):
        ids = row["input_ids"]
        acc["lengths"][min(len(ids), self.max_seq_length)] += 1
        acc["random_next"] += row["next_sentence_label"]
        acc["short_target"] += row["_short"]
        for pos, label in zip(row["masked_lm_positions"], row["masked_lm_ids"]):
            acc["masked"] += 1
            token = ids[pos]
            if token == self.mask_id:
                acc["mask"] += 1
            elif token == label:
                acc["kept"] += 1
            else:
                acc["random"] += 1
        return acc

    def merge_accumulators(self, accs):
        accs = list(accs)
        out = accs[0]
        for acc in accs[1:]:
            out["lengths"] = [a + b for a, b in zip(out["lengths"], acc["lengths"])]
            for k in ("random_next", "short_target", "masked", "mask", "random", "kept"):
                out[k] += acc[k]
        return out

    def extract_output(self, acc):
        return summarize(acc["lengths"], acc["random_next"], acc["short_target"],
                         acc["masked"], acc["mask"], acc["random"], acc["kept"])  # fmt: skip


def summarize(lengths: list[int], random_next: int, short_target: int | None, masked: int, mask: int, random_: int, kept: int) -> dict:
    """The statistics of one split from its counts; ``lengths[n]`` instances have n tokens.
    (The benchmark applies the same function to the original generator's output.)"""
    instances = sum(lengths)
    tokens = sum(n * c for n, c in enumerate(lengths))
    max_len = len(lengths) - 1
    width = max(1, (max_len + 15) // 16)
    histogram = {}  # "lo-hi" tokens -> instances
    for lo in range(1, max_len + 1, width):
        hi = min(max_len, lo + width - 1)
        histogram[f"{lo}-{hi}"] = sum(lengths[lo : hi + 1])

    def share(n, d):
        return round(n / d, 6) if d else 0.0

    return {
        "instances": instances,
        "tokens": tokens,
        "mean_length": share(tokens, instances),
        "short_share": share(sum(lengths[: max_len // 2]), instances),  # under half the max length
        "full_share": share(lengths[max_len], instances),
        "short_target_share": share(short_target, instances) if short_target is not None else None,
        "nsp_random_rate": share(random_next, instances),
        "masked_tokens": masked,
        "masked_per_token": share(masked, tokens),
        "mask_share": share(mask, masked),
        "random_share": share(random_, masked),
        "kept_share": share(kept, masked),
        "length_histogram": histogram,
    }


def _write_bytes(url: str, data: bytes) -> None:
    """Write a file atomically: a temporary name beside it, then rename."""
    fs, path = fsspec.core.url_to_fs(url)
    tmp = posixpath.join(posixpath.dirname(path), "_tmp." + posixpath.basename(path))
    with fs.open(tmp, "wb") as f:
        f.write(data)
    fs.mv(tmp, path)


def _write_json(url: str, data: dict) -> None:
    _write_bytes(url, json.dumps(data, indent=2, sort_keys=True).encode("utf-8"))


def document_shards(folders: list[str]) -> list[tuple[int, str]]:
    """(input index, shard URL) for every documents shard of every input folder."""
    out = []
    for index, folder in enumerate(folders):
        shards = list_shards(folder, "documents")
        if not shards:
            raise FileNotFoundError(f"{folder} holds no documents-*.parquet: give the output folder of a wikipedia or books step")
        out.extend((index, url) for url in shards)
    return out


def build(p: beam.Pipeline, cfg: ExamplesConfig) -> None:
    """Add the job's stages to ``p``."""
    vocab = check_vocab_folder(cfg.vocab)
    icfg = cfg.instances
    shards = document_shards(cfg.documents)
    docs = (
        p
        | "Shards" >> beam.Create(shards)
        | "SpreadShards" >> beam.Reshuffle()
        | "Read" >> beam.FlatMap(_read_documents)
        | "Tokenize" >> beam.ParDo(_Tokenize(cfg.vocab, cfg.seed, cfg.eval_fraction))
    )
    counts = docs | "SplitOf" >> beam.Map(lambda e: (e[0], 1)) | "CountPerSplit" >> beam.CombinePerKey(sum)
    rows = (
        docs
        | "ToBucket" >> beam.Map(_to_bucket, beam.pvalue.AsDict(counts), cfg.seed, cfg.docs_per_bucket)
        | "GroupBuckets" >> beam.GroupByKey()
        | "MakeInstances"
        >> beam.ParDo(_MakeInstances(cfg.vocab, icfg, cfg.seed, cfg.dupe_factor)).with_outputs(*SPLITS)
    )
    stats = []
    for split in SPLITS:
        num_shards = cfg.num_shards if split == "train" else cfg.eval_shards
        rows[split] | f"Write{split}" >> WriteParquetShards(cfg.output, split, SCHEMA, num_shards, key=lambda r: r["_key"])
        stats.append(
            rows[split]
            | f"Stats{split}" >> beam.CombineGlobally(InstanceStats(icfg.max_seq_length, vocab.mask_id))
            | f"Name{split}" >> beam.Map(lambda s, split=split: (split, s))
        )
    params = {**asdict(icfg), "dupe_factor": cfg.dupe_factor, "seed": cfg.seed, "eval_fraction": cfg.eval_fraction,
              "num_shards": cfg.num_shards, "docs_per_bucket": cfg.docs_per_bucket}  # fmt: skip
    stats_url = posixpath.join(cfg.output.rstrip("/"), "stats.json")
    (
        stats
        | "AllStats" >> beam.Flatten()
        | "OneDict" >> beam.combiners.ToDict()
        | "WriteStats" >> beam.Map(lambda s: _write_json(stats_url, {**s, "params": params}))
    )


def run(cfg: ExamplesConfig, options) -> dict[str, int]:
    """Run the job with Beam ``options``; returns its counters."""
    fs, path = fsspec.core.url_to_fs(cfg.output)
    fs.makedirs(path, exist_ok=True)
    p = beam.Pipeline(options=options)
    build(p, cfg)
    result = p.run()
    result.wait_until_finish()
    copy_vocab(cfg.vocab, cfg.output)
    return metric_counters(result)


def copy_vocab(vocab_dir: str, output: str) -> None:
    """The examples folder carries the vocabulary its ids mean (the trainer needs it for
    dynamic masking and for the model folder it exports)."""
    for name in VOCAB_FILES:
        with fsspec.open(posixpath.join(vocab_dir, name), "rb") as f:
            data = f.read()
        _write_bytes(posixpath.join(output.rstrip("/"), name), data)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pipelines.examples", description=__doc__.split("\n\n")[0])
    ap.add_argument("--documents", nargs="+", required=True, help="documents folders (any fsspec URL)")
    ap.add_argument("--vocab", required=True, help="folder with vocab.txt and tokenizer.json")
    ap.add_argument("--output", required=True, help="output folder")
    ap.add_argument("--max-seq-length", type=int, default=128)
    ap.add_argument("--max-predictions-per-seq", type=int, default=20)
    ap.add_argument("--masked-lm-prob", type=float, default=0.15)
    ap.add_argument("--short-seq-prob", type=float, default=0.1)
    ap.add_argument("--do-whole-word-mask", action="store_true")
    ap.add_argument("--no-nsp", action="store_true", help="MLM only: pack full sequences, no sentence pairs")
    ap.add_argument("--masking", choices=["static", "dynamic"], default="static")
    ap.add_argument("--dupe-factor", type=int, default=10)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--eval-fraction", type=float, default=0.01)
    ap.add_argument("--num-shards", type=int, default=16)
    ap.add_argument("--docs-per-bucket", type=int, default=256)
    ap.add_argument("--workers", type=int, default=1, help="local FnApiRunner worker processes")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions(
        flags=[],  # our own arguments are not Beam's
        runner="apache_beam.runners.portability.fn_api_runner.FnApiRunner",
        direct_running_mode="multi_processing",
        direct_num_workers=args.workers,
    )
    cfg = ExamplesConfig(
        documents=args.documents,
        vocab=args.vocab,
        output=args.output,
        instances=InstanceConfig(
            max_seq_length=args.max_seq_length,
            max_predictions_per_seq=args.max_predictions_per_seq,
            masked_lm_prob=args.masked_lm_prob,
            short_seq_prob=args.short_seq_prob,
            do_whole_word_mask=args.do_whole_word_mask,
            nsp=not args.no_nsp,
            masking=args.masking,
        ),
        dupe_factor=args.dupe_factor,
        seed=args.seed,
        eval_fraction=args.eval_fraction,
        num_shards=args.num_shards,
        docs_per_bucket=args.docs_per_bucket,
    )
    counters = run(cfg, options)
    print(json.dumps(counters, indent=2))


if __name__ == "__main__":
    main()
