"""WILDS-FMoW (``fmow_v1.1``): 62 land-use classes from satellite images, shifting over time and region.

Splits as WILDS defines them (``split_scheme='official'``): train, ``id_val`` and ``id_test`` before 2013, OOD
``val`` 2013-2015 (our ``ood_val``) and OOD ``test`` from 2016 (our ``ood_test``). Groups are regions.

Metrics (Section 2.1): the paper's OOD number is accuracy on the OOD test images from Africa; WILDS' official
``worst_region_acc`` (minimum over regions, "Other" excluded) and every region's accuracy are logged too.
"""
from __future__ import annotations

import numpy as np

from ..metrics import GroupAccuracy
from .base import ShiftDataModule
from .files import DataFormatError, WildsSamples, download_wilds, open_wilds
from .transforms import paper_transform

# WILDS' region order (first appearance in the real metadata); fixed here so group ids never depend on row order.
REGIONS = ["Asia", "Europe", "Africa", "Americas", "Oceania", "Other"]
SPLITS = {"train": "train", "id_val": "id_val", "id_test": "id_test", "ood_val": "val", "ood_test": "test"}
REQUIRED = ["rgb_metadata.csv", "country_code_mapping.csv", "images"]


class RegionAccuracy(GroupAccuracy):
    """GroupAccuracy over regions that reports the minimum as WILDS' ``worst_region_acc`` ("Other" excluded)."""

    def __init__(self, **kwargs):
        super().__init__(REGIONS, exclude=("Other",), **kwargs)

    def compute(self):
        out = super().compute()
        if "worst_group_acc" in out:
            out["worst_region_acc"] = out.pop("worst_group_acc")
        return out


class FMoW(ShiftDataModule):
    """WILDS-FMoW; ID = ``id_val`` accuracy, OOD = Africa accuracy on ``ood_test``."""

    num_classes = 62
    eval_splits = ("id_val", "id_test", "ood_val", "ood_test")
    id_metric = "id_val/acc"
    ood_metric = "ood_test/acc_Africa"
    paper_epochs = 5

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._dataset = None
        self._regions = None

    def prepare_data(self) -> None:
        if self.download:
            download_wilds("fmow", "1.1", self.root, "WILDS-FMoW")

    def _load(self):
        if self._dataset is None:
            ds = open_wilds("fmow", "1.1", self.root, REQUIRED, "WILDS-FMoW")
            names = [("Other" if not isinstance(r, str) else r) for r in ds.metadata_map["region"]]
            unknown = sorted(set(names) - set(REGIONS))
            if unknown:
                raise DataFormatError(f"{ds.data_dir}/country_code_mapping.csv names region(s) {unknown}; "
                                      f"expected only {REGIONS}.")
            to_ours = np.array([REGIONS.index(n) for n in names])
            self._regions = to_ours[ds.metadata_array[:, 0].numpy()]
            self._dataset = ds
        return self._dataset

    def make_split(self, name: str, train: bool):
        ds = self._load()
        idx = np.flatnonzero(np.asarray(ds.split_array) == ds.split_dict[SPLITS[name]])
        return WildsSamples(ds, idx, self._regions[idx], paper_transform("fmow", train, self.mean, self.std))

    def group_names(self, split: str):
        return list(REGIONS)

    def metric(self, split: str) -> GroupAccuracy:
        return RegionAccuracy()
