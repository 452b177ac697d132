"""ShiftDataModule: a distribution shift as the paper evaluates it, a training set plus named evaluation sets.

Data modules describe the data; the module measures. A dataset says which sets are evaluated, how its examples are
grouped, how the groups are scored and which numbers are the paper's ID and OOD ones (the protocol below);
``freeze_embed.metrics.metrics_for`` turns that description into the metric objects, and the FineTuner and the CLI
read it as plain attributes. ``id_val`` drives model selection and early stopping (the paper's protocol); every set
is evaluated each epoch and logged under its own name.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from freeze_embed.backbones import normalization
from freeze_embed.data.images import ImageSamples
from freeze_embed.paper import SELECTION_METRIC
from freeze_embed.run.values import at_least


class ShiftDataModule(L.LightningDataModule):
    """Base class of every dataset; samples are ``(image, label, group)``.

    The protocol, which every dataset has (the defaults here fit a dataset without groups scored by plain accuracy):

    - ``num_classes``: size of the new head.
    - ``train_split``: the training set's name.
    - ``eval_names``: the evaluation sets, in the order of the evaluation dataloaders (a tuple).
    - ``groups``: names of the groups a sample's third element indexes, or None when groups mean nothing;
      ``group_names(split)`` gives a split's (by default ``groups``, the same in every split).
    - ``group_weights(split)``: None, or one weight per group for ``weighted_acc`` (Waterbirds: the training counts).
    - ``excluded_groups``: groups left out of the worst-group accuracy (FMoW's "Other", as WILDS does).
    - ``worst_group_name``: the key of the worst-group accuracy (``worst_group_acc``; FMoW: ``worst_region_acc``).
    - ``id_metric`` / ``ood_metric``: the paper's ID and OOD numbers (logged again as ``paper/id``, ``paper/ood``).
    - ``selection_metric``: picks the epoch (checkpoint) and the LR (sweep), Section 4; the sweep and the results
      tables read it from each run's results.json.
    - ``paper_epochs``: the epochs the paper trains for (``describe`` shows it).
    - ``class_names``: one name per label, in label order, and ``prompt_templates``: a key of
      ``data.prompts.TEMPLATES``; CLIP's zero-shot head is built from them (``freeze_embed.zeroshot.prompts``).
    - ``split(name, train)``: the set ``name``, built once by ``make_split``.

    Metric keys are ``<eval set>/<metric>``, e.g. ``ood_test/acc_Africa`` or ``test/weighted_acc``.

    Args:
        root: dataset directory.
        batch_size: per-process batch size.
        num_workers: data-loading processes per training process.
        backbone: the model's spec string (linked from ``model.backbone`` by the CLI): inputs are normalised with the
            backbone's own mean/std, since CLIP's differ from ImageNet's.
        download: fetch the data into ``root`` when it is missing (needs internet).
        backbone_kwargs: the backbone's constructor arguments (linked from ``model.backbone_kwargs``): a dataset
            preprocessed as the backbone was (``ImageFolders``) reads its input size from them.
        decode_min_side: decode JPEGs at a reduced scale whose shorter side is still at least this (libjpeg's 1/2,
            1/4, 1/8), for images much larger than the model's input; None (the paper's) decodes in full. Pixels
            differ slightly from a full decode: :func:`freeze_embed.data.images.load_rgb`.
    """

    num_classes: int = 0
    train_split: str = "train"
    eval_names: Sequence[str] = ("id_val", "ood_test")
    groups: Optional[Sequence[str]] = None
    excluded_groups: Sequence[str] = ()
    worst_group_name: str = "worst_group_acc"
    id_metric: str = "id_val/acc"
    ood_metric: str = "ood_test/acc"
    selection_metric: str = SELECTION_METRIC  # picks the epoch (checkpoint) and the LR (sweep); Section 4
    paper_epochs: Optional[int] = None
    class_names: Optional[Sequence[str]] = None  # None: no zero-shot head (zeroshot.prompts says so)
    prompt_templates: str = "simple"
    class_weights: Optional[torch.Tensor] = None  # weights of the training cross-entropy (ImageFolders' balance)

    def __init__(self, root: Optional[str] = None, batch_size: int = 64, num_workers: int = 2,
                 backbone: Optional[str] = None, download: bool = False,
                 backbone_kwargs: Optional[dict[str, Any]] = None, decode_min_side: Optional[int] = None):
        super().__init__()
        at_least("data.init_args.batch_size", batch_size, 1, "give the per-process batch size, e.g. 64")
        at_least("data.init_args.num_workers", num_workers, 0, "0 loads data in the training process")
        at_least("data.init_args.decode_min_side", decode_min_side, 1, "e.g. 256, or null to decode in full")
        self.decode_min_side = decode_min_side
        self.root, self.batch_size, self.num_workers = root, batch_size, num_workers
        self.backbone, self.download, self.backbone_kwargs = backbone, download, backbone_kwargs
        # ``root`` stays as given (errors quote it); every path on disk is built from ``root_dir``
        self.root_dir: Optional[str] = os.path.abspath(os.path.expanduser(str(root))) if root else None
        self.mean, self.std = normalization(backbone)
        self._splits: dict[str, Dataset] = {}

    # --- what a dataset defines -------------------------------------------------------------------------------
    def make_split(self, name: str, train: bool) -> Dataset:
        """The split ``name``, with training transforms when ``train`` else test-time transforms."""
        raise NotImplementedError

    def group_names(self, split: str) -> Optional[list[str]]:
        """Names of the groups the split's third element indexes, or None when groups mean nothing."""
        return None if self.groups is None else list(self.groups)

    def group_weights(self, split: str) -> Optional[list[float]]:
        """Per-group weights of the split's ``weighted_acc``, or None (no weighted accuracy)."""
        return None

    def check_root(self) -> None:
        """Fail now, with the dataset's one-sentence error, if the data is not where the config says.

        The CLI calls this after the datamodule is built and before the model is (a wrong root must not cost a
        weights download first). Building the training split runs each dataset's layout checks; it is cached, so
        ``setup`` does not read the metadata twice. Skipped with ``download: true`` (``prepare_data`` fetches it).
        """
        if not self.download:
            self.split(self.train_split, train=True)

    # --- shared machinery -------------------------------------------------------------------------------------
    def split(self, name: str, train: bool = False) -> Dataset:
        key = f"{name}|{'train' if train else 'eval'}"
        if key not in self._splits:
            dataset = self.make_split(name, train)
            if isinstance(dataset, ImageSamples):
                dataset.decode_min_side = self.decode_min_side
            self._splits[key] = dataset
        return self._splits[key]

    def setup(self, stage: Optional[str] = None) -> None:
        if stage in (None, "fit"):
            self.split(self.train_split, train=True)
        for name in self.eval_names:
            self.split(name)

    def loader(self, dataset: Dataset, shuffle: bool, sampler: Optional[Sampler] = None) -> DataLoader:
        """A DataLoader over ``dataset`` as training (``shuffle``, or a training ``sampler``) or evaluation reads
        it, also for the probe."""
        trainer = self.trainer
        training = shuffle or sampler is not None  # Lightning distributes a training sampler across processes
        if not training and trainer is not None and trainer.world_size > 1:
            # Each example evaluated exactly once across processes: exact metrics under DDP.
            from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=trainer.world_size,
                                                   rank=trainer.global_rank, shuffle=False)
        # Training workers restart each epoch so their seeds come from the (checkpointed) main RNG: exact resume.
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0 and not training,
                          pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.split(self.train_split, train=True), shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [self.loader(self.split(n), shuffle=False) for n in self.eval_names]

    def test_dataloader(self) -> list[DataLoader]:
        return self.val_dataloader()
