"""LAMB, the parameter groups, the schedule and clipping."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bertflow.trainer.model import BertConfig, BertForPreTraining
from bertflow.trainer.optim import LAMB, build_optimizer, build_schedule, clip_grad_norm, schedule_factor


def test_lamb_first_step_by_hand():
    # w = [3, 4] (norm 5), g = [1, -2]. After one step the bias-corrected Adam direction
    # is g / (|g| + eps) = [1, -1] (eps tiny); with decay 0.1 the step u = [1.3, -0.6],
    # trust ratio 5 / |u|, and w moves by lr * trust * u.
    w = nn.Parameter(torch.tensor([3.0, 4.0]))
    w.grad = torch.tensor([1.0, -2.0])
    opt = LAMB([w], lr=0.1, betas=(0.9, 0.999), eps=1e-12, weight_decay=0.1)
    opt.step()
    u = torch.tensor([1.0, -1.0]) + 0.1 * torch.tensor([3.0, 4.0])
    trust = 5.0 / u.norm()
    expected = torch.tensor([3.0, 4.0]) - 0.1 * trust * u
    assert torch.allclose(w.detach(), expected, atol=1e-6)
    # the step's length is lr * ||w||, whatever the gradient's scale: the point of LAMB
    assert math.isclose((w.detach() - torch.tensor([3.0, 4.0])).norm().item(), 0.1 * 5.0, rel_tol=1e-5)


def test_lamb_is_scale_invariant_in_the_gradient():
    ws = []
    for scale in (1.0, 1000.0):
        torch.manual_seed(0)
        w = nn.Parameter(torch.randn(8, 8))
        opt = LAMB([w], lr=0.01, weight_decay=0.01)
        for _ in range(3):
            w.grad = scale * torch.sin(torch.arange(64.0)).view(8, 8)
            opt.step()
        ws.append(w.detach().clone())
    assert torch.allclose(ws[0], ws[1], atol=1e-5)


def test_lamb_without_decay_is_adam_unless_asked():
    for adapt in (False, True):
        w = nn.Parameter(torch.tensor([3.0, 4.0]))
        w.grad = torch.tensor([1.0, -2.0])
        LAMB([w], lr=0.1, eps=1e-12, weight_decay=0.0, adapt_no_decay=adapt).step()
        step = torch.tensor([3.0, 4.0]) - w.detach()
        if adapt:  # trust ratio 5 / sqrt(2) on the Adam direction [1, -1]
            assert torch.allclose(step, 0.1 * 5 / math.sqrt(2) * torch.tensor([1.0, -1.0]), atol=1e-6)
        else:  # plain Adam's first step: lr * sign(g)
            assert torch.allclose(step, torch.tensor([0.1, -0.1]), atol=1e-6)


def test_lamb_zero_weight_uses_trust_one():
    w = nn.Parameter(torch.zeros(3))
    w.grad = torch.tensor([1.0, 1.0, 1.0])
    LAMB([w], lr=0.5, eps=1e-12, weight_decay=0.01).step()
    assert torch.allclose(w.detach(), torch.full((3,), -0.5), atol=1e-6)


def test_lamb_weight_decay_shrinks_weights_with_zero_gradient():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = LAMB([w], lr=0.1, weight_decay=0.1)
    for _ in range(5):
        w.grad = torch.zeros(2)
        opt.step()
    # with no gradient the step is pure decay, scaled to lr * ||w||: w shrinks by 10% a step
    assert torch.allclose(w.detach(), torch.tensor([3.0, 4.0]) * 0.9**5, atol=1e-5)


def test_adamw_decays_as_expected():
    w = nn.Parameter(torch.tensor([2.0]))
    opt = torch.optim.AdamW([w], lr=0.1, weight_decay=0.5)
    w.grad = torch.zeros(1)
    opt.step()
    assert torch.allclose(w.detach(), torch.tensor([2.0 * (1 - 0.1 * 0.5)]))


def test_no_decay_groups_are_exactly_layernorm_weights_and_biases():
    model = BertForPreTraining(BertConfig.from_name("tiny", vocab_size=100))
    for name in ("adamw", "lamb"):
        opt = build_optimizer(model, name, lr=1e-3, weight_decay=0.01)
        decay, no_decay = opt.param_groups
        assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
        names = {id(p): n for n, p in model.named_parameters()}  # tied ones appear once
        no_decay_names = {names[id(p)] for p in no_decay["params"]}
        decay_names = {names[id(p)] for p in decay["params"]}
        expected = {n for n in names.values() if n.endswith("bias") or "LayerNorm" in n}
        assert no_decay_names == expected
        assert decay_names == set(names.values()) - expected
        assert "bert.embeddings.word_embeddings.weight" in decay_names
        assert "cls.predictions.bias" in no_decay_names
        assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        build_optimizer(model, "sgd")


def test_schedule_values_at_key_steps():
    peak = 1e-3
    for kind, power in (("linear", 1.0), ("poly", 2.0)):
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=peak)
        sched = build_schedule(opt, warmup_steps=10, total_steps=110, kind=kind, power=power)
        lrs = []
        for _ in range(120):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert lrs[0] == pytest.approx(peak / 10)  # the first step already moves
        assert lrs[4] == pytest.approx(peak * 5 / 10)
        assert lrs[9] == pytest.approx(peak)  # the end of warmup is the peak
        assert lrs[10] == pytest.approx(peak)
        assert lrs[60] == pytest.approx(peak * 0.5**power)  # halfway through the decay
        assert lrs[109] == pytest.approx(peak * (1 / 100) ** power)
        assert lrs[110] == 0 and lrs[119] == 0
        assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert schedule_factor(0, 0, 10) == 1.0  # no warmup: the peak from the start
    with pytest.raises(ValueError, match="warmup_steps <= total_steps"):
        build_schedule(opt, warmup_steps=20, total_steps=10)


def test_schedule_resumes_from_its_state_dict():
    def make():
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        return opt, build_schedule(opt, 5, 50)

    opt, sched = make()
    for _ in range(17):
        opt.step()
        sched.step()
    opt2, sched2 = make()  # a checkpoint restores both: the current lr lives in the optimizer
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == pytest.approx(1 - 12 / 45)
    for o, s in ((opt, sched), (opt2, sched2)):
        o.step()
        s.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == pytest.approx(1 - 13 / 45)


def test_clip_grad_norm_returns_the_norm_before_clipping():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(1))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])
    assert clip_grad_norm([a, b], None).item() == pytest.approx(5.0)
    assert clip_grad_norm([a, b], 1.0).item() == pytest.approx(5.0)
    assert torch.cat([a.grad, b.grad]).norm().item() == pytest.approx(1.0, rel=1e-4)


def test_lamb_trains_a_tiny_bert():
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig.from_name("tiny", vocab_size=50, hidden_dropout_prob=0.0,
                                                    attention_probs_dropout_prob=0.0))
    opt = build_optimizer(model, "lamb", lr=1e-2, weight_decay=0.01)
    ids = torch.randint(1, 50, (8, 12))
    positions = torch.tensor([[1, 3, 5]] * 8)
    labels = torch.gather(ids, 1, positions)
    losses = []
    for _ in range(30):
        mlm, nsp = model(ids, masked_lm_positions=positions)
        out = model.loss(mlm, nsp, labels, torch.zeros(8, dtype=torch.long))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.3 * losses[0]
