"""GPU training throughput and model FLOPs utilization: our BertForPreTraining against
transformers' (SDPA), BERT-Base at 128 tokens, bf16 autocast, one GPU, in the same run.

A training step = forward + MLM/NSP loss + backward + fused AdamW step, on batches that
look like real pretraining examples (~10% short, padded sequences; up to 20 masked
positions per sequence; NSP). Both models get the same weights, batches and optimizer.
They run in alternating blocks of steps after a warm-up, timed with CUDA events.

Model FLOPs (what MFU counts, the same for both models; matmuls only, 2 FLOPs per
multiply-add; embeddings lookups, LayerNorm, GELU, softmax and dropout not counted):

    per sequence, forward:
        encoder   L * (24 * T * H^2          # Q, K, V, output projection (4 H^2) and the
                                             #   feed-forward (2 * H * 4H) on every real token
                       + 4 * T * S * H)      # Q K^T and attention x V, real queries over
                                             #   the padded length
        MLM head  P * (2 * H^2 + 2 * H * V)  # transform + decoder at the P masked positions
        NSP       2 * H^2 + 4 * H            # pooler + classifier on [CLS]
    per step:  3 * forward * batch            # backward = 2 x forward

with L layers, hidden H, intermediate 4H, padded sequence length S (128), T the average
number of real (non-padding) tokens, vocab V, and P the average number of masked
positions actually present: the formula of ``bertflow/trainer/pretrain.py``'s MFU metric. Padding
is not credited. MFU = model FLOPs per second /
peak (989 TFLOP/s dense bf16 on an H100 SXM; --peak-tflops for another GPU). It is the
useful work: transformers also computes the MLM decoder at every position, work the
formula does not credit, and our model skips the last layer's rows that no head reads
(it still computes that layer's keys and values), work that the formula does credit as
a standard BERT would have to do it. Hardware FLOPs per model are printed alongside.

    python benchmarks/model_gpu.py                       # base, batch 256 x 128, bf16
    python benchmarks/model_gpu.py --compile             # also both compiled (ours keeps its unpadding)
    python benchmarks/model_gpu.py --device cpu --size tiny --batch-size 4 --steps 2   # smoke test
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_cpu import make_batch, ours_step, theirs_step  # noqa: E402

from bertflow.trainer.model import BertConfig, BertForPreTraining, compile_model  # noqa: E402
from bertflow.trainer.optim import build_optimizer  # noqa: E402


def model_flops_per_sequence(c: BertConfig, seq_len: int, masked: float,
                             tokens: float | None = None) -> float:
    """Forward + backward model FLOPs of one sequence (the formula in the docstring);
    ``tokens``: real tokens per sequence (default: all ``seq_len``)."""
    h, s, v = c.hidden_size, seq_len, c.vocab_size
    t = s if tokens is None else tokens
    encoder = c.num_hidden_layers * (24 * t * h * h + 4 * t * s * h)
    mlm = masked * (2 * h * h + 2 * h * v)
    nsp = 2 * h * h + 4 * h
    return 3 * (encoder + mlm + nsp)


def hardware_flops_per_sequence(c: BertConfig, seq_len: int, masked: float, ours: bool) -> float:
    """What each implementation actually multiplies (same counting rules; both compute
    on the padding too)."""
    h, s, v = c.hidden_size, seq_len, c.vocab_size
    full = model_flops_per_sequence(c, seq_len, masked)
    if not ours:  # transform + decoder at every position instead of the masked ones
        return full + 3 * (s - masked) * (2 * h * h + 2 * h * v)
    # the last layer computes K, V (4 S H^2) for all rows, the rest only for masked + [CLS]
    rows = masked + 1
    skipped = (s - rows) * (20 * h * h) + 4 * (s - rows) * s * h
    return full - 3 * skipped


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="base")
    parser.add_argument("--vocab-size", type=int, default=30522)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--masked", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30, help="timed steps of each model")
    parser.add_argument("--block", type=int, default=5, help="steps per model before switching")
    parser.add_argument("--compile", action="store_true", help="also time both models under torch.compile")
    parser.add_argument("--compile-backend", default="inductor", help="aot_eager: a quick CPU check of the path")
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="dense bf16 peak of the GPU (H100 SXM: 989)")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)

    import transformers

    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("no CUDA device; run with --device cpu for a smoke test")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    config = BertConfig.from_name(args.size, args.vocab_size)
    ours = BertForPreTraining(config).to(device).train()
    hf_config = transformers.BertConfig(**config.to_hf(), attn_implementation="sdpa")
    theirs = transformers.BertForPreTraining(hf_config).to(device).train()
    theirs.load_state_dict(ours.state_dict())

    contenders = {"bertflow": (ours, ours_step), "transformers (sdpa)": (theirs, theirs_step)}
    if args.compile:
        twin = BertForPreTraining(config).to(device).train()
        twin.load_state_dict(ours.state_dict())
        contenders["bertflow + torch.compile"] = (compile_model(twin, backend=args.compile_backend), ours_step)
        their_twin = transformers.BertForPreTraining(hf_config).to(device).train()
        their_twin.load_state_dict(ours.state_dict())
        contenders["transformers (sdpa) + torch.compile"] = (torch.compile(their_twin, backend=args.compile_backend), theirs_step)
    opts = {name: build_optimizer(m, "adamw", lr=1e-4, weight_decay=0.01)
            for name, (m, _) in contenders.items()}
    batches = [{k: t.to(device) for k, t in
                make_batch(args.batch_size, args.seq_len, args.vocab_size, args.masked, s).items()}
               for s in range(4)]
    masked = statistics.mean(float((b["labels"] != -100).sum()) / args.batch_size for b in batches)
    real_tokens = statistics.mean(float(b["mask"].sum()) / args.batch_size for b in batches)

    def timed_block(name, first_step, n):
        model, step = contenders[name]
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        for i in range(n):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                step(model, opts[name], batches[(first_step + i) % len(batches)])
        if device.type == "cuda":
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1000 / n
        return (time.perf_counter() - t0) / n

    for name in contenders:  # warm-up: kernels chosen, compile done, allocator settled
        timed_block(name, 0, args.warmup)
    per_step = {name: [] for name in contenders}
    done = 0
    while done < args.steps:
        n = min(args.block, args.steps - done)
        for name in contenders:
            per_step[name].append(timed_block(name, done, n))
        done += n
        print(f"{done}/{args.steps} steps: " + ", ".join(
            f"{k} {v[-1] * 1000:.1f} ms" for k, v in per_step.items()), file=sys.stderr)

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    mflops = model_flops_per_sequence(config, args.seq_len, masked, real_tokens)
    print(f"\nBertForPreTraining {args.size} ({config.num_hidden_layers} layers, hidden "
          f"{config.hidden_size}, vocab {config.vocab_size}), batch {args.batch_size} x "
          f"{args.seq_len}, {real_tokens:.1f} real tokens and {masked:.1f} masked positions per sequence on average, NSP, bf16 "
          f"autocast, fused AdamW for both, {gpu}, torch {torch.__version__}, transformers "
          f"{transformers.__version__}; model FLOPs/sequence (fwd+bwd) {mflops / 1e9:.2f} G; "
          f"peak {args.peak_tflops:g} TFLOP/s\n")
    print("| model | step (ms) | sequences/s | tokens/s | MFU | hardware FLOPs/sequence | speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = statistics.median(per_step["transformers (sdpa)"])
    for name, t in per_step.items():
        med = statistics.median(t)
        seqs = args.batch_size / med
        mfu = seqs * mflops / (args.peak_tflops * 1e12)
        hflops = hardware_flops_per_sequence(config, args.seq_len, masked,
                                             ours=not name.startswith("transformers"))
        print(f"| {name} | {med * 1000:.1f} | {seqs:,.0f} | {seqs * args.seq_len:,.0f} | "
              f"{mfu:.1%} | {hflops / 1e9:.2f} G | {base / med:.2f}x |")


if __name__ == "__main__":
    main()
