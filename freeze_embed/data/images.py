"""Reading the benchmarks' image files: ``(image, label, group)`` samples whose labels are known before any read.

An unreadable image fails naming its file (never a bare PIL traceback), also inside DataLoader workers.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from freeze_embed.data.errors import ImageReadError


def to_rgb(im: Image.Image) -> Image.Image:
    """Any mode as 8-bit RGB: grayscale, palette, RGBA, CMYK as PIL converts them; 16-bit and 32-bit integer
    grayscale scaled from 0-65535 (PIL's own ``convert`` would clip them to 0-255, i.e. nearly all white)."""
    if im.mode.startswith("I"):
        im = Image.fromarray((np.clip(np.asarray(im, dtype=np.float64), 0, 65535) / 257).round().astype(np.uint8))
    elif im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        arr = arr * 255 if arr.size and arr.max() <= 1 else arr
        im = Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8))
    return im.convert("RGB")


def load_rgb(path: str, min_side: Optional[int] = None) -> Image.Image:
    """Open an image as RGB, or raise ImageReadError naming the file.

    ``min_side``: a JPEG is decoded by libjpeg at the smallest of 1/8, 1/4, 1/2 scale whose shorter side is still at
    least ``min_side`` (a 2048x1536 photo at 1/4, 512x384, for ``min_side=256``): about 3x faster to decode, but the
    pixels differ slightly from decoding in full and then resizing, so it is an option (``data.decode_min_side``), off
    by default. Other formats and smaller JPEGs decode in full.
    """
    try:
        with Image.open(path) as im:
            if min_side and im.format == "JPEG":
                im.draft(None, (min_side, min_side))
            return to_rgb(im)  # convert() loads the pixels, so truncated files fail here, not later
    except FileNotFoundError as err:
        raise ImageReadError(f"Image file '{path}' is missing (listed in the split/metadata but not on disk); "
                             "re-extract the dataset.") from err
    except Exception as err:
        raise ImageReadError(f"Cannot read image '{path}' ({type(err).__name__}: {err}): the file is corrupt or "
                             "not an image; re-download or re-extract it.") from err


class ImageSamples(Dataset):
    """``(transform(image), label, group)`` for a list of image files.

    Labels and groups are tensors known before any image is opened, so ``describe`` and the metrics' weights cost
    no image reads. Subclasses read images from elsewhere by overriding ``load``. ``decode_min_side``: see
    :func:`load_rgb` (the datamodule sets it from ``data.decode_min_side``).
    """

    decode_min_side: Optional[int] = None

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
        return load_rgb(self.paths[i], self.decode_min_side)

    def __getitem__(self, i: int):
        image = self.load(i)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[i]), int(self.groups[i])
