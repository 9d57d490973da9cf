"""One fine-tuning trial: a task at one setting, trained through Ray Train.

``run_trial`` launches a ``TorchTrainer`` (DDP over gloo on CPU, NCCL on GPU) whose
workers each run ``train_loop``:

1. load the tokenizer and the encoder from the ``init`` folder, put the task's head on it;
2. train for ``epochs`` with AdamW and a linear schedule (warmup ``warmup_ratio`` of the
   steps); each epoch's batches are a permutation seeded by (seed, epoch), split across
   the workers (each weighing its loss by its share of the batch; one with none of a
   last, small batch steps at weight 0), so the global batch, the step count and the
   logged loss do not depend on the worker count; dropout draws from (seed, step, rank)
   (``checkpoint.seed_step``), so each worker draws its own masks and a resumed trial
   those of the straight one;
3. every ``log_every_steps`` steps rank 0 logs the train loss and learning rate to
   ``metrics.jsonl`` and ``tensorboard/`` in the trial folder; after each epoch it
   evaluates on dev (after the last epoch only when ``eval_every_epoch`` is off), logs
   the epoch's scalars there too, and writes a checkpoint (``bertflow.trainer.checkpoint``'s
   ``checkpoints/step-N/``, the last one kept): a trial that dies resumes from its last
   finished epoch;
4. at the end rank 0 scores dev (the last epoch's evaluation, not a second pass), the
   other dev sets when there are several (MNLI's mismatched: ``dev_sets`` in the result,
   ``predictions/dev-<name>.*``) and test, writes ``predictions/``, the fine-tuned
   model in ``model/`` (a folder transformers loads, with the tokenizer files),
   ``metrics.json``, and last ``result.json``: a trial folder with it is done, and is not
   run again.

    python -m bertflow.trainer.finetune.trial --init MODEL_DIR --output OUT --task '{"name": "sst", "type": "classification", "train": "train.csv", "dev": "dev.csv"}'
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from typing import Any

import torch

from bertflow.contracts.storage import exists, join, local_folder, read_json, remove_tree, write_bytes_atomic, write_json

from .config import FinetuneConfig, TrialConfig

log = logging.getLogger(__name__)

RESULT = "result.json"


# --------------------------------------------------------------------------- files


def load_tokenizer(folder: str):
    from transformers import BertTokenizerFast

    if not (os.path.exists(os.path.join(folder, "tokenizer.json")) or os.path.exists(os.path.join(folder, "vocab.txt"))):
        raise FileNotFoundError(f"{folder}: no tokenizer.json or vocab.txt to tokenize with")
    return BertTokenizerFast.from_pretrained(folder)


def tokenizer_files(tokenizer) -> dict[str, bytes]:
    """The files that make a model folder self-contained for transformers: tokenizer.json,
    tokenizer_config.json, and vocab.txt (what BERT's own tools read)."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        out = {name: open(os.path.join(tmp, name), "rb").read() for name in sorted(os.listdir(tmp))}
    if "vocab.txt" not in out:
        vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
        out["vocab.txt"] = ("\n".join(token for token, _ in vocab) + "\n").encode()
    return out


# --------------------------------------------------------------------------- training


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The global batches of an epoch: a permutation of ``n`` examples seeded by (seed,
    epoch), cut into ``batch_size`` pieces (the last may be smaller). Worker ``rank`` of
    ``world`` trains on ``batch[rank::world]`` of each."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=g).tolist()
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


class Timer:
    """Seconds spent per phase (load, train, eval, checkpoint, save), for ``result.json``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def add(self, phase: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - since
        return now


def batch_share(weight: float, device) -> float:
    """This worker's ``weight`` over the sum of every worker's."""
    total = torch.tensor(float(weight), device=device)
    torch.distributed.all_reduce(total)
    return weight / max(float(total.item()), 1.0)


def worker_mean(value: torch.Tensor, world: int) -> torch.Tensor:
    """The mean of ``value`` over the workers (their weighted losses average to the whole
    batch's loss)."""
    if world == 1:
        return value
    total = value.clone()
    torch.distributed.all_reduce(total)
    return total / world


def evaluate(task, model, split, device):
    with torch.inference_mode():
        return task.evaluate(model, split, device)


def skips(name: str, split) -> dict[str, Any]:
    """What a scored split left out, for ``result.json``: the records scored and skipped
    (rows, questions, token lines: never distinct values), and the skipped by reason."""
    return {f"{name}_scored": len(split.examples), f"{name}_skipped": split.skipped, f"{name}_skipped_why": split.why}


def train_loop(config: dict) -> None:
    """The Ray Train worker function of one trial (also runs without Ray, world size 1)."""
    trial = TrialConfig.model_validate(config)
    cfg = trial.task
    try:
        import ray.train
        import ray.train.torch
        ctx = ray.train.get_context()
        rank, world = ctx.get_world_rank(), ctx.get_world_size()
        device = ray.train.torch.get_device()
    except Exception:  # not under Ray Train
        ray = None
        rank, world, device = 0, 1, torch.device("cpu")
    # as many intra-op threads as the worker has CPUs (Ray would otherwise leave 1)
    torch.set_num_threads(max(1, int(trial.cpus_per_worker)))
    torch.manual_seed(cfg.seed)  # the new head's initial weights: the seed's, the same on every worker

    from bertflow.trainer.hf_folder import load_config, load_pretrained
    from bertflow.trainer.optim import build_optimizer, build_schedule, clip_grad_norm

    from bertflow.trainer.checkpoint import CHECKPOINTS, device_name, load_latest, save_to, seed_step, trained_on
    from bertflow.trainer.metrics_log import MetricsLog

    from .heads import HeadConfig

    timer, t = Timer(), time.perf_counter()
    with local_folder(trial.init) as init_dir:  # the tokenizer reads local files
        tokenizer = load_tokenizer(init_dir)
        Task = cfg.implementation
        labels = Task.read_labels(cfg)
        head_config = HeadConfig.for_labels(load_config(init_dir), labels, classifier_dropout=cfg.classifier_dropout)
        model = load_pretrained(init_dir, Task.head(), config=head_config)
    task = Task(cfg, tokenizer, labels)
    train = task.load(cfg.train, train=True)
    dev_sets = cfg.dev_sets()  # the first scores each epoch and picks the best setting
    dev = task.load(next(iter(dev_sets.values())), train=False) if rank == 0 else None
    t = timer.add("load", t)
    log.info("trial %s/%s: %d train features, labels %s (%.1fs to load)", cfg.name, trial.trial_id,
             len(train.features), labels if len(labels) < 30 else len(labels), timer.seconds["load"])

    model.to(device)
    optimizer = build_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay)
    steps_per_epoch = len(epoch_batches(len(train.features), cfg.batch_size, cfg.seed, 0))
    total_steps = steps_per_epoch * cfg.epochs
    schedule = build_schedule(optimizer, int(cfg.warmup_ratio * total_steps), total_steps, "linear")

    start_epoch, history = 0, []
    checkpoints = join(trial.output, CHECKPOINTS)
    state = load_latest(checkpoints, model, optimizer, schedule) or {}
    if state:
        start_epoch, history = state["epoch"], state["history"]
        log.info("trial %s/%s: resumed after epoch %d", cfg.name, trial.trial_id, start_epoch)
    step = start_epoch * steps_per_epoch
    runs = trained_on(state.get("trained_on"), step, world, device_name(device)) if rank == 0 else []
    metrics_log = MetricsLog(trial.output, step) if rank == 0 else None

    if world > 1:
        from torch.nn.parallel import DistributedDataParallel
        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        trained = model

    last_dev = history[-1].get("dev") if history else None
    dev_files: dict[str, bytes] | None = None  # the last epoch's dev predictions, reused at the end
    for epoch in range(start_epoch, cfg.epochs):
        trained.train()
        t0, seen = time.perf_counter(), 0
        # losses stay on the device and are summed there: no host sync per step, only per log line
        epoch_loss = torch.zeros((), device=device)
        window_loss, window_steps = torch.zeros((), device=device), 0
        for whole in epoch_batches(len(train.features), cfg.batch_size, cfg.seed, epoch):
            indices = whole[rank::world]
            # A worker with no example in a (last, small) batch still joins DDP's gradient
            # all-reduce: it steps on one of the batch's examples, at weight 0.
            batch = task.collate([train.features[i] for i in indices or whole[:1]])
            seed_step(cfg.seed, step, rank)
            loss = task.loss(trained, batch, device)
            if world > 1:
                # DDP averages the workers' gradients: weighed by its share of what the
                # batch's mean loss is over, each worker's mean makes that average the batch's.
                loss = loss * (world * batch_share(task.loss_weight(batch) if indices else 0, device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_grad_norm(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            lr = optimizer.param_groups[0]["lr"]  # the rate this step used
            schedule.step()
            step += 1
            seen += len(whole)
            detached = loss.detach()
            epoch_loss += detached
            window_loss += detached
            window_steps += 1
            if step % cfg.log_every_steps == 0:  # every worker is here: the all-reduce needs them all
                window = worker_mean(window_loss, world).item() / window_steps
                if metrics_log is not None:
                    metrics_log.write(step, {"train/loss": window, "train/lr": lr},
                                      epoch=round(step / steps_per_epoch, 4))
                window_loss.zero_()
                window_steps = 0
        train_loss = worker_mean(epoch_loss, world).item() / max(1, steps_per_epoch)
        t = timer.add("train", t)
        metrics = {"epoch": epoch + 1, "train_loss": train_loss,
                   "examples_per_s": seen / (time.perf_counter() - t0)}
        dev_metrics: dict[str, float] = {}
        if rank == 0:
            last_epoch = epoch + 1 == cfg.epochs
            if cfg.eval_every_epoch or last_epoch:
                model.eval()
                dev_metrics, files = evaluate(task, model, dev, device)
                dev_files = files if last_epoch else None
                last_dev = dev_metrics
                t = timer.add("eval", t)
            history.append({**metrics, **({"dev": dev_metrics} if dev_metrics else {})})
            scalars = {"train/epoch_loss": train_loss, "train/examples_per_s": metrics["examples_per_s"],
                       **{f"dev/{k}": v for k, v in dev_metrics.items() if isinstance(v, (int, float))}}
            metrics_log.write(step, scalars, epoch=epoch + 1)
            save_to(checkpoints, model, optimizer, schedule,
                    {"step": step, "epoch": epoch + 1, "history": history, "trained_on": runs}, keep=1)
            metrics_log.sync()
            t = timer.add("checkpoint", t)
            log.info("trial %s/%s epoch %d: loss %.4f, dev %s", cfg.name, trial.trial_id, epoch + 1,
                     train_loss, {k: round(v, 4) for k, v in dev_metrics.items() if "/" not in k})
        if ray is not None:
            ray.train.report({**metrics, **{f"dev_{k}": v for k, v in dev_metrics.items()}})

    if rank != 0:
        return
    model.eval()
    # read last: a bad file costs no training
    other_devs = {name: task.load(url, train=False) for name, url in list(dev_sets.items())[1:]}
    test = task.load(cfg.test, train=False) if cfg.test else None
    result: dict[str, Any] = {"task": cfg.name, "type": cfg.type, "setting": trial.setting,
                              "setting_id": trial.setting_id, "trial_id": trial.trial_id, "seed": cfg.seed,
                              "metric": cfg.main_metric, "history": history, "trained_on": runs}
    several = len(dev_sets) > 1
    splits = [(name, f"dev-{name}" if several else "dev", split)
              for name, split in zip(dev_sets, [dev, *other_devs.values()])] + [("test", "test", test)]
    for split_name, file_name, split in splits:
        if split is None:
            continue
        if split is dev and dev_files is not None:  # the last epoch's evaluation is this one
            split_metrics, files = last_dev, dev_files
        else:
            split_metrics, files = evaluate(task, model, split, device)
        if split_name == "test":
            result["test"] = split_metrics
            result.update(skips("test", split))
        else:
            if split is dev:
                result["dev"] = split_metrics
                result.update(skips("dev", split))
            if several:
                result.setdefault("dev_sets", {})[split_name] = split_metrics
        for suffix, data in files.items():
            name = f"{file_name}.{suffix}" if "." not in suffix else f"{file_name}_{suffix}"
            write_bytes_atomic(join(trial.output, "predictions", name), data)
    t = timer.add("eval", t)
    result["train_examples"] = len(train.features)
    result["train_skipped"], result["train_skipped_why"] = train.skipped, train.why

    from bertflow.trainer.hf_folder import save_pretrained
    save_pretrained(model, join(trial.output, "model"), model.config, extra_files=tokenizer_files(tokenizer))
    timer.add("save", t)
    result["phase_seconds"] = {k: round(v, 2) for k, v in timer.seconds.items()}
    metrics_log.close()
    write_json(join(trial.output, "metrics.json"),
               {k: result[k] for k in ("dev", "dev_sets", "test", "history") if k in result})
    write_json(join(trial.output, RESULT), result)
    # done: the resume point (the optimizer's state is twice the model's) is no longer needed
    remove_tree(checkpoints)


# --------------------------------------------------------------------------- launching


def run_trial(trial: TrialConfig) -> dict[str, Any]:
    """Run one trial through Ray Train (Ray must be connected) unless its folder already
    has ``result.json``; returns the result. Raises when training fails."""
    done = join(trial.output, RESULT)
    if exists(done):
        return {**read_json(done), "reused": True}

    from bertflow.trainer.launch import train

    remove_tree(join(trial.output, "error.txt"))  # an earlier attempt's: this one says how it ends
    # train's labels are the first thing a worker reads: a bad train file fails the trial
    # here, before a worker group starts
    trial.task.implementation.read_labels(trial.task)
    # output=None: Ray Train's own run folder is scratch, removed with the run; the trial
    # writes its checkpoints and results itself.
    train(train_loop, trial.model_dump(), output=None, name=f"finetune-{trial.task.name}-{trial.trial_id}",
          workers=trial.workers, cpus_per_worker=trial.cpus_per_worker, gpus_per_worker=trial.gpus_per_worker)
    if not exists(join(trial.output, RESULT)):
        raise RuntimeError(f"trial {trial.task.name}/{trial.trial_id} ended without writing {RESULT}")
    return read_json(join(trial.output, RESULT))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fine-tune one task at one setting through Ray Train.")
    parser.add_argument("--init", required=True, help="transformers model folder to start from (any fsspec URL)")
    parser.add_argument("--output", required=True, help="the trial's output folder (any fsspec URL)")
    parser.add_argument("--task", required=True, help="the task's settings as JSON (see bertflow.trainer.finetune.tasks)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cpus-per-worker", type=float, default=1)
    parser.add_argument("--gpus-per-worker", type=float, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from bertflow.trainer.launch import connect_ray

    (task,) = FinetuneConfig(tasks=[json.loads(args.task)]).resolved(os.path.abspath)
    trial = TrialConfig(task=task, init=args.init, output=args.output, workers=args.workers,
                        cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker)
    connect_ray(num_cpus=max(1, args.workers * args.cpus_per_worker))
    print(json.dumps({k: v for k, v in run_trial(trial).items() if k != "history"}, indent=2))


if __name__ == "__main__":
    main()
