"""Optimizers with the paper's defaults, param groups from a strategy's plan, and the LR schedule.

Appendix A: "all the default options for SGD and AdamW in pytorch except SGD momentum 0.9": SGD has no dampening
and weight decay 0; AdamW has weight decay 0.01, betas (0.9, 0.999), eps 1e-8. The LR decays from its base value to
0 with a cosine over all training steps, stepped per batch. LARS and LAMB come from ``torch_optimizer`` (as the
authors ran them) or ``timm.optim`` (``configs/method/``), and any other torch optimizer is named by ``class_path``.
Every optimizer steps with the fastest kernel PyTorch has for where its parameters are (:func:`choose_kernel`).
"""
from __future__ import annotations

import math
from typing import Callable, Collection, Iterable, NamedTuple, Optional, Sequence

import torch
from torch import nn

from freeze_embed.anatomy import Anatomy
from freeze_embed.errors import FreezeEmbedError

NO_WEIGHT_DECAY = ("norms_and_biases", "tokens")


class SGD(torch.optim.SGD):
    """``torch.optim.SGD`` with the paper's momentum 0.9 (``momentum: 0`` gives "SGD (no momentum)").

    The default LR is the middle of the paper's SGD grid [3e-5 .. 1e-2]. ``foreach``/``fused`` left None: the
    fastest kernel where the parameters are (:func:`use_fast_kernels`); set either to choose yourself.
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.9, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, foreach: Optional[bool] = None,
                 fused: Optional[bool] = None):
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                         nesterov=nesterov, foreach=foreach, fused=fused)


class AdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` with the paper's values; default LR is the middle of its AdamW grid [3e-7 .. 1e-4]."""

    def __init__(self, params, lr: float = 1e-5, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, foreach: Optional[bool] = None, fused: Optional[bool] = None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=foreach, fused=fused)


class NoWeightDecayError(FreezeEmbedError, ValueError):
    """A ``model.no_weight_decay`` entry that names no kind of parameter."""


def no_weight_decay_names(named_params: dict[str, nn.Parameter], anatomy: Anatomy, kinds: Sequence[str]) -> frozenset:
    """Names of the parameters weight decay skips. ``norms_and_biases``: every tensor of at most one dimension
    (biases, norm scales and shifts; also layer-scale gammas and CLIP's 1-D class embedding), MAE's ``p.ndim == 1``
    in ``util/lr_decay.py`` and timm's ``param_groups_weight_decay``; ``tokens``: the class, register and position
    tokens (``anatomy.tokens``), MAE's ``no_weight_decay_list`` (timm's ``VisionTransformer.no_weight_decay()``)."""
    unknown = [k for k in kinds if k not in NO_WEIGHT_DECAY]
    if unknown:
        raise NoWeightDecayError(f"model.no_weight_decay {unknown} names no kind of parameter; choose from "
                                 f"{', '.join(NO_WEIGHT_DECAY)}.")
    names = set()
    if "norms_and_biases" in kinds:
        names |= {n for n, p in named_params.items() if p.ndim <= 1}
    if "tokens" in kinds:
        names |= set(anatomy.tokens)
    return frozenset(names)


class Group(NamedTuple):
    """One optimizer group: its multiplier of the base LR, its parameter names, and whether weight decay skips it."""
    lr_scale: float
    names: list[str]
    no_weight_decay: bool = False


def group_names(plan: dict[str, float], epoch_factor: Optional[float] = None, per_tensor: bool = False,
                no_weight_decay: Collection[str] = frozenset()) -> list[Group]:
    """One group per LR scale, largest first, split in two where ``no_weight_decay`` (names) exempts some: the one
    grouping the optimizer gets and ``parts`` shows. With ``epoch_factor`` (a strategy's per-epoch LR factor), each
    scale is multiplied by it: the multiplier of the base LR those parameters really get in that epoch.
    ``per_tensor``: one group per tensor (strategies that rescale tensors each epoch,
    :mod:`freeze_embed.epoch_rescale`)."""
    factor = 1.0 if epoch_factor is None else epoch_factor
    if per_tensor:
        return [Group(s * factor, [n], n in no_weight_decay) for n, s in plan.items()]
    groups: dict[tuple[float, bool], list[str]] = {}
    for name, scale in plan.items():
        groups.setdefault((scale, name in no_weight_decay), []).append(name)
    ordered = sorted(groups.items(), key=lambda kv: (-kv[0][0], kv[0][1]))  # decayed before exempt
    return [Group(s * factor, names, exempt) for (s, exempt), names in ordered]


def param_groups(named_params: dict[str, nn.Parameter], plan: dict[str, float], per_tensor: bool = False,
                 no_weight_decay: Collection[str] = frozenset()) -> list[dict]:
    """Optimizer groups of :func:`group_names`; each carries ``lr_scale`` (the MAE convention) and its names, and an
    exempt group ``weight_decay: 0`` (the others take the optimizer's)."""
    return [{"params": [named_params[n] for n in g.names], "lr_scale": g.lr_scale, "names": g.names,
             **({"weight_decay": 0.0} if g.no_weight_decay else {})}
            for g in group_names(plan, per_tensor=per_tensor, no_weight_decay=no_weight_decay)]


def build_optimizer(factory: Callable[[Iterable], torch.optim.Optimizer], groups: list[dict]) -> torch.optim.Optimizer:
    """Instantiate ``factory`` on ``groups``, set each group's LR to base LR x ``lr_scale`` and let it pick its
    kernel at each step (:func:`use_fast_kernels`)."""
    optimizer = factory(groups)
    base_lr = optimizer.defaults["lr"]
    for group in optimizer.param_groups:
        group["lr"] = base_lr * group.get("lr_scale", 1.0)
    use_fast_kernels(optimizer)
    return optimizer


FUSED = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)  # one fused CUDA kernel per step (torch >= 2.4)
FAST_DEVICES = ("cuda",)  # where fused/foreach pay; on CPU the for-loop is torch's own choice


def choose_kernel(optimizer_class: type, device_types: Collection[str], floating: bool = True) -> Optional[str]:
    """``"fused"``, ``"foreach"`` or None (torch's default, the for-loop on CPU) for a group whose parameters are on
    ``device_types``. Fused updates every tensor of a group in one kernel launch, also a single tensor (the step in
    backward), where foreach gains nothing over the for-loop."""
    if not device_types or not set(device_types) <= set(FAST_DEVICES):
        return None
    return "fused" if issubclass(optimizer_class, FUSED) and floating else "foreach"


def use_fast_kernels(optimizer: torch.optim.Optimizer) -> None:
    """Set each group's ``fused``/``foreach`` before every step from where its parameters are then: an optimizer is
    built before Lightning moves the model (in backward) and a checkpoint may resume on another device. Only groups
    that left both to torch (None) and optimizers that have the keys are touched; an explicit choice stands."""
    if not any(c.__module__.startswith("torch.optim.") and c is not torch.optim.Optimizer
               for c in type(optimizer).__mro__):
        return  # another library's optimizer may give "foreach" other meanings: its own defaults stand
    auto = [i for i, g in enumerate(optimizer.param_groups)
            if "foreach" in g and g.get("foreach") is None and g.get("fused", None) is None
            and not g.get("differentiable", False)]
    if not auto:
        return
    fused_key = "fused" in optimizer.param_groups[auto[0]]

    def choose(opt, args, kwargs):
        for i in auto:
            group = opt.param_groups[i]
            params = group["params"]
            kernel = choose_kernel(type(opt), {p.device.type for p in params},
                                   all(torch.is_floating_point(p) and not p.is_sparse for p in params))
            if kernel == "fused" and not fused_key:
                kernel = "foreach"
            if kernel == "fused" and not group.get("fused"):
                for p in params:  # Adam's step count lives on the host unless fused: a resumed state moves
                    step = opt.state.get(p, {}).get("step")
                    if torch.is_tensor(step) and step.device != p.device:
                        opt.state[p]["step"] = step.to(p.device, torch.float32)
            if fused_key:
                group["fused"] = True if kernel == "fused" else None
            group["foreach"] = True if kernel == "foreach" else None
        return None

    optimizer.register_step_pre_hook(choose)


def cosine_factor(step: int, total_steps: int) -> float:
    """Cosine from 1 at step 0 to 0 at ``total_steps`` (Appendix A)."""
    if total_steps <= 0:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes the tensors hold: the unit of the paper's memory argument (parameters, gradients, optimizer state)."""
    return sum(t.numel() * t.element_size() for t in tensors)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in optimizer state tensors (momentum buffers, Adam moments): what freezing and SGD save."""
    if hasattr(optimizer, "state_bytes"):  # in backward: the per-parameter optimizers hold the state
        return optimizer.state_bytes()
    return tensor_bytes(t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t))
