"""Hugging Face ``datasets`` as image sets: ``hf:/path/to/saved_dataset[:split]`` (``save_to_disk``) or
``hf:imagefolder:/dir[:split]`` (``load_dataset("imagefolder", data_dir=...)``). The class names come from the label
column's ``ClassLabel`` feature (its values otherwise)."""
from __future__ import annotations

import os
from typing import Optional

from PIL import Image

from freeze_embed.data.errors import DataFormatError, DataRootError, ImageReadError
from freeze_embed.data.images import ImageSamples, to_rgb

PREFIX = "hf:"


def is_hf(source: str) -> bool:
    return str(source).startswith(PREFIX)


def _datasets():
    try:
        import datasets
    except ImportError as err:
        raise DataRootError("Reading hf: sets needs Hugging Face datasets: pip install 'freeze-embed[hf]' "
                            "(or pip install datasets).") from err
    return datasets


def open_hf(source: str):
    """The ``datasets.Dataset`` that ``source`` names."""
    datasets = _datasets()
    rest = str(source)[len(PREFIX):]
    loader = "disk"
    if rest.startswith("imagefolder:"):
        loader, rest = "imagefolder", rest[len("imagefolder:"):]
    path, split = rest, None
    head, sep, tail = rest.rpartition(":")
    if sep and head and "/" not in tail and not os.path.exists(rest):
        path, split = head, tail
    path = os.path.expanduser(path)
    if not os.path.isdir(path):
        raise DataRootError(f"Hugging Face dataset '{source}' not found: '{path}' is not a folder (give "
                            "hf:/folder/of/save_to_disk[:split] or hf:imagefolder:/folder[:split]).")
    if loader == "imagefolder":
        ds = datasets.load_dataset("imagefolder", data_dir=path)
    else:
        try:
            ds = datasets.load_from_disk(path)
        except FileNotFoundError as err:
            raise DataRootError(f"'{path}' is not a dataset saved with save_to_disk ({err}).") from err
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds)
        if split is None and len(splits) == 1:
            split = splits[0]
        if split not in ds:
            raise DataRootError(f"Hugging Face dataset '{source}' has splits {splits}: name one as "
                                f"hf:{path}:<split>.")
        ds = ds[split]
    elif split is not None:
        raise DataRootError(f"Hugging Face dataset '{source}' has no splits: drop ':{split}'.")
    return ds


def hf_labels(ds, source: str, label_column: str) -> tuple[list[str], Optional[list[str]]]:
    """(one class name per example, the label feature's names in label order or None)."""
    if label_column not in ds.column_names:
        raise DataFormatError(f"Hugging Face dataset '{source}' has no column '{label_column}' (columns "
                              f"{ds.column_names}): set data.init_args.label_column.")
    feature = ds.features[label_column]
    values = ds[label_column]
    names = getattr(feature, "names", None)
    if names is not None:
        return [names[v] for v in values], list(names)
    return [str(v) for v in values], None


class HFSamples(ImageSamples):
    """``ImageSamples`` whose images are one column of a ``datasets.Dataset`` (rows ``paths`` index it)."""

    def __init__(self, ds, rows, labels, groups=None, transform=None, image_column: str = "image", source=""):
        super().__init__(rows, labels, groups, transform)
        self.ds, self.image_column, self.source = ds, image_column, source

    def describe_item(self, i: int) -> str:
        return f"{self.source} row {self.paths[i]}"

    def load(self, i: int) -> Image.Image:
        try:
            image = self.ds[int(self.paths[i])][self.image_column]
            if not isinstance(image, Image.Image):
                raise TypeError(f"column '{self.image_column}' holds {type(image).__name__}, not an image")
            return to_rgb(image)
        except Exception as err:
            raise ImageReadError(f"Cannot read the image of {self.describe_item(i)} ({type(err).__name__}: "
                                 f"{err}).") from err
