"""WILDS-Camelyon17 (``camelyon17_v1.0``): tumour vs normal 96x96 histopathology patches, shifting by hospital.

Splits as WILDS defines them: train and ``id_val`` from hospitals 0, 3 and 4, OOD ``val`` = hospital 1 (our
``ood_val``), OOD ``test`` = hospital 2 (our ``ood_test``); there is no ID test set. Groups are hospitals.
Metrics (Section 2.1): ID = ``id_val`` accuracy, OOD = average accuracy on ``ood_test``.
"""
from __future__ import annotations

from freeze_embed.data.transforms import paper_transform
from freeze_embed.data.wilds import WildsDataModule

HOSPITALS = [f"hospital_{i}" for i in range(5)]
SPLITS = {"train": "train", "id_val": "id_val", "ood_val": "val", "ood_test": "test"}


class Camelyon17(WildsDataModule):
    """WILDS-Camelyon17; ID = ``id_val`` accuracy, OOD = ``ood_test`` accuracy."""

    wilds_name, wilds_version, title = "camelyon17", "1.0", "WILDS-Camelyon17"
    wilds_files = ("metadata.csv", "patches")
    num_classes = 2
    eval_names = ("id_val", "ood_val", "ood_test")
    groups = HOSPITALS
    paper_epochs = 3
    # label 0 = normal, 1 = tumour (WILDS' 'tumor' column); CLIP's PatchCamelyon classes (openai/CLIP data/prompts.md)
    class_names = ("lymph node", "lymph node containing metastatic tumor tissue")
    prompt_templates = "pcam"

    def make_split(self, name: str, train: bool):
        ds = self.load()
        hospitals = ds.metadata_array[:, 0].numpy()  # WILDS' first metadata column
        return self.samples(ds, SPLITS[name], hospitals, paper_transform("camelyon17", train, self.mean, self.std))
