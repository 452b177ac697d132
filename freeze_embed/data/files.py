"""What every benchmark loader shares: clear errors for a wrong root or a bad file, image reading, downloads.

A run that dies after an hour on a missing folder, or trains on a silently wrong label, wastes a GPU day; so each
loader checks its layout before touching a library and names the file when an image cannot be read.
"""
from __future__ import annotations

import contextlib
import os
import sys
import warnings
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import FreezeEmbedError


class DataRootError(FreezeEmbedError, FileNotFoundError):
    """The data root is missing or has the wrong layout; the message names the layout and how to get the data."""


class DataFormatError(FreezeEmbedError, ValueError):
    """A metadata or split file does not say what it should (e.g. a label that disagrees with its class folder)."""


class ImageReadError(FreezeEmbedError, OSError):
    """An image file is missing, truncated or not an image; the message names the file."""


def missing_root(dataset: str, root: Optional[str], layout: str, how: str) -> DataRootError:
    """One sentence: what was looked for where, and how to get it."""
    where = f"'{root}'" if root else "no root (set data.init_args.root)"
    return DataRootError(f"{dataset} data not found at {where}: expected {layout}; {how}.")


def load_rgb(path: str) -> Image.Image:
    """Open an image as RGB, or raise ImageReadError naming the file (never a bare PIL traceback)."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")  # convert() loads the pixels, so truncated files fail here, not later
    except FileNotFoundError as err:
        raise ImageReadError(f"Image file '{path}' is missing (listed in the split/metadata but not on disk); "
                             "re-extract the dataset.") from err
    except Exception as err:
        raise ImageReadError(f"Cannot read image '{path}' ({type(err).__name__}: {err}): the file is corrupt or "
                             "not an image; re-download or re-extract it.") from err


class ImageSamples(Dataset):
    """``(transform(image), label, group)`` for a list of image files.

    Labels and groups are tensors known before any image is opened, so ``describe`` and the metrics' weights cost
    no image reads.
    """

    def __init__(self, paths: Sequence[str], labels, groups=None, transform: Optional[Callable] = None):
        self.paths = list(paths)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.groups = (torch.zeros_like(self.labels) if groups is None
                       else torch.as_tensor(np.asarray(groups), dtype=torch.long))
        self.transform = transform
        if not (len(self.paths) == len(self.labels) == len(self.groups)):
            raise ValueError("paths, labels and groups must have the same length")

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, i: int) -> Image.Image:
        return load_rgb(self.paths[i])

    def __getitem__(self, i: int):
        image = self.load(i)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[i]), int(self.groups[i])


class WildsSamples(ImageSamples):
    """A split of a WILDS dataset, read through the dataset's own ``get_input`` (the real WILDS code path).

    WILDS' ``get_subset``/``eval`` are not used: transforms and metrics are ours (``eval`` needs torch_scatter).
    """

    def __init__(self, dataset, indices, groups, transform: Optional[Callable] = None):
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


def wilds_parent(root: Optional[str], folder: str) -> Optional[str]:
    """WILDS wants the folder that *contains* ``<name>_v<version>``; accept that folder itself too."""
    if root is None:
        return None
    root = os.path.abspath(os.path.expanduser(str(root)))
    return os.path.dirname(root) if os.path.basename(root) == folder else root


def missing_files(directory: str, names: Sequence[str]) -> list[str]:
    return [n for n in names if not os.path.exists(os.path.join(directory, n))]


def open_wilds(name: str, version: str, root: Optional[str], required: Sequence[str], title: str, **kwargs):
    """``wilds.get_dataset(name, root_dir=..., download=False)`` after checking the on-disk layout ourselves.

    WILDS' own errors for a wrong root are a stack trace from pandas or a hint to pass ``download=True``; this
    raises one DataRootError instead.
    """
    folder = f"{name}_v{version}"
    parent = wilds_parent(root, folder)
    data_dir = os.path.join(parent, folder) if parent else None
    needed = [f"RELEASE_v{version}.txt", *required]
    if data_dir is None or not os.path.isdir(data_dir) or missing_files(data_dir, needed):
        raise missing_root(title, root, f"<root>/{folder}/ with {', '.join(needed)} (the WILDS release)",
                           f"set data.init_args.download: true to fetch it with the wilds package, or download it "
                           f"from https://wilds.stanford.edu/downloads and extract it under <root>")
    import wilds
    # WILDS prints notes and warns about its own internals: keep stdout for results (describe --json), drop the noise
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="wilds")
        return wilds.get_dataset(dataset=name, version=version, root_dir=parent, download=False, **kwargs)


def download_wilds(name: str, version: str, root: Optional[str], title: str, **kwargs) -> None:
    """Fetch a WILDS dataset into ``root`` (only when its RELEASE file is absent)."""
    folder = f"{name}_v{version}"
    parent = wilds_parent(root, folder)
    if parent is None:
        raise missing_root(title, root, f"<root>/{folder}/", "set data.init_args.root to where it should go")
    if os.path.exists(os.path.join(parent, folder, f"RELEASE_v{version}.txt")):
        return
    import wilds
    try:
        with contextlib.redirect_stdout(sys.stderr):
            wilds.get_dataset(dataset=name, version=version, root_dir=parent, download=True, **kwargs)
    except Exception:  # WILDS swallows download errors and then fails reading the csv; we say what happened below
        pass
    if not os.path.exists(os.path.join(parent, folder, f"RELEASE_v{version}.txt")):
        raise missing_root(title, root, f"<root>/{folder}/RELEASE_v{version}.txt after downloading",
                           "the download failed (no internet?); download it from https://wilds.stanford.edu/downloads "
                           "and extract it under <root>")


def download(url: str, directory: str, extract: bool = False) -> None:
    """Fetch ``url`` into ``directory`` (and unpack an archive there) with torchvision's downloader."""
    from torchvision.datasets.utils import download_and_extract_archive, download_url
    os.makedirs(directory, exist_ok=True)
    if extract:
        download_and_extract_archive(url, download_root=directory, remove_finished=True)
    else:
        download_url(url, directory)
