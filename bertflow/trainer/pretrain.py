"""BERT pretraining (masked LM + next sentence) on Ray Train, from Parquet example shards.

    python -m bertflow.trainer.pretrain --examples runs/examples-abc --vocab runs/vocab-def \\
        --output runs/pretrain-xyz --model tiny --steps 300 --batch-size 32 --workers 2

One Ray Train ``TorchTrainer`` run (DDP: gloo on CPU, NCCL on GPU). Everything the run
writes lives in its output folder (local, s3://, gs://):

    checkpoints/step-NNNNNNN/   the last K checkpoints (``bertflow.trainer.checkpoint``): weights,
                                optimizer + schedule, state.json (step, data position, seed)
    metrics.jsonl               one JSON line per log/eval step
    tensorboard/                the same scalars for TensorBoard
    model/                      config.json, model.safetensors, vocab + tokenizer files:
                                loads with transformers.BertForPreTraining.from_pretrained

Resuming: Ray Train records each checkpoint after it is fully uploaded (its snapshot in
``checkpoints/``), so a run started again on the same output, or a worker group that Ray
restarts after a failure (``max_failures``), continues from the last whole checkpoint.
The data position (``step * batch_size`` examples into the global stream of
``bertflow.trainer.data``) and the dropout seeds (``checkpoint.seed_step``: seed, step and rank,
set every step) follow from the step alone, so a resumed run on the same workers computes
the bytes the uninterrupted run would; ``state.json`` records what it trained on.

Loss: the MLM loss is the mean over every masked token of the *global* batch and the NSP
loss the mean over its examples; each worker scales its sums by the global counts (one
small all-reduce per step), so the gradient does not depend on how the batch is split
into workers and ``grad_accum`` micro-batches.

Loader stall: the batches come from a background thread (``bertflow.trainer.data.Prefetch``, 4
steps ahead); ``stall_ms`` is the time a step waited for its batches (the mean over
workers) and ``stall_share`` that time over the steps' wall time. Near 0 when the loader
keeps up; otherwise the input pipeline, not the model, sets the speed.

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
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

from bertflow.contracts.config import add_arguments, parse
from bertflow.contracts.layout import IGNORE_INDEX, TOKENIZER_FILES, VOCAB, examples_folder, list_shards
from bertflow.contracts.storage import exists, fs_for, join
from bertflow.trainer.checkpoint import CHECKPOINTS, device_name, seed_step, trained_on
from bertflow.trainer.metrics_log import MetricsLog
from bertflow.trainer.pretrain_config import PretrainConfig, check_batch

log = logging.getLogger(__name__)

MODEL = "model"  # the exported model's folder in the output
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


@dataclass
class PretrainRun:
    """Where a run reads and writes, and on how many workers: the wiring that a workflow's
    step context (or the command line) gives beside the ``PretrainConfig``."""

    examples: str  # a folder of train-*.parquet / eval-*.parquet of one length (any fsspec URL)
    output: str  # the run's folder, which every worker sees
    vocab: str | None = None  # a folder with vocab.txt (+ tokenizer files); default: examples
    init: str | None = None  # a model folder, or a pretrain output (its model/), to start from
    workers: int = 1
    cpus_per_worker: float = 1
    gpus_per_worker: float = 0


# --------------------------------------------------------------------------- inputs


def vocab_folder(run: PretrainRun) -> str:
    """The vocab input, else the examples folder when it carries vocab.txt."""
    for folder in (run.vocab, run.examples):
        if folder and exists(join(folder, VOCAB)):
            return folder
    raise FileNotFoundError(
        f"no vocab.txt in {run.vocab or '(no vocab given)'} or {run.examples}: give the vocab step's folder (--vocab / inputs.vocab)"
    )


def init_folder(url: str) -> str:
    """A model folder: ``url`` itself, or its ``model/`` (a pretrain step's output)."""
    if exists(join(url, "config.json")):
        return url
    if exists(join(url, MODEL, "config.json")):
        return join(url, MODEL)
    raise FileNotFoundError(f"init: no config.json in {url} or {url}/model: is it a model folder or a pretrain output?")


def nsp_enabled(cfg: PretrainConfig, examples: str) -> bool:
    if cfg.nsp is not None:
        return cfg.nsp
    from bertflow.trainer.data import read_stats

    stats = read_stats(examples)  # the examples step records its params there
    for where in (stats, stats.get("params") or {}):
        if "nsp" in where:
            return bool(where["nsp"])
    return True


def eval_rows(examples: str) -> int:
    """Rows of the held-out split, from the shards' footers."""
    from bertflow.trainer.data import scan_units

    return sum(u.num_rows for u in scan_units(list_shards(examples, "eval")))


def eval_nsp_judgement(cfg: PretrainConfig, run: PretrainRun) -> bool:
    """Whether the evaluation reports an NSP accuracy: only when the held-out pairs it reads
    have both labels. Pairs that all follow (one held-out document has no random partner)
    score a model that always says "is next" perfectly, and measure nothing; warned of."""
    from bertflow.trainer.data import eval_nsp_labels

    if not nsp_enabled(cfg, run.examples) or not eval_rows(run.examples):
        return True  # no NSP loss, or no evaluation: nothing to leave out
    labels = eval_nsp_labels(list_shards(run.examples, "eval"), cfg.eval_examples)
    if len(labels) == 2:
        return True
    which = "'is next' (B follows A)" if labels == {0} else "'random next' (B from elsewhere)"
    log.warning("pretrain %s: every held-out pair in %s is %s: no eval_nsp_acc (an accuracy over one label "
                "measures nothing); eval_nsp_loss is over those pairs alone", run.output, run.examples, which)
    return False


def check_run(cfg: PretrainConfig, run: PretrainRun) -> None:
    """What can be checked before Ray starts: the batch split, the input folders."""
    if run.workers < 1:
        raise ValueError(f"workers must be >= 1, got {run.workers}")
    check_batch(cfg.batch_size, run.workers, cfg.grad_accum)
    vocab_folder(run)
    if not list_shards(run.examples, "train"):
        raise FileNotFoundError(f"no train-*.parquet in {run.examples}: is it a pretraining_data output?")
    if run.init:
        init_folder(run.init)
    elif isinstance(cfg.model, dict):
        from bertflow.trainer.model import BertConfig

        # A typo in `model: {...}` fails here once, not in every worker and every retry.
        BertConfig.from_hf({"vocab_size": 1, **cfg.model})


# --------------------------------------------------------------------------- model


def build_model(cfg: PretrainConfig, vocab_size: int, init: str | None):
    from bertflow.trainer.hf_folder import load_pretrained
    from bertflow.trainer.model import BertConfig, BertForPreTraining

    if init:
        model = load_pretrained(init_folder(init), BertForPreTraining)
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


def batch_flops(config, batch) -> float:

    lengths = batch["attention_mask"].sum(1)
    return train_flops(config, int(lengths.sum()), int(lengths.sum()) * batch["input_ids"].shape[1],
                       int((batch["masked_lm_ids"] != IGNORE_INDEX).sum()), batch["input_ids"].shape[0])


def peak_flops(device) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


# --------------------------------------------------------------------------- metrics


def metric_tag(name: str) -> str:
    """TensorBoard tag of a metric: ``eval_loss`` -> ``eval/loss``, ``loss`` -> ``train/loss``."""
    return "eval/" + name[len("eval_"):] if name.startswith("eval_") else f"train/{name}"


SUM_KEYS = ("mlm_loss_sum", "mlm_correct", "mlm_count", "nsp_loss_sum", "nsp_correct", "nsp_count",
            "sequences", "tokens", "flops", "skipped", "stall_seconds")


def new_sums() -> dict[str, float]:
    return dict.fromkeys(SUM_KEYS, 0.0)


def sums_to_metrics(s: dict[str, float], prefix: str = "") -> dict[str, float]:
    out = {
        f"{prefix}mlm_loss": s["mlm_loss_sum"] / max(1, s["mlm_count"]),
        f"{prefix}mlm_acc": s["mlm_correct"] / max(1, s["mlm_count"]),
    }
    if s["nsp_count"]:
        out[f"{prefix}nsp_loss"] = s["nsp_loss_sum"] / s["nsp_count"]
        out[f"{prefix}nsp_acc"] = s["nsp_correct"] / s["nsp_count"]
    out[f"{prefix}loss"] = out[f"{prefix}mlm_loss"] + out.get(f"{prefix}nsp_loss", 0.0)
    return out


def all_reduce_sums(values: dict[str, float], device) -> dict[str, float]:
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(values[k]) for k in SUM_KEYS], dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return dict(zip(SUM_KEYS, t.tolist()))


def accumulate(sums: dict, out, batch: dict) -> None:
    sums["mlm_loss_sum"] += float(out.mlm_loss.detach()) * int(out.mlm_count)
    sums["mlm_correct"] += int(out.mlm_correct)
    sums["mlm_count"] += int(out.mlm_count)
    sums["nsp_loss_sum"] += float(out.nsp_loss.detach()) * int(out.nsp_count)
    sums["nsp_correct"] += int(out.nsp_correct)
    sums["nsp_count"] += int(out.nsp_count)
    sums["sequences"] += batch["input_ids"].shape[0]
    sums["tokens"] += int(batch["attention_mask"].sum())


@dataclass
class Window:
    """The training sums since the last log line, and the seconds its steps took (only
    theirs: evaluations and checkpoints between them do not count)."""

    sums: dict[str, float] = field(default_factory=new_sums)
    steps: int = 0
    seconds: float = 0.0
    stall: float = 0.0  # of those seconds, the time spent waiting for the next batch
    lr: float = 0.0  # of the last step
    grad_norm: float = 0.0


# --------------------------------------------------------------------------- the worker


@dataclass
class Worker:
    """What one Ray Train worker holds for the run."""

    cfg: PretrainConfig
    run: PretrainRun
    rank: int
    world: int
    device: Any
    model: Any  # the module: its weights are checkpointed, evaluated, exported
    net: Any  # what trains: the model, compiled and/or wrapped in DDP
    optimizer: Any
    schedule: Any
    autocast: Any
    use_nsp: bool
    vocab_dir: str
    num_examples: int  # of the train split (an epoch)
    collate: Any
    batches: Any  # per step, this worker's micro-batches
    eval_set: list | None  # None: there is no held-out split
    eval_collate: Any
    eval_nsp_acc: bool  # whether the held-out pairs have both NSP labels (``eval_nsp_judgement``)
    micro: int  # sequences per micro-batch
    peak: float | None
    metrics_log: MetricsLog | None  # rank 0's
    start_step: int = 0
    resumes: list[int] = field(default_factory=list)
    trained_on: list[dict] = field(default_factory=list)  # checkpoint.trained_on; rank 0's, which saves it
    nodes: list[str] = field(default_factory=list)


def setup(cfg: PretrainConfig, run: PretrainRun, eval_nsp_acc: bool) -> Worker:
    """Model, optimizer, data and logs of this worker, resumed from Ray Train's last
    checkpoint when there is one."""
    import ray
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist

    from bertflow.trainer.data import Collator, ExampleStream, Masking, Prefetch, load_vocab, read_eval, train_batches
    from bertflow.trainer.optim import build_optimizer, build_schedule

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, int(run.cpus_per_worker)))
    use_nsp = nsp_enabled(cfg, run.examples)
    vocab_dir = vocab_folder(run)
    vocab = load_vocab(vocab_dir)

    torch.manual_seed(cfg.seed)  # the same initial weights on every worker
    model = build_model(cfg, vocab.size, run.init).to(device)
    optimizer = build_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay)
    schedule = build_schedule(optimizer, cfg.warmup_steps(), cfg.steps, cfg.schedule)
    start_step, resumes, earlier = resume(model, optimizer, schedule, rank)
    net = wrap(model, cfg, world, device)

    masking = Masking(vocab, cfg.seed, cfg.max_predictions)
    stream = ExampleStream(list_shards(run.examples, "train"), cfg.seed)
    collate = Collator(vocab, masking, salt="train", pin_memory=device.type == "cuda")
    batches = Prefetch(train_batches(stream, collate, cfg.batch_size, start_step, rank, world, cfg.grad_accum), depth=4)
    eval_set = read_eval(list_shards(run.examples, "eval"), cfg.eval_examples, rank, world) if eval_rows(run.examples) else None
    w = Worker(
        cfg, run, rank, world, device, model, net, optimizer, schedule,
        autocast=torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext(),
        use_nsp=use_nsp, vocab_dir=vocab_dir, num_examples=stream.num_examples, collate=collate, batches=batches,
        eval_set=eval_set, eval_collate=Collator(vocab, masking, salt="eval"), eval_nsp_acc=eval_nsp_acc,
        micro=cfg.batch_size // world // cfg.grad_accum, peak=peak_flops(device),
        metrics_log=MetricsLog(run.output, start_step) if rank == 0 else None,
        start_step=start_step, resumes=resumes,
        trained_on=trained_on(earlier, start_step, world, device_name(device)) if rank == 0 else [],
    )
    w.nodes = [ray.get_runtime_context().get_node_id()] * world
    if world > 1:
        dist.all_gather_object(w.nodes, w.nodes[0])
    if rank == 0:
        print(f"[pretrain] {world} workers on {device.type}, steps {start_step}..{cfg.steps}, "
              f"{stream.num_examples} train examples, {time.strftime('%H:%M:%S')}", flush=True)
    model.train()
    return w


def resume(model, optimizer, schedule, rank: int) -> tuple[int, list[int], list[dict]]:
    """(the step to start at, the steps resumed at so far, what the checkpoint was trained
    on) from Ray Train's last checkpoint."""
    import ray.train

    from bertflow.trainer.checkpoint import load, ray_checkpoint_folder

    checkpoint = ray.train.get_checkpoint()
    if not checkpoint:
        return 0, [], []
    with ray_checkpoint_folder(checkpoint, rank) as folder:
        state = load(folder, model, optimizer, schedule)
    if rank == 0:
        print(f"[pretrain] resumed from step {state['step']} ({state['examples_seen']} examples seen)", flush=True)
    return state["step"], state.get("resumed_at", []) + [state["step"]], state.get("trained_on", [])


def wrap(model, cfg: PretrainConfig, world: int, device):
    from torch.nn.parallel import DistributedDataParallel

    from bertflow.trainer.model import compile_model

    net = compile_model(model) if cfg.compile else model
    if world > 1:
        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    return net


def to_device(w: Worker, batch: dict) -> dict:
    import torch


    batch = {k: v.to(w.device, non_blocking=True) for k, v in batch.items()}
    if not w.use_nsp:
        batch["next_sentence_label"] = torch.full_like(batch["next_sentence_label"], IGNORE_INDEX)
    return batch


def forward(w: Worker, module, batch: dict):
    from bertflow.trainer.model import BertForPreTraining

    with w.autocast:
        mlm_logits, nsp_logits = module(
            batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], batch["masked_lm_positions"]
        )
    return BertForPreTraining.loss(mlm_logits, nsp_logits, batch["masked_lm_ids"], batch["next_sentence_label"])


def train_step(w: Worker, step: int, window: Window) -> None:
    """One optimizer step over this worker's micro-batches, summed into ``window``."""
    import torch
    import torch.distributed as dist

    from bertflow.trainer.optim import clip_grad_norm

    waiting = time.perf_counter()
    host_batches = next(w.batches)  # ready in the prefetch queue unless the loader falls behind
    window.stall += time.perf_counter() - waiting
    micro_batches = [to_device(w, b) for b in host_batches]
    seed_step(w.cfg.seed, step, w.rank)
    counts = torch.tensor(
        [float((b["masked_lm_ids"] != IGNORE_INDEX).sum()) for b in micro_batches]
        + [float((b["next_sentence_label"] != IGNORE_INDEX).sum()) for b in micro_batches],
        dtype=torch.float64, device=w.device,
    ).view(2, -1).sum(1)
    if w.world > 1:
        dist.all_reduce(counts)
    global_mlm, global_nsp = counts.clamp(min=1).tolist()
    for i, batch in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        with w.net.no_sync() if (w.world > 1 and not last) else nullcontext():
            out = forward(w, w.net, batch)
            # sums over the global counts, x world because DDP averages the gradients
            objective = out.mlm_loss * out.mlm_count / global_mlm + out.nsp_loss * out.nsp_count / global_nsp
            (objective * w.world).backward()
        accumulate(window.sums, out, batch)
        window.sums["flops"] += batch_flops(w.model.config, batch)
    window.grad_norm = float(clip_grad_norm(w.model.parameters(), w.cfg.max_grad_norm))
    window.lr = w.schedule.get_last_lr()[0]
    w.optimizer.step()
    w.schedule.step()
    w.optimizer.zero_grad(set_to_none=True)
    window.steps += 1


def evaluate(w: Worker) -> dict[str, float]:
    """The held-out metrics, over every worker's share."""
    import torch

    sums = new_sums()
    w.model.eval()
    with torch.no_grad():
        for i in range(0, max(len(w.eval_set), 1), w.micro):
            chunk = w.eval_set[i : i + w.micro]
            if chunk:
                batch = to_device(w, w.eval_collate(chunk))
                accumulate(sums, forward(w, w.model, batch), batch)
    w.model.train()
    metrics = sums_to_metrics(all_reduce_sums(sums, w.device), prefix="eval_")
    if not w.eval_nsp_acc:
        metrics.pop("eval_nsp_acc", None)
    return metrics


def window_metrics(w: Worker, window: Window) -> dict[str, float]:
    """The log line of a window (all workers' sums)."""
    window.sums["skipped"] = w.collate.skipped
    window.sums["stall_seconds"] = window.stall
    sums = all_reduce_sums(window.sums, w.device)
    seconds = window.seconds
    metrics = sums_to_metrics(sums)
    # stall: per step, the mean over workers of the time waiting for the loader's next batch
    stall = sums["stall_seconds"] / (w.world * window.steps)
    metrics.update(lr=window.lr, grad_norm=window.grad_norm, sequences_per_s=sums["sequences"] / seconds,
                   tokens_per_s=sums["tokens"] / seconds, skipped_examples=sums["skipped"],
                   stall_ms=1000 * stall, stall_share=stall * window.steps / seconds)
    if w.peak:
        metrics["mfu"] = sums["flops"] / (seconds * w.world * w.peak)
    return metrics


def due(cfg: PretrainConfig, done: int) -> tuple[bool, bool, bool]:
    """Whether a log line, an evaluation, a checkpoint are due after ``done`` steps (all
    three after the last)."""
    last = done == cfg.steps
    return (done % cfg.log_every == 0 or last,
            bool(cfg.eval_every and done % cfg.eval_every == 0) or last,
            done % cfg.checkpoint_every == 0 or last)


def after_step(w: Worker, done: int, window: Window) -> Window:
    """Log, evaluate and checkpoint as due, and report to Ray Train; the window to go on with."""
    import ray.train

    is_log, is_eval, is_ckpt = due(w.cfg, done)
    if not (is_log or is_eval or is_ckpt):
        return window
    metrics: dict[str, Any] = {"step": done}
    if is_log and window.steps:
        metrics.update(window_metrics(w, window))
        window = Window()
    if is_eval and w.eval_set is not None:
        metrics.update(evaluate(w))
    if w.rank == 0 and len(metrics) > 1:
        w.metrics_log.write(done, {k: v for k, v in metrics.items() if k != "step"}, tag=metric_tag)
    if is_ckpt:
        save_and_report(w, done, metrics)
    else:
        ray.train.report(metrics)
    return window


def save_and_report(w: Worker, done: int, metrics: dict) -> None:
    """Report ``metrics`` with rank 0's checkpoint after ``done`` steps (Ray Train uploads it)."""
    import ray.train

    from bertflow.trainer.checkpoint import save, step_name

    with tempfile.TemporaryDirectory(prefix="bertflow-ckpt-") as tmp:
        checkpoint = None
        if w.rank == 0:
            examples_seen = done * w.cfg.batch_size
            state = {"step": done, "examples_seen": examples_seen, "seed": w.cfg.seed, "resumed_at": w.resumes,
                     "nodes": w.nodes, "trained_on": w.trained_on, "epoch": examples_seen // w.num_examples,
                     "epoch_offset": examples_seen % w.num_examples}
            save(tmp, w.model, w.optimizer, w.schedule, state)
            w.metrics_log.sync()
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=step_name(done))


def export(w: Worker) -> None:
    """Rank 0 writes ``model/``: the weights, config.json and the vocab's files."""
    from bertflow.trainer.hf_folder import save_pretrained

    extra = {}
    fs, path = fs_for(w.vocab_dir)
    for name in TOKENIZER_FILES:
        if fs.exists(join(path, name)):
            with fs.open(join(path, name), "rb") as f:
                extra[name] = f.read()
    save_pretrained(w.model, join(w.run.output, MODEL), w.model.config, extra_files=extra)
    w.metrics_log.close()


def train_loop(config: dict) -> None:
    """The per-worker function Ray Train runs: ``{"config": PretrainConfig, "run": PretrainRun}`` as
    dicts, and ``eval_nsp_acc``: whether the evaluation reports an NSP accuracy."""
    w = setup(PretrainConfig.model_validate(config["config"]), PretrainRun(**config["run"]), config["eval_nsp_acc"])
    window = Window()
    for step in range(w.start_step, w.cfg.steps):
        started = time.perf_counter()
        train_step(w, step, window)
        window.seconds += time.perf_counter() - started
        window = after_step(w, step + 1, window)
    w.batches.close()
    if w.rank == 0:
        export(w)


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
                             ("sequences_per_s", "{:.1f} seq/s"), ("tokens_per_s", "{:.0f} tok/s"), ("mfu", "mfu {:.1%}"),
                             ("stall_ms", "stall {:.1f} ms/step")):
                if key in m:
                    parts.append(fmt.format(m[key]))
            if math.isfinite(eta):
                parts.append(f"ETA {eta / 60:.1f} min")
            if checkpoint is not None:
                parts.append(f"checkpoint {checkpoint.path.rsplit('/', 1)[-1]}")
            print("[pretrain] " + " | ".join(parts), flush=True)

    return Progress()


def pretrain(cfg: PretrainConfig, run: PretrainRun) -> dict[str, float]:
    """Run (or resume) pretraining on the connected Ray cluster; returns the final metrics."""
    from bertflow.trainer.launch import train

    check_run(cfg, run)
    if not eval_rows(run.examples):
        log.warning("pretrain %s: no held-out examples in %s (eval-*.parquet missing or empty): no eval metrics",
                    run.output, run.examples)
    eval_nsp_acc = eval_nsp_judgement(cfg, run)
    started = time.time()
    result = train(
        train_loop, {"config": cfg.model_dump(), "run": asdict(run), "eval_nsp_acc": eval_nsp_acc},
        output=run.output, name=CHECKPOINTS,
        workers=run.workers, cpus_per_worker=run.cpus_per_worker, gpus_per_worker=run.gpus_per_worker,
        max_failures=cfg.max_failures, keep_checkpoints=cfg.keep_checkpoints, callbacks=[_progress_callback(cfg.steps)],
    )
    log.info("pretrain: fit took %.1f s", time.time() - started)
    return {k: float(v) for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}


def command_line(argv=None) -> tuple[PretrainConfig, PretrainRun, argparse.Namespace]:
    """The settings, the wiring and the Ray flags of ``python -m bertflow.trainer.pretrain``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    wiring = p.add_argument_group("where and on what")
    wiring.add_argument("--examples", required=True, help="an examples step's folder (any fsspec URL)")
    wiring.add_argument("--output", required=True, help="the run's folder, seen by every worker (local, s3://, gs://)")
    wiring.add_argument("--vocab", help="a folder with vocab.txt (default: the examples folder)")
    wiring.add_argument("--workers", type=int, default=1, help="Ray Train workers (default: 1)")
    wiring.add_argument("--cpus-per-worker", type=float, default=1, help="default: 1")
    wiring.add_argument("--gpus-per-worker", type=float, default=0, help="default: 0")
    wiring.add_argument("--ray-address", help="an existing Ray cluster (auto, ray://host:10001); default: a local Ray")
    wiring.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: workers x cpus-per-worker)")
    add_arguments(p, PretrainConfig)
    args = p.parse_args(argv)
    cfg = parse(PretrainConfig, args, p)
    run = PretrainRun(examples=examples_folder(args.examples, cfg.max_seq_length), output=args.output, vocab=args.vocab,
                      init=cfg.init, workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                      gpus_per_worker=args.gpus_per_worker)
    return cfg, run, args


def main(argv=None) -> None:
    cfg, run, args = command_line(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_run(cfg, run)  # before Ray starts
    from bertflow.trainer.launch import connect_ray

    connect_ray(args.ray_address, args.num_cpus or math.ceil(run.workers * run.cpus_per_worker),
                math.ceil(run.workers * run.gpus_per_worker))
    print(json.dumps(pretrain(cfg, run), indent=2, sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
