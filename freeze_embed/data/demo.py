"""The built-in demo: a distribution-shift task that needs no download.

Each 32x32 image shows an oriented grating whose angle is the label (the core feature) on a tinted background.
In training and ID evaluation the tint agrees with the label 90% of the time (a spurious feature, like the
backgrounds of Waterbirds); in OOD evaluation the tint is random. A model that leans on the tint does well ID and
badly OOD. Groups: ``aligned`` (tint agrees with the label) and ``conflicting``.
"""
from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

from freeze_embed.data.base import ShiftDataModule

TINTS = torch.tensor([[0.9, 0.2, 0.2], [0.2, 0.8, 0.2], [0.2, 0.3, 0.9], [0.9, 0.8, 0.2],
                      [0.8, 0.2, 0.9], [0.2, 0.8, 0.9], [0.6, 0.6, 0.6], [0.9, 0.5, 0.1]])


def make_shift_images(n: int, num_classes: int, agreement: float, seed: int, size: int = 32,
                      noise: float = 0.25, contrast: float = 0.45) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images in [0, 1], labels, groups) drawn deterministically from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(num_classes, (n,), generator=g)
    agree = torch.rand(n, generator=g) < agreement
    other = (labels + torch.randint(1, num_classes, (n,), generator=g)) % num_classes
    tint_ids = torch.where(agree, labels, other)
    angle = labels.float() * math.pi / num_classes + (torch.rand(n, generator=g) - 0.5) * (0.5 * math.pi / num_classes)
    freq = 2 * math.pi * (2.5 + 1.5 * torch.rand(n, generator=g)) / size
    phase = 2 * math.pi * torch.rand(n, generator=g)
    ys, xs = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    proj = xs[None] * torch.cos(angle)[:, None, None] + ys[None] * torch.sin(angle)[:, None, None]
    grating = 0.5 + 0.5 * torch.sin(freq[:, None, None] * proj + phase[:, None, None])  # (n, H, W)
    tint = TINTS[tint_ids % len(TINTS)]  # (n, 3)
    images = (1 - contrast) * tint[:, :, None, None] + contrast * grating[:, None]
    images = (images + noise * torch.randn(images.shape, generator=g)).clamp(0, 1)
    return images, labels, (~agree).long()


class _TensorShift(Dataset):
    def __init__(self, images, labels, groups, mean, std):
        self.images, self.labels, self.groups = images, labels, groups
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return (self.images[i] - self.mean) / self.std, int(self.labels[i]), int(self.groups[i])


class DemoShift(ShiftDataModule):
    """Synthetic ID/OOD task; ID = ``id_val`` accuracy, OOD = ``ood_test`` accuracy.

    Args:
        num_classes: grating orientations (labels).
        agreement: how often the tint matches the label in train / ID sets.
        train_size, eval_size: examples in training and in each evaluation set.
        contrast, noise: the grating's contrast against the tint, and pixel noise: how hard the core feature is.
        seed: the data seed (separate from the training seed, so every run sees the same data).
    """

    eval_names = ("id_val", "id_test", "ood_test")
    groups = ("aligned", "conflicting")
    id_metric = "id_test/acc"  # id_val picks the LR and epoch; report ID on held-out data
    paper_epochs = 6

    @property
    def class_names(self) -> list[str]:
        """Label k is a grating at k * 180 / num_classes degrees (``make_shift_images``)."""
        return [f"stripes at {round(k * 180 / self.num_classes)} degrees" for k in range(self.num_classes)]

    def __init__(self, num_classes: int = 4, agreement: float = 0.9, train_size: int = 2000, eval_size: int = 500,
                 contrast: float = 0.2, noise: float = 0.3, seed: int = 0, num_workers: int = 0, **kwargs):
        super().__init__(num_workers=num_workers, **kwargs)  # in-memory tensors: worker processes only cost
        self.num_classes, self.agreement = num_classes, agreement
        self.train_size, self.eval_size, self.seed = train_size, eval_size, seed
        self.contrast, self.noise = contrast, noise

    def make_split(self, name: str, train: bool):
        sizes = {"train": self.train_size, "id_val": self.eval_size, "id_test": self.eval_size,
                 "ood_test": self.eval_size}
        offsets = {"train": 0, "id_val": 1, "id_test": 2, "ood_test": 3}
        agreement = 1.0 / self.num_classes if name.startswith("ood") else self.agreement
        images, labels, groups = make_shift_images(sizes[name], self.num_classes, agreement,
                                                   1000 * self.seed + offsets[name],
                                                   noise=self.noise, contrast=self.contrast)
        return _TensorShift(images, labels, groups, self.mean, self.std)
