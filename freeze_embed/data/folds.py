"""K-fold scoring on the training set: any dataset, trained on K-1 folds and scored on the held-out one.

SubTuning's ``greedy_cross_val`` (``talswisa/SubTuning``, ``src/greedy_subset_selection.py``) scores a candidate
subset by the mean over K folds of the training set, so the search never looks at validation data;
``python -m freeze_embed.tools.subtuning --folds K`` runs one trial per fold with this datamodule around the user's.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
from torch.utils.data import Dataset, Subset

from freeze_embed.backbones import normalization
from freeze_embed.data.base import ShiftDataModule

FOLD_SET = "fold_val"


class HoldOutFold(ShiftDataModule):
    """``data`` with fold ``fold`` of ``folds`` held out of its training set and evaluated as ``fold_val``, which
    selects the checkpoint (``selection_metric: fold_val/acc``); every other set of ``data`` is evaluated as usual.

    The folds are a permutation of the training examples seeded by ``seed``, cut into ``folds`` near-equal parts
    (``numpy.array_split``); ``fold_val`` reads the held-out examples with test-time transforms.
    """

    selection_metric = f"{FOLD_SET}/acc"

    def __init__(self, data: ShiftDataModule, fold: int = 0, folds: int = 5, seed: int = 0,
                 backbone: Optional[str] = None, backbone_kwargs: Optional[dict[str, Any]] = None):
        if not 0 <= fold < folds:
            raise ValueError(f"HoldOutFold fold {fold} does not exist: folds are 0..{folds - 1}.")
        super().__init__(root=data.root, batch_size=data.batch_size, num_workers=data.num_workers,
                         backbone=backbone or data.backbone,
                         backbone_kwargs=backbone_kwargs if backbone_kwargs is not None else data.backbone_kwargs,
                         decode_min_side=data.decode_min_side)
        if backbone_kwargs is not None:
            data.backbone_kwargs = backbone_kwargs
        if backbone is not None and backbone != data.backbone:  # the CLI links model.backbone to this module only
            data.backbone = backbone
            data.mean, data.std = normalization(backbone)
        self.data, self.fold, self.folds, self.seed = data, fold, folds, seed
        for attr in ("num_classes", "train_split", "groups", "excluded_groups", "worst_group_name", "id_metric",
                     "ood_metric", "paper_epochs", "class_names", "prompt_templates", "class_weights"):
            setattr(self, attr, getattr(data, attr))
        self.eval_names = (FOLD_SET, *data.eval_names)

    def fold_indices(self, n: int) -> tuple[list[int], list[int]]:
        """(training indices, held-out indices) among ``n`` training examples."""
        order = np.random.default_rng(self.seed).permutation(n)
        parts = np.array_split(order, self.folds)
        held = sorted(int(i) for i in parts[self.fold])
        held_set = set(held)
        return [i for i in range(n) if i not in held_set], held

    def make_split(self, name: str, train: bool) -> Dataset:
        if name == FOLD_SET or (name == self.train_split and train):
            full = self.data.split(self.train_split, train=name != FOLD_SET)
            kept, held = self.fold_indices(len(full))
            return Subset(full, held if name == FOLD_SET else kept)
        return self.data.split(name, train)

    def group_names(self, split: str) -> Optional[list[str]]:
        return self.data.group_names(self.train_split if split == FOLD_SET else split)

    def group_weights(self, split: str) -> Optional[list[float]]:
        return self.data.group_weights(self.train_split if split == FOLD_SET else split)

    def check_root(self) -> None:
        self.data.check_root()

    def prepare_data(self) -> None:
        self.data.prepare_data()
