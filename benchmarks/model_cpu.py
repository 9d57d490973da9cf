"""CPU training throughput: our BertForPreTraining against transformers', side by side.

One training step = forward + MLM/NSP loss + backward + AdamW step, on the same batch,
the same config and the same optimizer settings for both. Batches look like real
pretraining examples: 16 x 128 tokens, ~10% of the sequences shorter (padded), 20
masked positions per sequence (fewer in the short ones), NSP labels. Both use the same
optimizer, ``trainer.optim.build_optimizer(model, "adamw")`` (torch's fused AdamW), so
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

from trainer.model import BertConfig, BertForPreTraining  # noqa: E402
from trainer.optim import build_optimizer  # noqa: E402


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
    args = parser.parse_args(argv)

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
        contenders["bertflow + torch.compile"] = (torch.compile(twin), ours_step)
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
