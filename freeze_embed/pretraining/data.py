"""Pretraining data: ImageNet-style class folders at full scale, a built-in synthetic task at small scale.

Both give ``(image, label)`` normalised with the backbone's own mean/std (linked from ``model.backbone``, as the
fine-tuning data is), so a checkpoint sees the same input statistics when it is pretrained and when it is fine-tuned.
"""
from __future__ import annotations

import os
from typing import Optional

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from freeze_embed.backbones import normalization
from freeze_embed.data.demo import make_shift_images
from freeze_embed.data.errors import DataRootError


class PretrainData(L.LightningDataModule):
    """Base class: ``num_classes`` sizes the pretraining head; ``make_split('train' | 'val')`` builds a split."""

    num_classes: int = 0

    def __init__(self, batch_size: int = 64, num_workers: int = 0, backbone: Optional[str] = None):
        super().__init__()
        self.batch_size, self.num_workers, self.backbone = batch_size, num_workers, backbone
        self.mean, self.std = normalization(backbone)
        self._splits: dict[str, Dataset] = {}

    def make_split(self, name: str) -> Dataset:
        raise NotImplementedError

    def check_root(self) -> None:
        """Fail with the dataset's one sentence before the model is built."""
        self.split("train")

    def split(self, name: str) -> Dataset:
        if name not in self._splits:
            self._splits[name] = self.make_split(name)
        return self._splits[name]

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        # Workers restart each epoch, so their seeds come from the (checkpointed) main RNG: exact resume.
        return DataLoader(self.split(name), batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          drop_last=shuffle, pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)


class ImageFolderPretrain(PretrainData):
    """ImageNet-1k (ILSVRC-2012) as class folders, ``<root>/train/<wnid>/*.JPEG`` and ``<root>/val/<wnid>/*.JPEG``.

    Augmentation is the ResNet reference's (torchvision ``references/classification/presets.py``): train
    RandomResizedCrop + horizontal flip; val resize to ``img_size * 256 / 224`` then center-crop ``img_size``.

    Args:
        root: the directory holding ``train/`` and ``val/``.
        num_classes: classes in ``train/`` (1000 for ImageNet-1k); checked against the folders.
        img_size: training and evaluation resolution.
    """

    def __init__(self, root: str = "/data/imagenet", num_classes: int = 1000, img_size: int = 224,
                 batch_size: int = 128, num_workers: int = 8, backbone: Optional[str] = None):
        super().__init__(batch_size, num_workers, backbone)
        self.root, self.num_classes, self.img_size = root, num_classes, img_size

    def make_split(self, name: str) -> Dataset:
        from torchvision.datasets import ImageFolder
        from torchvision.transforms import v2 as T
        folder = os.path.join(os.path.expanduser(self.root), name)
        if not os.path.isdir(folder) or not any(e.is_dir() for e in os.scandir(folder)):
            raise DataRootError(f"No class folders in '{folder}': pretraining expects {self.root}/train/<class>/"
                                f"<image> and {self.root}/val/<class>/<image> (ImageNet's validation images sorted "
                                "into class folders, e.g. with the script in pytorch/examples imagenet/README.md).")
        crops = ([T.RandomResizedCrop(self.img_size, antialias=True), T.RandomHorizontalFlip()] if name == "train"
                 else [T.Resize(self.img_size * 256 // 224, antialias=True), T.CenterCrop(self.img_size)])
        tf = T.Compose([*crops, T.ToImage(), T.ToDtype(torch.float32, scale=True),
                        T.Normalize(list(self.mean), list(self.std))])
        data = ImageFolder(folder, transform=tf)
        if len(data.classes) != self.num_classes:
            raise DataRootError(f"'{folder}' has {len(data.classes)} class folders, but data.num_classes is "
                                f"{self.num_classes}: set data.init_args.num_classes to {len(data.classes)}.")
        return data


class SyntheticPretrain(PretrainData):
    """The built-in pretraining task: ``num_classes``-way grating orientation with random tints (no colour
    shortcut), the task ``freeze_embed.tools.demo_pretrain`` pretrains the demo ViT on. The demo shift
    (:class:`~freeze_embed.data.DemoShift`) then asks for 4 orientations at lower contrast and more noise, with a
    spurious tint: a related task whose patches look different, as a downstream set does after ImageNet.

    Args:
        num_classes: orientations.
        train_size, val_size: images in each split (drawn once, deterministically, from ``seed``).
        contrast, noise: of :func:`~freeze_embed.data.demo.make_shift_images` (its defaults, as the demo ViT's).
    """

    def __init__(self, num_classes: int = 8, train_size: int = 8000, val_size: int = 1000, contrast: float = 0.45,
                 noise: float = 0.25, seed: int = 1234, batch_size: int = 64, num_workers: int = 0,
                 backbone: Optional[str] = None):
        super().__init__(batch_size, num_workers, backbone)
        self.num_classes, self.train_size, self.val_size = num_classes, train_size, val_size
        self.contrast, self.noise, self.seed = contrast, noise, seed

    def make_split(self, name: str) -> Dataset:
        n, offset = (self.train_size, 0) if name == "train" else (self.val_size, 1)
        images, labels, _ = make_shift_images(n, self.num_classes, 1 / self.num_classes, seed=self.seed + offset,
                                              noise=self.noise, contrast=self.contrast)
        mean, std = torch.tensor(self.mean).view(1, 3, 1, 1), torch.tensor(self.std).view(1, 3, 1, 1)
        return TensorDataset((images - mean) / std, labels)
