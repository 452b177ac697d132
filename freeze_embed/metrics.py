"""The accuracies the paper reports (Section 2.1): overall, per group, worst group and group-weighted.

``metrics_for(datamodule, split)`` is the one place where a dataset's description (its groups, their weights, the
groups the worst-group accuracy skips, the worst-group key's name) becomes a metric object; datasets never build
metrics themselves. Counts are summed (``dist_reduce_fx="sum"``), so the numbers are exact across DDP processes.
WILDS' own ``eval()`` needs ``torch_scatter``; these few lines replace it with ``bincount``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import torch
from torchmetrics import Metric

if TYPE_CHECKING:
    from freeze_embed.data.base import ShiftDataModule


class GroupAccuracy(Metric):
    """Accuracy overall and per group.

    ``compute()`` returns ``acc``; with groups also ``acc_<group name>`` for each group with examples, the minimum
    over groups with examples except ``exclude`` (e.g. FMoW's "Other"), under the key ``worst_name``, and, when
    ``weights`` are given, ``weighted_acc`` = sum_g w_g acc_g / sum_g w_g over groups with examples (Waterbirds' ID
    accuracy weights the test groups by their training counts).
    """

    full_state_update = False

    def __init__(self, group_names: Optional[Sequence[str]] = None, weights: Optional[Sequence[float]] = None,
                 exclude: Sequence[str] = (), worst_name: str = "worst_group_acc", **kwargs):
        super().__init__(**kwargs)
        self.group_names = list(group_names or [])
        n = max(len(self.group_names), 1)
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.exclude = set(exclude)
        self.worst_name = worst_name
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
            out[self.worst_name] = acc[keep].min().float()
        if self.weights is not None:
            w = self.weights.to(acc.device) * seen
            out["weighted_acc"] = ((w * acc).sum() / w.sum().clamp(min=1e-12)).float()
        return out


def metrics_for(dm: "ShiftDataModule", split: str) -> GroupAccuracy:
    """The metric of evaluation set ``split``, from the datamodule's protocol (see ``ShiftDataModule``)."""
    return GroupAccuracy(dm.group_names(split), weights=dm.group_weights(split), exclude=dm.excluded_groups,
                         worst_name=dm.worst_group_name)
