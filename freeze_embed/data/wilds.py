"""The WILDS releases the paper evaluates on (FMoW, Camelyon17, and WILDS' layouts of Waterbirds and DomainNet).

Examples are read through WILDS' own ``get_dataset``/``get_input`` (the real WILDS code path), after our own check
of the on-disk layout. WILDS' ``get_subset``/``eval`` are not used: transforms and metrics are ours (``eval`` needs
torch_scatter). A split is what ``get_subset`` selects, in its order: the examples whose ``split_array`` entry is
the split's code in ``split_dict`` (the WILDS leaderboard export depends on that order).
"""
from __future__ import annotations

import contextlib
import os
import sys
import warnings
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from freeze_embed.data.base import ShiftDataModule
from freeze_embed.data.errors import ImageReadError, missing_files, missing_root
from freeze_embed.data.images import ImageSamples

HOW = ("set data.init_args.download: true to fetch it with the wilds package, or download it from "
       "https://wilds.stanford.edu/downloads and extract it under <root>")


class WildsSamples(ImageSamples):
    """The examples ``indices`` of a WILDS dataset, each read with the dataset's ``get_input``."""

    def __init__(self, dataset, indices, groups=None, transform: Optional[Callable] = None):
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)
        labels = torch.as_tensor(dataset.y_array)[torch.as_tensor(self.indices)]
        super().__init__([None] * len(self.indices), labels, groups, transform)

    def load(self, i: int) -> Image.Image:
        idx = int(self.indices[i])
        try:
            return self.dataset.get_input(idx)
        except Exception as err:
            raise ImageReadError(f"Cannot read image '{wilds_image_path(self.dataset, idx)}' "
                                 f"({type(err).__name__}: {err}); re-download or re-extract the dataset.") from err


def wilds_image_path(dataset, idx: int) -> str:
    """The file behind example ``idx`` of a WILDS dataset, for error messages."""
    for attr in ("_input_array", "_input_image_paths"):  # Waterbirds, Camelyon17 / DomainNet
        if hasattr(dataset, attr):
            return os.path.join(dataset.data_dir, str(getattr(dataset, attr)[idx]))
    if hasattr(dataset, "full_idxs"):  # FMoW: images/rgb_img_<row of rgb_metadata.csv>.png
        return os.path.join(dataset.data_dir, "images", f"rgb_img_{dataset.full_idxs[idx]}.png")
    return f"example {idx} under {dataset.data_dir}"


def split_indices(dataset, split: str) -> np.ndarray:
    """The examples of WILDS' split ``split`` (e.g. ``id_val``, ``test``), in ``get_subset``'s order."""
    return np.flatnonzero(np.asarray(dataset.split_array) == dataset.split_dict[split])


class WildsDataModule(ShiftDataModule):
    """Base of the WILDS-backed datasets: where the release lives, its download, one cached load, its splits.

    A subclass names its release (``wilds_name``, ``wilds_version``: folder ``<name>_v<version>``), the files the
    release holds besides its RELEASE file (``wilds_files``, checked before WILDS is imported: WILDS' own errors for
    a wrong root are a pandas stack trace or a hint to pass ``download=True``) and its name in errors (``title``).
    ``read`` builds what the dataset needs from the release (default: the WILDS dataset); ``load`` caches it.
    ``root`` may be the folder that holds ``<name>_v<version>`` or that folder itself.
    """

    wilds_name: str
    wilds_version: str
    wilds_files: Sequence[str] = ()
    title: str

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._loaded: Any = None

    # --- where the release lives ------------------------------------------------------------------------------
    @property
    def wilds_folder(self) -> str:
        return f"{self.wilds_name}_v{self.wilds_version}"

    @property
    def wilds_release(self) -> str:
        return f"RELEASE_v{self.wilds_version}.txt"

    @property
    def wilds_parent(self) -> Optional[str]:
        """The folder that *contains* ``<name>_v<version>`` (what WILDS' ``root_dir`` means), or None."""
        if self.root_dir is None:
            return None
        at_release = os.path.basename(self.root_dir) == self.wilds_folder
        return os.path.dirname(self.root_dir) if at_release else self.root_dir

    def wilds_has(self, *names: str) -> bool:
        """Whether the release folder holds all of ``names``."""
        parent = self.wilds_parent
        return parent is not None and not missing_files(os.path.join(parent, self.wilds_folder), names)

    # --- opening and fetching ---------------------------------------------------------------------------------
    def open_wilds(self, **kwargs):
        """``wilds.get_dataset(..., download=False)`` after checking the layout; one DataRootError if it is wrong."""
        needed = [self.wilds_release, *self.wilds_files]
        if not self.wilds_has(*needed):
            raise missing_root(self.title, self.root,
                               f"<root>/{self.wilds_folder}/ with {', '.join(needed)} (the WILDS release)", HOW)
        import wilds
        # WILDS prints notes and warns about its own internals: keep stdout for results (describe --json)
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="wilds")
            return wilds.get_dataset(dataset=self.wilds_name, version=self.wilds_version, root_dir=self.wilds_parent,
                                     download=False, **kwargs)

    def download_wilds(self) -> None:
        """Fetch the release into ``root`` (only when its RELEASE file is absent)."""
        folder, release = self.wilds_folder, self.wilds_release
        if self.wilds_parent is None:
            raise missing_root(self.title, self.root, f"<root>/{folder}/",
                               "set data.init_args.root to where it should go")
        if self.wilds_has(release):
            return
        import wilds
        try:
            with contextlib.redirect_stdout(sys.stderr):
                wilds.get_dataset(dataset=self.wilds_name, version=self.wilds_version, root_dir=self.wilds_parent,
                                  download=True)
        except Exception:  # noqa: BLE001 - WILDS swallows download errors, then fails reading the csv; said below
            pass
        if not self.wilds_has(release):
            raise missing_root(self.title, self.root, f"<root>/{folder}/{release} after downloading",
                               "the download failed (no internet?); download it from "
                               "https://wilds.stanford.edu/downloads and extract it under <root>")

    def prepare_data(self) -> None:
        if self.download:
            self.download_wilds()

    # --- reading ----------------------------------------------------------------------------------------------
    def read(self) -> Any:
        """What the splits are built from, read from disk once (see ``load``)."""
        return self.open_wilds()

    def load(self) -> Any:
        """``read()``, cached: every split of the run shares one read of the metadata."""
        if self._loaded is None:
            self._loaded = self.read()
        return self._loaded

    @staticmethod
    def samples(dataset, split: str, groups, transform: Callable) -> WildsSamples:
        """WILDS' split ``split`` of ``dataset``; ``groups`` holds every example's group (None: all 0)."""
        idx = split_indices(dataset, split)
        return WildsSamples(dataset, idx, None if groups is None else np.asarray(groups)[idx], transform)
