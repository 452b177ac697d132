"""ImageFolders: a user's own images, a training set and any number of named evaluation sets.

Each set is a class-per-folder tree (``<set>/<class>/.../<image>``), a CSV manifest (``path,label[,group]``) or a
Hugging Face dataset (``hf:...``, :mod:`.hf_datasets`). Everything is listed, labelled and checked when the
datamodule is built, before any model exists: the CLI sizes the head from ``num_classes``, and a class that
training does not have fails now, naming its set. Listings are sorted, so every DDP process has the same classes.

Inputs are preprocessed as the backbone was pretrained (:mod:`.preprocess`: its size, interpolation, crop fraction
and mean/std); training adds ``RandomResizedCrop`` and a horizontal flip (``augment: false``: none).
"""
from __future__ import annotations

import os
from functools import cached_property
from typing import Any, Literal, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from freeze_embed.data.base import ShiftDataModule
from freeze_embed.data.errors import DataFormatError, DataRootError
from freeze_embed.data.hf_datasets import HFSamples, hf_labels, is_hf, open_hf
from freeze_embed.data.image_files import list_folder, read_manifest
from freeze_embed.data.images import ImageSamples
from freeze_embed.data.preprocess import eval_transform, preprocess_for, train_transform, _plain, _torchvision


class Listing:
    """One set: ``items`` (file paths, or row numbers of ``hf``), class names, group names or None."""

    def __init__(self, source: str, items: list, labels: list[Optional[str]], groups: Optional[list[str]],
                 hf=None, hf_classes: Optional[list[str]] = None):
        self.source, self.items, self.labels, self.groups = source, items, labels, groups
        self.hf, self.hf_classes = hf, hf_classes


def read_set(source: str, image_column: str, label_column: str) -> Listing:
    """A folder, a CSV manifest or an ``hf:`` dataset, listed (no image is opened)."""
    source = str(source)
    if is_hf(source):
        ds = open_hf(source)
        labels, names = hf_labels(ds, source, label_column)
        if image_column not in ds.column_names:
            raise DataFormatError(f"Hugging Face dataset '{source}' has no column '{image_column}' (columns "
                                  f"{ds.column_names}): set data.init_args.image_column.")
        return Listing(source, list(range(len(ds))), labels, None, hf=ds, hf_classes=names)
    if source.lower().endswith(".csv"):
        rows = read_manifest(source)
        has_groups = any(r.group is not None for r in rows)
        if has_groups and any(r.group is None for r in rows):
            line = next(i for i, r in enumerate(rows, start=2) if r.group is None)
            raise DataFormatError(f"Manifest '{source}' line {line} has no group while other rows have one: give "
                                  "every row a group, or none.")
        missing = next((i for i, r in enumerate(rows, start=2) if r.label is None), None)
        if missing is not None:
            raise DataFormatError(f"Manifest '{source}' line {missing} has no label: every row of a training or "
                                  "evaluation set needs a label column value.")
        return Listing(source, [r.path for r in rows], [r.label for r in rows],
                       [r.group for r in rows] if has_groups else None)
    pairs = list_folder(source)
    return Listing(source, [p for p, _ in pairs], [c for _, c in pairs], None)


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices): ``round(fraction * n_c)`` random examples of each class c, at least one
    stays in training, seeded (the same split in every run and every DDP process)."""
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = min(int(round(fraction * len(idx))), len(idx) - 1)
        held.append(rng.permutation(idx)[:k])
    held = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=int)
    return np.setdiff1d(np.arange(len(labels)), held), held


class ImageFolders(ShiftDataModule):
    """Your own images: ``train`` plus ``id_val`` (or a held-out part of train) and any number of ``eval`` sets.

    Args:
        train: a class-per-folder directory, a CSV manifest (``path,label[,group]``) or ``hf:...``.
        id_val: the validation set (model selection); None: a stratified, seeded ``val_fraction`` of train.
        val_fraction: the part of each training class held out when ``id_val`` is None.
        eval: ``{name: folder, CSV or hf:}`` evaluated every epoch; ``id_test`` is the paper's ID number, the
            first other set its OOD number.
        classes: the class names in label order; None: train's sorted folder names or labels (or the label
            feature's names of an ``hf:`` set).
        augment: ``RandomResizedCrop`` + flip for training; false: the evaluation transform for training too.
        balance: None (the paper's), ``sampler`` (a class-balanced weighted sampler, one epoch = as many draws as
            images) or ``loss`` (inverse-frequency class weights in the training cross-entropy).
        image_column / label_column: the columns of ``hf:`` sets.
        seed: the held-out split's seed (fixed, so every run of a sweep selects on the same images).
        decode_min_side: decode large JPEGs at a reduced scale (camera photos: about 2.7x faster decoding); see
            :class:`~freeze_embed.data.base.ShiftDataModule`.
    """

    describe_classes = True  # ``describe`` shows images per class, the imbalance and the transforms

    def __init__(self, train: str, id_val: Optional[str] = None, val_fraction: float = 0.1,
                 eval: Optional[dict[str, str]] = None, classes: Optional[list[str]] = None, augment: bool = True,
                 balance: Optional[Literal["sampler", "loss"]] = None, image_column: str = "image",
                 label_column: str = "label", seed: int = 0, batch_size: int = 64, num_workers: int = 2,
                 backbone: Optional[str] = None, backbone_kwargs: Optional[dict[str, Any]] = None,
                 decode_min_side: Optional[int] = None):
        super().__init__(root=train, batch_size=batch_size, num_workers=num_workers, backbone=backbone,
                         backbone_kwargs=backbone_kwargs, decode_min_side=decode_min_side)
        self.sources = {"train": str(train), **({"id_val": str(id_val)} if id_val else {})}
        for name, source in (eval or {}).items():
            if name in ("train", "id_val") or "/" in name or not name:
                raise DataFormatError(f"Evaluation set name '{name}' is not possible: 'train' and 'id_val' are "
                                      "taken and a name cannot contain '/'; rename it in data.init_args.eval.")
            self.sources[name] = str(source)
        if not 0 < val_fraction < 1 and id_val is None:
            raise DataFormatError(f"val_fraction {val_fraction} must be between 0 and 1 (or give id_val).")
        self.val_fraction, self.augment, self.balance, self.seed = val_fraction, augment, balance, seed
        self.image_column, self.label_column = image_column, label_column
        others = [n for n in self.sources if n not in ("train", "id_val", "id_test")]
        self.eval_names = ("id_val", *[n for n in self.sources if n not in ("train", "id_val")])
        self.id_metric = "id_test/acc" if "id_test" in self.sources else "id_val/acc"
        self.ood_metric = f"{others[0]}/acc" if others else self.id_metric
        self.selection_metric = "id_val/acc"
        self._index(classes, image_column, label_column)

    # --- listing and labels -----------------------------------------------------------------------------------
    def _index(self, classes: Optional[list[str]], image_column: str, label_column: str) -> None:
        listings = {n: read_set(s, image_column, label_column) for n, s in self.sources.items()}
        train = listings["train"]
        if not train.items:
            raise DataRootError(f"Training set '{train.source}' has no images (files with an extension of "
                                "torchvision's IMG_EXTENSIONS, e.g. .jpg .png, below its class folders).")
        if classes is None:
            if train.hf_classes is not None:
                classes = train.hf_classes
            elif not os.path.isdir(train.source) and all(str(v).isdigit() for v in train.labels):
                # integer labels of a CSV (or of an hf: set without class names) index the classes
                classes = [str(i) for i in range(max(int(v) for v in train.labels) + 1)]
            else:
                classes = sorted(set(train.labels))
        self.class_names = [str(c) for c in classes]
        self.num_classes = len(self.class_names)
        group_names = sorted({g for x in listings.values() if x.groups for g in x.groups})
        self.groups = group_names or None
        self._labels = {n: self._label_indices(n, x) for n, x in listings.items()}
        self._groups = {n: None if x.groups is None else np.array([group_names.index(g) for g in x.groups])
                        for n, x in listings.items()}
        self._listings = listings
        keep = np.arange(len(train.items))
        if "id_val" not in listings:
            keep, held = stratified_holdout(self._labels["train"], self.val_fraction, self.seed)
            self._subsets = {"train": ("train", keep), "id_val": ("train", held)}
        else:
            self._subsets = {"train": ("train", keep)}
        counts = np.bincount(self._labels["train"][keep], minlength=self.num_classes)
        # sklearn's "balanced" weights, n / (k * n_c); a class without training images gets 0
        self.class_weights = (torch.tensor(np.where(counts > 0, counts.sum() / (self.num_classes * np.maximum(
            counts, 1)), 0.0), dtype=torch.float32) if self.balance == "loss" else None)

    def _label_indices(self, name: str, listing: Listing) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.class_names)}
        indexed = not os.path.isdir(listing.source)  # a folder's name is a class name, never an index
        out = np.empty(len(listing.labels), dtype=np.int64)
        for i, label in enumerate(listing.labels):
            label = str(label)
            if label in index:
                out[i] = index[label]
            elif indexed and label.isdigit() and int(label) < len(self.class_names):
                out[i] = int(label)
            else:
                where = listing.source if listing.hf is not None or listing.source.lower().endswith(".csv") \
                    else os.path.join(listing.source, label)
                raise DataFormatError(f"Set '{name}' has class '{label}' ({where}) that training does not have; "
                                      f"the known classes are {self.class_names}.")
        return out

    def group_names(self, split: str) -> Optional[list[str]]:
        source = self._subsets.get(split, (split,))[0]
        return None if self._groups[source] is None else list(self.groups)

    @cached_property
    def preprocess(self) -> dict:
        """The backbone's preprocessing (the very dict its checkpoints store); ImageNet's without a backbone."""
        return preprocess_for(self.backbone, self.backbone_kwargs) if self.backbone else _plain(_torchvision(""))

    # --- ShiftDataModule --------------------------------------------------------------------------------------
    def make_split(self, name: str, train: bool):
        source, rows = self._subsets.get(name, (name, None))
        listing = self._listings[source]
        rows = np.arange(len(listing.items)) if rows is None else rows
        labels = self._labels[source][rows]
        groups = None if self._groups[source] is None else self._groups[source][rows]
        tf = train_transform(self.preprocess) if train and self.augment else eval_transform(self.preprocess)
        items = [listing.items[i] for i in rows]
        if listing.hf is not None:
            return HFSamples(listing.hf, items, labels, groups, tf, self.image_column, listing.source)
        return ImageSamples(items, labels, groups, tf)

    def train_dataloader(self) -> DataLoader:
        dataset = self.split(self.train_split, train=True)
        if self.balance != "sampler":
            return super().train_dataloader()
        counts = torch.bincount(dataset.labels, minlength=self.num_classes).double()
        weights = 1.0 / counts[dataset.labels]
        return self.loader(dataset, shuffle=True, sampler=WeightedRandomSampler(weights, len(dataset)))
