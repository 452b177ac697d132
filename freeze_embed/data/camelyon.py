"""WILDS-Camelyon17 (``camelyon17_v1.0``): tumour vs normal 96x96 histopathology patches, shifting by hospital.

Splits as WILDS defines them: train and ``id_val`` from hospitals 0, 3 and 4, OOD ``val`` = hospital 1 (our
``ood_val``), OOD ``test`` = hospital 2 (our ``ood_test``); there is no ID test set. Groups are hospitals.
Metrics (Section 2.1): ID = ``id_val`` accuracy, OOD = average accuracy on ``ood_test``.
"""
from __future__ import annotations

import numpy as np

from .base import ShiftDataModule
from .files import WildsSamples, download_wilds, open_wilds
from .transforms import paper_transform

HOSPITALS = [f"hospital_{i}" for i in range(5)]
SPLITS = {"train": "train", "id_val": "id_val", "ood_val": "val", "ood_test": "test"}


class Camelyon17(ShiftDataModule):
    """WILDS-Camelyon17; ID = ``id_val`` accuracy, OOD = ``ood_test`` accuracy."""

    num_classes = 2
    eval_splits = ("id_val", "ood_val", "ood_test")
    id_metric = "id_val/acc"
    ood_metric = "ood_test/acc"
    paper_epochs = 3

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._dataset = None

    def prepare_data(self) -> None:
        if self.download:
            download_wilds("camelyon17", "1.0", self.root, "WILDS-Camelyon17")

    def _load(self):
        if self._dataset is None:
            self._dataset = open_wilds("camelyon17", "1.0", self.root, ["metadata.csv", "patches"],
                                       "WILDS-Camelyon17")
        return self._dataset

    def make_split(self, name: str, train: bool):
        ds = self._load()
        idx = np.flatnonzero(np.asarray(ds.split_array) == ds.split_dict[SPLITS[name]])
        hospital = ds.metadata_array[idx, 0].numpy()
        return WildsSamples(ds, idx, hospital, paper_transform("camelyon17", train, self.mean, self.std))

    def group_names(self, split: str):
        return list(HOSPITALS)
