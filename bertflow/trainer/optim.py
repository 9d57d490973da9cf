"""Optimizers and learning-rate schedules for BERT pretraining.

- ``LAMB`` (You et al. 2019, "Large Batch Optimization for Deep Learning"), in the form
  of NVIDIA's BERT recipe: Adam moments with bias correction, weight decay added to the
  Adam step (decoupled from the gradient and the moments), then each tensor's step is
  scaled by the trust ratio ||w|| / ||step||. As in NVIDIA's FusedLAMB (``use_nvlamb=False``)
  and the reference TF code, tensors without weight decay (biases, LayerNorm) take the
  plain Adam step: layer adaptation on a bias or a LayerNorm gain is not what the paper
  meant and slows them down; ``adapt_no_decay=True`` applies it everywhere.
- ``build_optimizer``: AdamW or LAMB with two parameter groups; weight decay is off for
  every bias and every LayerNorm weight (BERT's ``exclude_from_weight_decay``).
- ``build_schedule``: linear warmup, then linear or polynomial decay to zero.
- ``clip_grad_norm``: the global gradient norm, clipped; returns the norm before clipping
  (the metric the trainer logs).

    python -m bertflow.trainer.optim --warmup 100 --steps 1000 --kind poly --power 0.5   # prints the schedule
"""

from __future__ import annotations

import argparse
import math
from typing import Iterable

import torch
from torch import nn


class LAMB(torch.optim.Optimizer):
    """Layer-wise Adaptive Moments for Batch training.

    Per tensor ``w`` with gradient ``g`` at step ``t``::

        m = b1 m + (1 - b1) g            v = b2 v + (1 - b2) g^2
        u = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + weight_decay * w
        r = ||w|| / ||u||  (1 when either norm is 0; not applied when weight_decay == 0
                            unless adapt_no_decay)
        w = w - lr * r * u
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.01, adapt_no_decay: bool = False,
                 max_trust_ratio: float | None = None):
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        adapt_no_decay=adapt_no_decay, max_trust_ratio=max_trust_ratio)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._update_group(group, params)
        return loss

    def _update_group(self, group: dict, params: list[torch.Tensor]) -> None:
        # the whole group at once with torch's multi-tensor (_foreach) ops: a few kernels
        # per group instead of a dozen per tensor, which is what costs on a GPU
        beta1, beta2 = group["betas"]
        for p in params:
            if p.grad.is_sparse:
                raise RuntimeError("LAMB does not support sparse gradients")
            if p.dtype != torch.float32:
                raise TypeError(f"LAMB keeps fp32 weights; got a {p.dtype} parameter "
                                "(train in fp32 under torch.autocast for bf16 speed)")
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
        grads = [p.grad for p in params]
        m = [self.state[p]["exp_avg"] for p in params]
        v = [self.state[p]["exp_avg_sq"] for p in params]
        steps = [self.state[p]["step"] for p in params]

        torch._foreach_lerp_(m, grads, 1 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
        # update = m_hat / (sqrt(v_hat) + eps) + weight_decay * w
        denom = torch._foreach_div(v, [1 - beta2**t for t in steps])
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, group["eps"])
        update = torch._foreach_div(m, [1 - beta1**t for t in steps])
        torch._foreach_div_(update, denom)
        del denom
        if group["weight_decay"] != 0:
            torch._foreach_add_(update, params, alpha=group["weight_decay"])

        if group["weight_decay"] != 0 or group["adapt_no_decay"]:
            w_norm = torch.stack(torch._foreach_norm(params))
            u_norm = torch.stack(torch._foreach_norm(update))
            # trust ratio ||w|| / ||u||, 1 where either is 0; stays on the device (no sync)
            trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm,
                                torch.ones_like(w_norm))
            if group["max_trust_ratio"] is not None:
                trust = trust.clamp(max=group["max_trust_ratio"])
            torch._foreach_mul_(update, list(trust.unbind()))
        torch._foreach_add_(params, update, alpha=-group["lr"])


def is_no_decay(module: nn.Module, param_name: str) -> bool:
    """Biases and LayerNorm weights take no weight decay."""
    return param_name.endswith("bias") or isinstance(module, nn.LayerNorm)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: the weight matrices and embeddings (decayed), and the biases and
    LayerNorm weights (not decayed). A tied parameter appears once."""
    decay, no_decay, seen = [], [], set()
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if is_no_decay(module, name) else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, name: str = "adamw", lr: float = 1e-4,
                    weight_decay: float = 0.01, betas: tuple[float, float] = (0.9, 0.999),
                    eps: float = 1e-6) -> torch.optim.Optimizer:
    """AdamW or LAMB over ``model``'s parameters, weight decay off for biases and LayerNorm.
    Build it after moving the model to its device: AdamW uses torch's fused kernel (one
    pass over each tensor, not one per op) where the
    parameters' device and dtype allow it."""
    groups = param_groups(model, weight_decay)
    if name == "adamw":
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point()
                    for p in model.parameters())
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                 fused=fused or None)
    if name == "lamb":
        return LAMB(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; use 'adamw' or 'lamb'")


def schedule_factor(step: int, warmup_steps: int, total_steps: int, kind: str = "linear",
                    power: float = 1.0) -> float:
    """The multiplier of the peak learning rate for the ``step``-th optimizer step (0-based):
    (step + 1) / warmup_steps during warmup (so the first step already moves), then
    (1 - progress) ** power with progress going from 0 at the end of warmup to 1 at
    ``total_steps``; 0 from then on. ``linear`` is ``poly`` with power 1."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "linear":
        power = 1.0
    elif kind != "poly":
        raise ValueError(f"unknown schedule {kind!r}; use 'linear' or 'poly'")
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return (1.0 - progress) ** power


def build_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                   kind: str = "linear", power: float = 1.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup then linear or polynomial decay; call ``scheduler.step()`` after every
    ``optimizer.step()``. A checkpoint saves and restores both state dicts (the current
    learning rate lives in the optimizer's)."""
    if warmup_steps < 0 or total_steps < 1 or warmup_steps > total_steps:
        raise ValueError(f"need 0 <= warmup_steps <= total_steps and total_steps >= 1, got "
                         f"warmup_steps={warmup_steps}, total_steps={total_steps}")
    if kind not in ("linear", "poly"):
        raise ValueError(f"unknown schedule {kind!r}; use 'linear' or 'poly'")
    if power <= 0:
        raise ValueError(f"power must be > 0, got {power}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: schedule_factor(step, warmup_steps, total_steps, kind, power))


def clip_grad_norm(parameters: Iterable[torch.Tensor], max_norm: float | None) -> torch.Tensor:
    """Clip the global L2 norm of the gradients to ``max_norm`` (no clipping when None or
    <= 0) and return the norm before clipping, as a tensor (``.item()`` it when logging)."""
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return torch.zeros(())
    if max_norm is None or max_norm <= 0:
        return torch.nn.utils.get_total_norm([p.grad for p in params])
    return torch.nn.utils.clip_grad_norm_(params, max_norm)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print the learning-rate schedule.")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--kind", choices=["linear", "poly"], default="linear")
    parser.add_argument("--power", type=float, default=1.0)
    parser.add_argument("--every", type=int, default=0, help="print every N steps (default: ~20 lines)")
    args = parser.parse_args(argv)
    every = args.every or max(1, math.ceil(args.steps / 20))
    for step in list(range(0, args.steps, every)) + [args.steps - 1]:
        f = schedule_factor(step, args.warmup, args.steps, args.kind, args.power)
        print(f"step {step:>8}  lr {args.lr * f:.3e}")


if __name__ == "__main__":
    main()
