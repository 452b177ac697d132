"""BREEDS Living-17 (Santurkar et al., 2021), built straight from ImageNet ILSVRC-2012 class folders.

17 superclasses (label = row of ``living17.json``, shipped with the package, so no BREEDS download or
``robustness`` install is needed), each with 2 *source* and 2 *target* ImageNet classes. Source classes give the
training set (ImageNet train) and ``id_val`` (ImageNet val); target classes give the OOD set ``ood_test``
(ImageNet val): e.g. the bear superclass is sloth and black bears in ID, polar and brown bears OOD (Section 2.1).
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib import resources

import numpy as np

from freeze_embed.data.base import ShiftDataModule
from freeze_embed.data.errors import DataRootError, missing_root
from freeze_embed.data.images import ImageSamples
from freeze_embed.data.transforms import paper_transform

EXTENSIONS = (".jpeg", ".jpg", ".png")
LAYOUT = "ImageNet ILSVRC-2012 class folders <root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG"
HOW = ("download ILSVRC-2012 from https://image-net.org (it cannot be fetched automatically) and extract the train "
       "and val archives into those folders")
# split name -> (ImageNet folder, which classes of each superclass)
SPLITS = {"train": ("train", "source"), "id_val": ("val", "source"), "ood_test": ("val", "target")}


@lru_cache(maxsize=1)
def superclasses() -> list[dict]:
    """The Living-17 split: ``[{"name", "source": [wnid, wnid], "target": [wnid, wnid]}, ...]``."""
    text = resources.files(__package__).joinpath("living17.json").read_text()
    return json.loads(text)["superclasses"]


def class_names() -> list[str]:
    return [s["name"] for s in superclasses()]


def wnids(which: str) -> dict[str, int]:
    """``{wnid: superclass label}`` for the ``source`` or ``target`` classes."""
    return {w: label for label, s in enumerate(superclasses()) for w in s[which]}


class Living17(ShiftDataModule):
    """Living-17; ID = ``id_val`` accuracy (source classes), OOD = ``ood_test`` accuracy (target classes)."""

    num_classes = 17
    paper_epochs = 20
    prompt_templates = "openai_imagenet"  # ImageNet classes

    @property
    def class_names(self) -> list[str]:
        """The superclass names of ``living17.json`` (BREEDS' names, e.g. "salamander")."""
        return class_names()

    def _check(self, folder: str) -> str:
        path = os.path.join(self.root_dir, folder) if self.root_dir else None
        if path is None or not os.path.isdir(path):
            raise missing_root("Living-17", self.root, LAYOUT, HOW)
        if folder == "val":
            entries = os.listdir(path)
            if not any(e.startswith("n") and os.path.isdir(os.path.join(path, e)) for e in entries) and any(
                    e.lower().endswith(EXTENSIONS) for e in entries):
                raise DataRootError(
                    f"ImageNet val at '{path}' is flat (images not in <wnid> folders): sort it into class folders, "
                    "e.g. by running https://raw.githubusercontent.com/soumith/imagenetloader.torch/master/valprep.sh "
                    "inside it, or with torchvision.datasets.ImageNet(root, split='val') and the devkit archive.")
        return path

    def prepare_data(self) -> None:
        if self.download:
            self._check("train")  # ImageNet cannot be downloaded for the user: say where it should be

    def make_split(self, name: str, train: bool):
        folder, which = SPLITS[name]
        base = self._check(folder)
        classes = wnids(which)
        missing = [w for w in classes if not os.path.isdir(os.path.join(base, w))]
        if missing:
            raise DataRootError(f"Living-17 needs ImageNet class folders {', '.join(missing[:4])}"
                                f"{' ...' if len(missing) > 4 else ''} ({len(missing)} missing) under '{base}'; "
                                f"expected {LAYOUT}.")
        paths, labels = [], []
        for wnid, label in classes.items():
            files = sorted(f for f in os.listdir(os.path.join(base, wnid)) if f.lower().endswith(EXTENSIONS))
            paths += [os.path.join(base, wnid, f) for f in files]
            labels += [label] * len(files)
        return ImageSamples(paths, np.asarray(labels, dtype=np.int64), None,
                            paper_transform("living17", train, self.mean, self.std))
