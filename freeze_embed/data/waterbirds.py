"""Waterbirds (Sagawa et al., 2020): landbird vs waterbird, with the background (land/water) as a spurious cue.

Reads either the WILDS release ``waterbirds_v1.0`` (through ``wilds.get_dataset``) or the original group-DRO
folder ``waterbird_complete95_forest2water2``; both hold ``metadata.csv`` with ``img_filename, y, split, place``
(split 0/1/2 = train/val/test). Group = 2*y + place.

Metrics as the paper reports them (Section 2.1): ID = test accuracy per group weighted by the training group
proportions (3498, 184, 56, 1057 of 4795 in the real data), OOD = worst-group test accuracy.

Selection: Waterbirds' validation split is group-balanced, unlike training, so its plain accuracy overweights the
rare groups. We select on ``id_val/weighted_acc`` (validation groups weighted by the training proportions), the
clean analogue of what the authors ran: they selected on the weighted *test* accuracy (``WATERBIRDS_VAL`` in
``scripts/run_adaptation_experiments.py`` of AnanyaKumar/transfer_learning). ``select_on: test`` reproduces that
exactly, at the price of choosing on the test set.
"""
from __future__ import annotations

import os
from typing import Literal

import numpy as np
import pandas as pd

from freeze_embed.data.errors import DataFormatError, missing_root
from freeze_embed.data.images import ImageSamples
from freeze_embed.data.transforms import paper_transform
from freeze_embed.data.wilds import WildsDataModule, WildsSamples

WILDS_FOLDER = "waterbirds_v1.0"
DRO_FOLDER = "waterbird_complete95_forest2water2"
GROUPS = ["landbird_land", "landbird_water", "waterbird_land", "waterbird_water"]  # index = 2*y + place
SPLIT_CODES = {"train": 0, "id_val": 1, "test": 2}  # the metadata's split column, the same in both layouts
LAYOUT = (f"<root>/{WILDS_FOLDER}/ (WILDS, with RELEASE_v1.0.txt) or <root>/{DRO_FOLDER}/ (group DRO), each with "
          "metadata.csv (img_filename, y, split, place) and the images it lists")
HOW = ("set data.init_args.download: true to fetch the WILDS release, or get the group-DRO tarball from "
       "https://nlp.stanford.edu/data/dro/waterbird_complete95_forest2water2.tar.gz")


class Waterbirds(WildsDataModule):
    """Waterbirds; eval sets ``id_val`` (model selection) and ``test`` (both paper numbers are on the test set)."""

    wilds_name, wilds_version, wilds_files, title = "waterbirds", "1.0", ("metadata.csv",), "Waterbirds"
    num_classes = 2
    eval_names = ("id_val", "test")
    groups = GROUPS
    id_metric = "test/weighted_acc"
    ood_metric = "test/worst_group_acc"
    paper_epochs = 20
    class_names = ("landbird", "waterbird")  # y = 0, 1 in metadata.csv (Sagawa et al., 2020)

    def __init__(self, select_on: Literal["id_val", "test"] = "id_val", **kwargs):
        super().__init__(**kwargs)
        self.select_on = select_on
        self.selection_metric = f"{select_on}/weighted_acc"

    # --- layout ---------------------------------------------------------------------------------------------
    def _layout(self) -> tuple[str, str]:
        """("wilds" | "dro", directory holding metadata.csv)."""
        if self.wilds_has(self.wilds_release):
            return "wilds", os.path.join(self.wilds_parent, self.wilds_folder)
        if self.root_dir:
            for d in (os.path.join(self.root_dir, DRO_FOLDER), self.root_dir):
                if os.path.isfile(os.path.join(d, "metadata.csv")) and not os.path.isfile(
                        os.path.join(d, "RELEASE_v1.0.txt")):
                    return "dro", d
        raise missing_root(self.title, self.root, LAYOUT, HOW)

    def prepare_data(self) -> None:
        if self.download:
            try:
                self._layout()
            except FileNotFoundError:
                self.download_wilds()

    def read(self):
        """(kind, WILDS dataset or image paths, per-example split codes, labels, groups)."""
        kind, directory = self._layout()
        if kind == "wilds":
            ds = self.open_wilds()
            place, y = ds.metadata_array[:, 0].numpy(), ds.y_array.numpy()
            table = (kind, ds, np.asarray(ds.split_array), y, 2 * y + place)
        else:
            df = pd.read_csv(os.path.join(directory, "metadata.csv"))
            bad = [c for c in ("img_filename", "y", "split", "place") if c not in df.columns]
            if bad:
                raise DataFormatError(f"{directory}/metadata.csv lacks column(s) {bad}: not a Waterbirds "
                                      "metadata file.")
            y, place = df["y"].to_numpy(), df["place"].to_numpy()
            paths = [os.path.join(directory, f) for f in df["img_filename"]]
            table = (kind, paths, df["split"].to_numpy(), y, 2 * y + place)
        y, groups = table[3], table[4]
        if not (np.isin(y, (0, 1)).all() and np.isin(groups, range(4)).all()):
            raise DataFormatError(f"Waterbirds metadata under {directory} has y or place outside {{0, 1}}.")
        return table

    # --- ShiftDataModule --------------------------------------------------------------------------------------
    def make_split(self, name: str, train: bool):
        kind, source, split, y, groups = self.load()
        idx = np.flatnonzero(split == SPLIT_CODES[name])
        tf = paper_transform("waterbirds", train, self.mean, self.std)
        if kind == "wilds":
            return WildsSamples(source, idx, groups[idx], tf)
        return ImageSamples([source[i] for i in idx], y[idx], groups[idx], tf)

    def train_group_counts(self) -> list[int]:
        """Training examples per group: the weights of the paper's ID accuracy."""
        _, _, split, _, groups = self.load()
        return np.bincount(groups[split == SPLIT_CODES["train"]], minlength=4).tolist()

    def group_weights(self, split: str) -> list[int]:
        """Every set is scored with the training proportions: the paper's ID number, and the selection metric."""
        return self.train_group_counts()
