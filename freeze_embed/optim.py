"""Optimizers with the paper's defaults, param groups from a strategy's plan, and the LR schedule.

Appendix A: "all the default options for SGD and AdamW in pytorch except SGD momentum 0.9": SGD has no dampening
and weight decay 0; AdamW has weight decay 0.01, betas (0.9, 0.999), eps 1e-8. The LR decays from its base value to
0 with a cosine over all training steps, stepped per batch. LARS and LAMB come from ``timm.optim`` and any other
torch optimizer is named by ``class_path`` in YAML.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Optional

import torch
from torch import nn


class SGD(torch.optim.SGD):
    """``torch.optim.SGD`` with the paper's momentum 0.9 (``momentum: 0`` gives "SGD (no momentum)").

    The default LR is the middle of the paper's SGD grid [3e-5 .. 1e-2].
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.9, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                         nesterov=nesterov)


class AdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` with the paper's values; default LR is the middle of its AdamW grid [3e-7 .. 1e-4]."""

    def __init__(self, params, lr: float = 1e-5, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def param_groups(named_params: dict[str, nn.Parameter], plan: dict[str, float]) -> list[dict]:
    """One group per LR scale; each carries ``lr_scale`` (the MAE convention) for the optimizer setup to apply."""
    groups: dict[float, list] = {}
    for name, scale in plan.items():
        groups.setdefault(scale, []).append(named_params[name])
    return [{"params": ps, "lr_scale": s} for s, ps in sorted(groups.items(), key=lambda kv: -kv[0])]


def build_optimizer(factory: Callable[[Iterable], torch.optim.Optimizer], groups: list[dict]) -> torch.optim.Optimizer:
    """Instantiate ``factory`` on ``groups`` and set each group's LR to base LR x ``lr_scale``."""
    optimizer = factory(groups)
    base_lr = optimizer.defaults["lr"]
    for group in optimizer.param_groups:
        group["lr"] = base_lr * group.get("lr_scale", 1.0)
    return optimizer


def cosine_factor(step: int, total_steps: int) -> float:
    """Cosine from 1 at step 0 to 0 at ``total_steps`` (Appendix A)."""
    if total_steps <= 0:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


def lr_lambda(total_steps: int, steps_per_epoch: int, max_epochs: int,
              epoch_factor: Callable[[int, int], Optional[float]]) -> Callable[[int], float]:
    """LR multiplier for step ``step``: the strategy's per-epoch factor if it has one, else the cosine."""
    def factor(step: int) -> float:
        epoch = min(step // max(steps_per_epoch, 1), max_epochs - 1)
        own = epoch_factor(epoch, max_epochs)
        return cosine_factor(step, total_steps) if own is None else own
    return factor


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in optimizer state tensors (momentum buffers, Adam moments): what freezing and SGD save."""
    return sum(t.numel() * t.element_size() for state in optimizer.state.values()
               for t in state.values() if torch.is_tensor(t))
