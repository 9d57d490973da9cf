"""BERT pretraining (masked LM + next sentence) on Ray Train, from Parquet example shards.

    python -m trainer.pretrain --examples runs/examples-abc --vocab runs/vocab-def \\
        --output runs/pretrain-xyz --model tiny --steps 300 --batch-size 32 --workers 2

One Ray Train ``TorchTrainer`` run (DDP: gloo on CPU, NCCL on GPU). Everything the run
writes lives in its output folder (local, s3://, gs://):

    checkpoints/step-NNNNNNN/   model.safetensors, optimizer.pt (optimizer + schedule),
                                state.json (step, data position, seed); the last K kept
    metrics.jsonl               one JSON line per log/eval step
    tensorboard/                the same scalars for TensorBoard
    model/                      config.json, model.safetensors, vocab + tokenizer files:
                                loads with transformers.BertForPreTraining.from_pretrained

Resuming: Ray Train records each checkpoint after it is fully uploaded (its snapshot in
``checkpoints/``), so a run started again on the same output, or a worker group that Ray
restarts after a failure (``max_failures``), continues from the last whole checkpoint.
The data position (``step * batch_size`` examples into the global stream of
``trainer.data``) and the dropout seeds (a hash of seed, step and rank, set every step)
follow from the step alone, so a resumed run computes what the uninterrupted run would.

Loss: the MLM loss is the mean over every masked token of the *global* batch and the NSP
loss the mean over its examples; each worker scales its sums by the global counts (one
small all-reduce per step), so the gradient does not depend on how the batch is split
into workers and ``grad_accum`` micro-batches.

MFU (GPU only): model FLOPs per optimizer step / (seconds x workers x peak bf16 FLOP/s).
Training FLOPs = 3 x forward FLOPs (backward is twice the forward), with the forward per
sequence of T real tokens and M masked tokens counted as 2 FLOPs per multiply-add:
``2*T*P_layers + 4*T*T_pad*H*L`` (linear layers of the encoder, then QK^T and AV over the
padded length) ``+ 2*M*(H*H + H*V)`` (the MLM head at the masked positions only)
``+ 2*(H*H + 2*H)`` (pooler and NSP head). Embedding lookups are not FLOPs.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import posixpath
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import fsspec

from trainer.checkpoint import CHECKPOINTS
from trainer.metrics_log import MetricsLog

log = logging.getLogger(__name__)

VOCAB_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


@dataclass
class PretrainConfig:
    """One pretraining run; the ``pretrain`` step kind's params map onto it one to one."""

    examples: str  # folder with train-*.parquet / eval-*.parquet (any fsspec URL)
    output: str  # the run's folder (any fsspec URL shared by all workers)
    vocab: str | None = None  # folder with vocab.txt (+ tokenizer files); default: examples
    init: str | None = None  # a model folder to start from (phase 2 from phase 1's model/)
    model: str | dict = "tiny"  # a size name (tiny..large) or a full transformers-style config
    steps: int = 1000  # optimizer steps
    batch_size: int = 32  # global: sequences per optimizer step over all workers
    lr: float = 1e-4
    optimizer: str = "adamw"  # adamw | lamb
    warmup: float = 0.01  # warmup steps; below 1, a fraction of ``steps``
    weight_decay: float = 0.01
    grad_accum: int = 1  # micro-batches per optimizer step on each worker
    max_grad_norm: float = 1.0  # <= 0: no clipping
    schedule: str = "linear"  # linear | poly decay after warmup
    seed: int = 0
    nsp: bool | None = None  # train the next-sentence head; None: from stats.json, else on
    max_predictions: int = 20  # dynamic masking: at most this many masked tokens per sequence
    eval_every: int = 0  # held-out eval every N steps (0: only at the end)
    eval_examples: int = 2048
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    max_failures: int = 0  # worker-group restarts Ray Train may do (from the last checkpoint)
    compile: bool = False  # torch.compile the model
    workers: int = 1
    cpus_per_worker: float = 1
    gpus_per_worker: float = 0
    crash_at: list[int] = field(default_factory=list)  # fault drill: a worker exits hard after these steps, once each

    def warmup_steps(self) -> int:
        return int(round(self.warmup * self.steps)) if self.warmup < 1 else int(self.warmup)

    def check(self) -> None:
        from trainer.data import check_batch

        for name in ("steps", "batch_size", "grad_accum", "workers", "log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.optimizer not in ("adamw", "lamb"):
            raise ValueError(f"optimizer must be adamw or lamb, got {self.optimizer!r}")
        if self.schedule not in ("linear", "poly"):
            raise ValueError(f"schedule must be linear or poly, got {self.schedule!r}")
        if self.warmup_steps() > self.steps:
            raise ValueError(f"warmup ({self.warmup_steps()} steps) is longer than steps ({self.steps})")
        check_batch(self.batch_size, self.workers, self.grad_accum)


# --------------------------------------------------------------------------- storage


def _fs(url: str):
    return fsspec.core.url_to_fs(url)


def join(url: str, *parts: str) -> str:
    return posixpath.join(url.rstrip("/"), *parts)


def vocab_folder(cfg: PretrainConfig) -> str:
    """The vocab input, else the examples folder when it carries vocab.txt."""
    for folder in (cfg.vocab, cfg.examples):
        if folder:
            fs, path = _fs(folder)
            if fs.exists(posixpath.join(path, "vocab.txt")):
                return folder
    raise FileNotFoundError(
        f"no vocab.txt in {cfg.vocab or '(no vocab given)'} or {cfg.examples}: give the vocab step's folder (--vocab / inputs.vocab)"
    )


def init_folder(url: str) -> str:
    """A model folder: ``url`` itself, or its ``model/`` (a pretrain step's output)."""
    fs, path = _fs(url)
    if fs.exists(posixpath.join(path, "config.json")):
        return url
    if fs.exists(posixpath.join(path, "model", "config.json")):
        return join(url, "model")
    raise FileNotFoundError(f"init: no config.json in {url} or {url}/model: is it a model folder or a pretrain output?")


def nsp_enabled(cfg: PretrainConfig) -> bool:
    if cfg.nsp is not None:
        return cfg.nsp
    from trainer.data import read_stats

    stats = read_stats(cfg.examples)  # pipelines.examples records its params there
    for where in (stats, stats.get("params") or {}):
        if "nsp" in where:
            return bool(where["nsp"])
    return True


# --------------------------------------------------------------------------- model


def build_model(cfg: PretrainConfig, vocab_size: int):
    from trainer.model import BertConfig, BertForPreTraining, load_pretrained

    if cfg.init:
        model = load_pretrained(init_folder(cfg.init), BertForPreTraining)
        if model.config.vocab_size != vocab_size:
            raise ValueError(f"init model has vocab_size {model.config.vocab_size}, the vocab has {vocab_size} tokens")
        return model
    if isinstance(cfg.model, dict):
        config = BertConfig.from_hf({"vocab_size": vocab_size, **cfg.model})
    else:
        config = BertConfig.from_name(cfg.model, vocab_size)
    if config.vocab_size != vocab_size:
        raise ValueError(f"model.vocab_size {config.vocab_size} differs from the vocab's {vocab_size} tokens")
    return BertForPreTraining(config)


def train_flops(config, tokens: int, padded_tokens_sq: int, masked: int, sequences: int) -> float:
    """Model FLOPs of one training pass (forward + backward) over a batch; see the module doc."""
    h, i, L, v = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    per_layer_params = 4 * h * h + 2 * h * i
    forward = 2 * tokens * per_layer_params * L + 4 * padded_tokens_sq * h * L
    forward += 2 * masked * (h * h + h * v) + sequences * 2 * (h * h + 2 * h)
    return 3.0 * forward


def peak_flops(device) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


# --------------------------------------------------------------------------- metrics log


def metric_tag(name: str) -> str:
    """TensorBoard tag of a metric: ``eval_loss`` -> ``eval/loss``, ``loss`` -> ``train/loss``."""
    return "eval/" + name[len("eval_"):] if name.startswith("eval_") else f"train/{name}"


# --------------------------------------------------------------------------- checkpoints


# --------------------------------------------------------------------------- the loop


def _sums_to_metrics(s: dict[str, float], prefix: str = "") -> dict[str, float]:
    out = {
        f"{prefix}mlm_loss": s["mlm_loss_sum"] / max(1, s["mlm_count"]),
        f"{prefix}mlm_acc": s["mlm_correct"] / max(1, s["mlm_count"]),
    }
    if s["nsp_count"]:
        out[f"{prefix}nsp_loss"] = s["nsp_loss_sum"] / s["nsp_count"]
        out[f"{prefix}nsp_acc"] = s["nsp_correct"] / s["nsp_count"]
    out[f"{prefix}loss"] = out[f"{prefix}mlm_loss"] + out.get(f"{prefix}nsp_loss", 0.0)
    return out


SUM_KEYS = ("mlm_loss_sum", "mlm_correct", "mlm_count", "nsp_loss_sum", "nsp_correct", "nsp_count",
            "sequences", "tokens", "flops", "skipped")


def _all_reduce(values: dict[str, float], device) -> dict[str, float]:
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(values[k]) for k in SUM_KEYS], dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return dict(zip(SUM_KEYS, t.tolist()))


def _accumulate(sums: dict, out, batch: dict) -> None:
    sums["mlm_loss_sum"] += float(out.mlm_loss.detach()) * int(out.mlm_count)
    sums["mlm_correct"] += int(out.mlm_correct)
    sums["mlm_count"] += int(out.mlm_count)
    sums["nsp_loss_sum"] += float(out.nsp_loss.detach()) * int(out.nsp_count)
    sums["nsp_correct"] += int(out.nsp_correct)
    sums["nsp_count"] += int(out.nsp_count)
    sums["sequences"] += batch["input_ids"].shape[0]
    sums["tokens"] += int(batch["attention_mask"].sum())


def train_loop(config: dict) -> None:
    """The per-worker function Ray Train runs."""
    import ray
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from trainer.checkpoint import load as load_checkpoint
    from trainer.checkpoint import ray_checkpoint_folder, step_name
    from trainer.checkpoint import save as save_checkpoint
    from trainer.data import IGNORE, Collator, ExampleStream, Masking, Prefetch, Vocab, list_split, read_eval, stable_seed, train_batches
    from trainer.model import BertForPreTraining, save_pretrained
    from trainer.optim import build_optimizer, build_schedule, clip_grad_norm

    cfg = PretrainConfig(**config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    use_nsp = nsp_enabled(cfg)
    vocab_dir = vocab_folder(cfg)
    vocab = Vocab.load(vocab_dir)

    torch.manual_seed(cfg.seed)  # the same initial weights on every worker
    model = build_model(cfg, vocab.size).to(device)
    optimizer = build_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay)
    schedule = build_schedule(optimizer, cfg.warmup_steps(), cfg.steps, cfg.schedule)

    start_step, resumes = 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with ray_checkpoint_folder(checkpoint, rank) as folder:
            state = load_checkpoint(folder, model, optimizer, schedule)
        start_step = state["step"]
        resumes = state.get("resumed_at", []) + [start_step]
        if rank == 0:
            print(f"[pretrain] resumed from step {start_step} ({state['examples_seen']} examples seen)", flush=True)

    net = model
    if cfg.compile:
        net = torch.compile(net)
    if world > 1:
        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    masking = Masking(vocab, cfg.seed, cfg.max_predictions)
    stream = ExampleStream(list_split(cfg.examples, "train"), cfg.seed)
    collate = Collator(vocab, masking, salt="train")
    batches = Prefetch(train_batches(stream, collate, cfg.batch_size, start_step, rank, world, cfg.grad_accum), depth=4)
    eval_urls = list_split(cfg.examples, "eval")
    eval_set = read_eval(eval_urls, cfg.eval_examples, rank, world) if eval_urls else []
    eval_collate = Collator(vocab, masking, salt="eval")
    micro = cfg.batch_size // world // cfg.grad_accum
    peak = peak_flops(device)
    metrics_log = MetricsLog(cfg.output, start_step) if rank == 0 else None

    def to_device(batch):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        if not use_nsp:
            batch["next_sentence_label"] = torch.full_like(batch["next_sentence_label"], IGNORE)
        return batch

    def forward(module, batch):
        with autocast:
            mlm_logits, nsp_logits = module(
                batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], batch["masked_lm_positions"]
            )
        return BertForPreTraining.loss(mlm_logits, nsp_logits, batch["masked_lm_ids"], batch["next_sentence_label"])

    def evaluate() -> dict[str, float]:
        sums = dict.fromkeys(SUM_KEYS, 0.0)
        model.eval()
        with torch.no_grad():
            for i in range(0, max(len(eval_set), 1), micro):
                chunk = eval_set[i : i + micro]
                if chunk:
                    batch = to_device(eval_collate(chunk))
                    _accumulate(sums, forward(model, batch), batch)
        model.train()
        return _sums_to_metrics(_all_reduce(sums, device), prefix="eval_")

    def flops_of(batch) -> float:
        lengths = batch["attention_mask"].sum(1)
        return train_flops(model.config, int(lengths.sum()), int(lengths.sum()) * batch["input_ids"].shape[1],
                           int((batch["masked_lm_ids"] != IGNORE).sum()), batch["input_ids"].shape[0])

    nodes = [ray.get_runtime_context().get_node_id()] * world
    if world > 1:
        dist.all_gather_object(nodes, nodes[0])
    if rank == 0:
        print(f"[pretrain] {world} workers on {device.type}, steps {start_step}..{cfg.steps}, "
              f"{stream.num_examples} train examples, {time.strftime('%H:%M:%S')}", flush=True)
    model.train()
    window = dict.fromkeys(SUM_KEYS, 0.0)
    window_start, window_steps, grad_norm = time.perf_counter(), 0, 0.0
    for step in range(start_step, cfg.steps):
        micro_batches = [to_device(b) for b in next(batches)]
        # dropout draws from a seed of (seed, step, rank): a resumed run draws the same
        torch.manual_seed(stable_seed(cfg.seed, "dropout", step, rank) % (2**63))
        counts = torch.tensor(
            [float((b["masked_lm_ids"] != IGNORE).sum()) for b in micro_batches]
            + [float((b["next_sentence_label"] != IGNORE).sum()) for b in micro_batches],
            dtype=torch.float64, device=device,
        ).view(2, -1).sum(1)
        if world > 1:
            dist.all_reduce(counts)
        global_mlm, global_nsp = counts.clamp(min=1).tolist()
        for i, batch in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            with net.no_sync() if (world > 1 and not last) else nullcontext():
                out = forward(net, batch)
                # sums over the global counts, x world because DDP averages the gradients
                objective = out.mlm_loss * out.mlm_count / global_mlm + out.nsp_loss * out.nsp_count / global_nsp
                (objective * world).backward()
            _accumulate(window, out, batch)
            window["flops"] += flops_of(batch)
        grad_norm = float(clip_grad_norm(model.parameters(), cfg.max_grad_norm))
        lr = schedule.get_last_lr()[0]
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        window_steps += 1
        done = step + 1

        is_log = done % cfg.log_every == 0 or done == cfg.steps
        is_eval = (cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.steps
        is_ckpt = done % cfg.checkpoint_every == 0 or done == cfg.steps
        if not (is_log or is_eval or is_ckpt):
            continue
        metrics: dict[str, Any] = {"step": done}
        if is_log and window_steps:
            window["skipped"] = collate.skipped
            sums = _all_reduce(window, device)
            seconds = time.perf_counter() - window_start
            metrics.update(_sums_to_metrics(sums))
            metrics.update(lr=lr, grad_norm=grad_norm, sequences_per_s=sums["sequences"] / seconds,
                           tokens_per_s=sums["tokens"] / seconds, skipped_examples=sums["skipped"])
            if peak:
                metrics["mfu"] = sums["flops"] / (seconds * world * peak)
            window = dict.fromkeys(SUM_KEYS, 0.0)
            window_steps = 0
        if is_eval and eval_set is not None and eval_urls:
            metrics.update(evaluate())
        if rank == 0 and len(metrics) > 1:
            metrics_log.write(done, {k: v for k, v in metrics.items() if k != "step"}, tag=metric_tag)
        if is_ckpt:
            with tempfile.TemporaryDirectory(prefix="bertflow-ckpt-") as tmp:
                ckpt = None
                if rank == 0:
                    state = {"step": done, "examples_seen": done * cfg.batch_size, "seed": cfg.seed, "resumed_at": resumes, "nodes": nodes,
                             "epoch": done * cfg.batch_size // stream.num_examples,
                             "epoch_offset": done * cfg.batch_size % stream.num_examples,
                             "rng": "dropout: torch.manual_seed(hash(seed, 'dropout', step, rank)) every step"}
                    save_checkpoint(tmp, model, optimizer, schedule, state)
                    metrics_log.sync()
                    ckpt = ray.train.Checkpoint.from_directory(tmp)
                ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=step_name(done))
        else:
            ray.train.report(metrics)
        if done in cfg.crash_at:
            _fault_drill(cfg, rank, world, done)
        window_start = time.perf_counter()

    batches.close()
    if rank == 0:
        extra = {}
        fs, path = _fs(vocab_dir)
        for name in VOCAB_FILES:
            if fs.exists(posixpath.join(path, name)):
                with fs.open(posixpath.join(path, name), "rb") as f:
                    extra[name] = f.read()
        save_pretrained(model, join(cfg.output, "model"), model.config, extra_files=extra)
        metrics_log.close()


def _fault_drill(cfg: PretrainConfig, rank: int, world: int, step: int) -> None:
    """Kill a worker for real (``os._exit``, no exception, no cleanup) once per output folder,
    after Ray Train has had the time to record the checkpoint just reported (its controller
    polls workers every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``, 2 s by default)."""
    marker = join(cfg.output, f"_fault_drill_{step}")
    fs, path = _fs(marker)
    if rank != min(1, world - 1) or fs.exists(path):
        return
    fs.pipe(path, b"%d\n" % step)
    time.sleep(2 * float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", 2)) + 1)
    print(f"[pretrain] fault drill: worker {rank} exits hard after step {step}", flush=True)
    os._exit(1)


# --------------------------------------------------------------------------- the driver


def _progress_callback(total_steps: int):
    from ray.train import UserCallback

    class Progress(UserCallback):
        """A progress line in the driver's log (the controller's prints reach the driver)."""

        def __init__(self):
            self.started, self.first_step = None, None

        def after_report(self, run_context, metrics, checkpoint):
            m = metrics[0] if metrics else {}
            step = m.get("step")
            if step is None:
                return
            now = time.time()
            if self.started is None:
                self.started, self.first_step = now, step
            rate = (step - self.first_step) / (now - self.started) if now > self.started else 0.0
            eta = (total_steps - step) / rate if rate > 0 else float("nan")
            parts = [f"step {step}/{total_steps}"]
            for key, fmt in (("loss", "loss {:.3f}"), ("mlm_acc", "mlm_acc {:.3f}"), ("eval_mlm_acc", "eval_mlm_acc {:.3f}"),
                             ("sequences_per_s", "{:.1f} seq/s"), ("tokens_per_s", "{:.0f} tok/s"), ("mfu", "mfu {:.1%}")):
                if key in m:
                    parts.append(fmt.format(m[key]))
            if math.isfinite(eta):
                parts.append(f"ETA {eta / 60:.1f} min")
            if checkpoint is not None:
                parts.append(f"checkpoint {checkpoint.path.rsplit('/', 1)[-1]}")
            print("[pretrain] " + " | ".join(parts), flush=True)

    return Progress()


def pretrain(cfg: PretrainConfig) -> dict[str, float]:
    """Run (or resume) pretraining on the connected Ray cluster; returns the final metrics."""
    from trainer.data import list_split
    from trainer.launch import torch_trainer

    cfg.check()
    vocab_folder(cfg)  # fail here, not in every worker
    if not list_split(cfg.examples, "train"):
        raise FileNotFoundError(f"no train-*.parquet in {cfg.examples}: is it a pretraining_data output?")
    if cfg.init:
        init_folder(cfg.init)
    trainer = torch_trainer(
        train_loop, asdict(cfg), output=cfg.output, name=CHECKPOINTS, workers=cfg.workers,
        cpus_per_worker=cfg.cpus_per_worker, gpus_per_worker=cfg.gpus_per_worker,
        max_failures=cfg.max_failures, keep_checkpoints=cfg.keep_checkpoints,
        callbacks=[_progress_callback(cfg.steps)],
    )
    started = time.time()
    result = trainer.fit()
    log.info("pretrain: fit took %.1f s", time.time() - started)
    final = {k: float(v) for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
    return final


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--ray-address", help="an existing Ray cluster (auto, ray://host:10001); default: a local Ray")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: workers x cpus-per-worker)")
    for f in fields(PretrainConfig):
        if f.name in ("examples", "output"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.name == "model":
            p.add_argument(flag, default=f.default, help="size name (tiny..large) or a JSON config")
        elif f.name in ("compile",):
            p.add_argument(flag, action="store_true")
        elif f.name == "nsp":
            p.add_argument(flag, choices=["on", "off", "auto"], default="auto")
        elif f.name in ("vocab", "init"):
            p.add_argument(flag)
        elif f.name == "crash_at":
            p.add_argument(flag, type=int, nargs="*", default=[], help=argparse.SUPPRESS)
        else:
            p.add_argument(flag, type=type(f.default), default=f.default)
    args = vars(p.parse_args(argv))
    address, num_cpus = args.pop("ray_address"), args.pop("num_cpus")
    args["nsp"] = {"on": True, "off": False, "auto": None}[args["nsp"]]
    if isinstance(args["model"], str) and args["model"].lstrip().startswith("{"):
        args["model"] = json.loads(args["model"])
    cfg = PretrainConfig(**args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from trainer.launch import connect_ray

    connect_ray(address, num_cpus or math.ceil(cfg.workers * cfg.cpus_per_worker),
                math.ceil(cfg.workers * cfg.gpus_per_worker))
    final = pretrain(cfg)
    print(json.dumps(final, indent=2, sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
