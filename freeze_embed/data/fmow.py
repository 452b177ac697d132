"""WILDS-FMoW (``fmow_v1.1``): 62 land-use classes from satellite images, shifting over time and region.

Splits as WILDS defines them (``split_scheme='official'``): train, ``id_val`` and ``id_test`` before 2013, OOD
``val`` 2013-2015 (our ``ood_val``) and OOD ``test`` from 2016 (our ``ood_test``). Groups are regions.

Metrics (Section 2.1): the paper's OOD number is accuracy on the OOD test images from Africa; WILDS' official
``worst_region_acc`` (minimum over regions, "Other" excluded) and every region's accuracy are logged too.
"""
from __future__ import annotations

import numpy as np

from freeze_embed.data.errors import DataFormatError
from freeze_embed.data.transforms import paper_transform
from freeze_embed.data.wilds import WildsDataModule

# WILDS' region order (first appearance in the real metadata); fixed here so group ids never depend on row order.
REGIONS = ["Asia", "Europe", "Africa", "Americas", "Oceania", "Other"]
SPLITS = {"train": "train", "id_val": "id_val", "id_test": "id_test", "ood_val": "val", "ood_test": "test"}


class FMoW(WildsDataModule):
    """WILDS-FMoW; ID = ``id_val`` accuracy, OOD = Africa accuracy on ``ood_test``."""

    wilds_name, wilds_version, title = "fmow", "1.1", "WILDS-FMoW"
    wilds_files = ("rgb_metadata.csv", "country_code_mapping.csv", "images")
    num_classes = 62
    eval_names = ("id_val", "id_test", "ood_val", "ood_test")
    groups = REGIONS
    excluded_groups = ("Other",)  # WILDS' worst-region accuracy leaves out the catch-all region
    worst_group_name = "worst_region_acc"  # WILDS' name for it
    ood_metric = "ood_test/acc_Africa"
    paper_epochs = 5
    prompt_templates = "fmow"

    @property
    def class_names(self) -> list[str]:
        """WILDS' category list, whose index is the label (``categories`` in wilds/datasets/fmow_dataset.py); kept
        with underscores, as wise-ft's FMOW class names are."""
        from wilds.datasets.fmow_dataset import categories
        return list(categories)

    def read(self):
        """(the WILDS dataset, every example's region as an index into REGIONS)."""
        ds = self.open_wilds()
        names = [("Other" if not isinstance(r, str) else r) for r in ds.metadata_map["region"]]
        unknown = sorted(set(names) - set(REGIONS))
        if unknown:
            raise DataFormatError(f"{ds.data_dir}/country_code_mapping.csv names region(s) {unknown}; "
                                  f"expected only {REGIONS}.")
        to_ours = np.array([REGIONS.index(n) for n in names])
        return ds, to_ours[ds.metadata_array[:, 0].numpy()]

    def make_split(self, name: str, train: bool):
        ds, regions = self.load()
        return self.samples(ds, SPLITS[name], regions, paper_transform("fmow", train, self.mean, self.std))
