"""ShiftDataModule: a training set plus named evaluation sets (``id_val``, ``id_test``, ``ood_test``, ...).

``id_val`` drives model selection and early stopping (the paper's protocol); every set is evaluated each epoch and
logged under its own name. Subclasses say how to build one split (``make_split``), which transforms the paper uses,
which metric is the paper's ID and OOD number (``id_metric`` / ``ood_metric``) and which metric selects the LR and
the epoch (``selection_metric``: checkpointing, the sweep and the results tables all read it from here).
"""
from __future__ import annotations

from typing import Optional, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from ..backbones import normalization
from ..metrics import GroupAccuracy


class ShiftDataModule(L.LightningDataModule):
    """Base class of every dataset; samples are ``(image, label, group)``.

    Args:
        root: dataset directory.
        batch_size: per-process batch size.
        num_workers: data-loading processes per training process.
        backbone: the model's spec string (linked from ``model.backbone`` by the CLI): inputs are normalised with the
            backbone's own mean/std, since CLIP's differ from ImageNet's.
        download: fetch the data into ``root`` when it is missing (needs internet).
    """

    num_classes: int = 0
    train_split: str = "train"
    eval_splits: Sequence[str] = ("id_val", "ood_test")
    id_metric: str = "id_val/acc"    # the paper's ID number
    ood_metric: str = "ood_test/acc"  # the paper's OOD number
    selection_metric: str = "id_val/acc"  # picks the epoch (checkpoint) and the LR (sweep); Section 4
    paper_epochs: Optional[int] = None

    def __init__(self, root: Optional[str] = None, batch_size: int = 64, num_workers: int = 2,
                 backbone: Optional[str] = None, download: bool = False):
        super().__init__()
        self.root, self.batch_size, self.num_workers = root, batch_size, num_workers
        self.backbone, self.download = backbone, download
        self.mean, self.std = normalization(backbone)
        self._splits: dict[str, Dataset] = {}

    # --- what a dataset defines -------------------------------------------------------------------------------
    def make_split(self, name: str, train: bool) -> Dataset:
        """The split ``name``, with training transforms when ``train`` else test-time transforms."""
        raise NotImplementedError

    def group_names(self, split: str) -> Optional[list[str]]:
        """Names of the groups the split's third element indexes, or None when groups mean nothing."""
        return None

    def metric(self, split: str) -> GroupAccuracy:
        return GroupAccuracy(self.group_names(split))

    def check_root(self) -> None:
        """Fail now, with the dataset's one-sentence error, if the data is not where the config says.

        The CLI calls this after the datamodule is built and before the model is (a wrong root must not cost a
        weights download first). Building the training split runs each dataset's layout checks; it is cached, so
        ``setup`` does not read the metadata twice. Skipped with ``download: true`` (``prepare_data`` fetches it).
        """
        if not self.download:
            self.split(self.train_split, train=True)

    # --- shared machinery -------------------------------------------------------------------------------------
    @property
    def eval_names(self) -> list[str]:
        return list(self.eval_splits)

    def split(self, name: str, train: bool = False) -> Dataset:
        key = f"{name}|{'train' if train else 'eval'}"
        if key not in self._splits:
            self._splits[key] = self.make_split(name, train)
        return self._splits[key]

    def setup(self, stage: Optional[str] = None) -> None:
        if stage in (None, "fit"):
            self.split(self.train_split, train=True)
        for name in self.eval_names:
            self.split(name)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        sampler = None
        trainer = getattr(self, "trainer", None)
        if not shuffle and trainer is not None and trainer.world_size > 1:
            # Each example evaluated exactly once across processes: exact metrics under DDP.
            from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=trainer.world_size,
                                                   rank=trainer.global_rank, shuffle=False)
        # Training workers restart each epoch so their seeds come from the (checkpointed) main RNG: exact resume.
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, sampler=sampler,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0 and not shuffle,
                          pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.split(self.train_split, train=True), shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(self.split(n), shuffle=False) for n in self.eval_names]

    def test_dataloader(self) -> list[DataLoader]:
        return self.val_dataloader()

    def probe_dataloaders(self) -> dict[str, DataLoader]:
        """Training images with test-time transforms and ``id_val``, for the linear-probe protocol."""
        return {"train": self._loader(self.split(self.train_split, train=False), shuffle=False),
                "id_val": self._loader(self.split("id_val"), shuffle=False)}
