"""Accuracy per group, worst-group and weighted accuracy, as the paper reports them.

Counts are summed (``dist_reduce_fx="sum"``), so the numbers are exact across DDP processes. WILDS' own ``eval()``
needs ``torch_scatter``; these few lines replace it with ``bincount``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torchmetrics import Metric


class GroupAccuracy(Metric):
    """Accuracy overall and per group.

    ``compute()`` returns ``acc``; with groups also ``acc_<group name>`` for each group with examples,
    ``worst_group_acc`` (minimum over groups with examples, skipping ``exclude`` such as FMoW's "Other") and, when
    ``weights`` are given, ``weighted_acc`` = sum_g w_g acc_g / sum_g w_g (Waterbirds' ID accuracy uses the training
    group proportions).
    """

    full_state_update = False

    def __init__(self, group_names: Optional[Sequence[str]] = None, weights: Optional[Sequence[float]] = None,
                 exclude: Sequence[str] = (), **kwargs):
        super().__init__(**kwargs)
        self.group_names = list(group_names or [])
        n = max(len(self.group_names), 1)
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.exclude = set(exclude)
        self.add_state("correct", default=torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, groups: Optional[torch.Tensor] = None) -> None:
        if preds.ndim > 1:
            preds = preds.argmax(dim=-1)
        n = self.correct.numel()
        groups = torch.zeros_like(target) if groups is None or not self.group_names else groups.long()
        self.correct += torch.bincount(groups, weights=(preds == target).long(), minlength=n)[:n].long()
        self.total += torch.bincount(groups, minlength=n)[:n]

    def compute(self) -> dict[str, torch.Tensor]:
        correct, total = self.correct.double(), self.total.double()
        out = {"acc": (correct.sum() / total.sum().clamp(min=1)).float()}
        if not self.group_names:
            return out
        acc = correct / total.clamp(min=1)
        seen = total > 0
        for i, name in enumerate(self.group_names):
            if seen[i]:
                out[f"acc_{name}"] = acc[i].float()
        keep = torch.tensor([seen[i] and name not in self.exclude for i, name in enumerate(self.group_names)])
        if keep.any():
            out["worst_group_acc"] = acc[keep].min().float()
        if self.weights is not None:
            w = self.weights.to(acc.device) * seen
            out["weighted_acc"] = ((w * acc).sum() / w.sum().clamp(min=1e-12)).float()
        return out
