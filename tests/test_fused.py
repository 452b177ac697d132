"""Fused/foreach optimizer kernels: chosen on CUDA only, and the same step as the for-loop.

CPU has fused SGD/AdamW kernels too, so moving ``FAST_DEVICES`` to the CPU runs the very choice CUDA gets here.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from freeze_embed import optim
from freeze_embed.in_backward import InBackward
from freeze_embed.optim import SGD, AdamW, build_optimizer, choose_kernel


class _NoFused(torch.optim.RAdam):
    pass


@pytest.mark.parametrize("cls, devices, floating, kernel", [
    (torch.optim.SGD, {"cuda"}, True, "fused"),
    (SGD, {"cuda"}, True, "fused"),
    (AdamW, {"cuda"}, True, "fused"),
    (torch.optim.Adam, {"cuda"}, True, "fused"),
    (_NoFused, {"cuda"}, True, "foreach"),
    (SGD, {"cuda"}, False, "foreach"),
    (SGD, {"cpu"}, True, None),
    (AdamW, {"cpu"}, True, None),
    (SGD, {"cuda", "cpu"}, True, None),
    (SGD, set(), True, None),
])
def test_the_chooser_picks_fused_on_cuda_and_nothing_on_cpu(cls, devices, floating, kernel):
    assert choose_kernel(cls, devices, floating) == kernel


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(5, 3, generator=g)), nn.Parameter(torch.randn(3, generator=g))]


def _run(factory, steps=3):
    params = _params()
    opt = build_optimizer(factory, [{"params": params, "lr_scale": 1.0}])
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    return params, opt


FACTORIES = {
    "sgd": lambda g, **kw: SGD(g, lr=0.1, **kw),
    "sgd_nesterov_wd": lambda g, **kw: torch.optim.SGD(g, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01, **kw),
    "adamw": lambda g, **kw: AdamW(g, lr=0.01, **kw),
    "radam": lambda g, **kw: _NoFused(g, lr=0.01, **kw),  # no fused kernel: foreach
}


@pytest.mark.parametrize("name", FACTORIES)
def test_the_chosen_kernel_steps_as_the_for_loop(monkeypatch, name):
    reference, _ = _run(lambda g: FACTORIES[name](g, foreach=False))  # explicit: the for-loop, left alone
    monkeypatch.setattr(optim, "FAST_DEVICES", ("cpu",))
    fast, opt = _run(FACTORIES[name])
    group = opt.param_groups[0]
    assert (group.get("fused"), group["foreach"]) == ((None, True) if name == "radam" else (True, None))
    for a, b in zip(fast, reference):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_default_on_cpu_is_torchs_own():
    _, opt = _run(FACTORIES["adamw"])
    assert (opt.param_groups[0]["fused"], opt.param_groups[0]["foreach"]) == (None, None)


def test_an_explicit_choice_stands(monkeypatch):
    monkeypatch.setattr(optim, "FAST_DEVICES", ("cpu",))
    _, opt = _run(lambda g: FACTORIES["sgd"](g, foreach=False))
    assert (opt.param_groups[0]["fused"], opt.param_groups[0]["foreach"]) == (None, False)


def test_a_resumed_adamw_state_moves_its_step_count_for_fused(monkeypatch):
    """A checkpoint written by the for-loop (step on the host) resumes under fused (step on the device)."""
    _, before = _run(FACTORIES["adamw"], steps=2)
    monkeypatch.setattr(optim, "FAST_DEVICES", ("cpu",))
    params, opt = _run(FACTORIES["adamw"], steps=0)
    opt.load_state_dict(before.state_dict())
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    assert opt.param_groups[0]["fused"] and all(opt.state[p]["step"].item() == 3 for p in params)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_in_backward_steps_each_parameter_fused_as_the_standard_step(monkeypatch, name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    named = dict(model.named_parameters())
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    reference = {n: p.detach().clone() for n, p in named.items()}
    standard = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    standard.load_state_dict(model.state_dict())
    opt = FACTORIES[name](standard.parameters(), foreach=False)
    monkeypatch.setattr(optim, "FAST_DEVICES", ("cpu",))
    in_backward = InBackward(named, {n: 1.0 for n in named}, FACTORIES[name])
    for _ in range(3):
        nn.functional.cross_entropy(model(x), y).backward()
        opt.zero_grad()
        nn.functional.cross_entropy(standard(x), y).backward()
        opt.step()
    assert all(o.param_groups[0]["fused"] for o in in_backward.per_param.values())
    for (n, p), q in zip(named.items(), standard.parameters()):
        assert not torch.equal(p, reference[n])
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
