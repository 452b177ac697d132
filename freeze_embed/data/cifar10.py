"""CIFAR-10 -> STL-10 (Table 6): train on CIFAR-10; ID = CIFAR-10 test, OOD = STL-10 test.

STL-10's test images are relabelled into CIFAR-10's classes and its monkey class, which CIFAR-10 lacks, is dropped,
as in the authors' ``unlabeled_extrapolation/datasets/stl_cifar_style.py``. CIFAR-10 has no validation split: the
authors selected on ``cifar10-test``, a test set; here ``id_val`` is a fixed, seeded random subset of ``val_size``
CIFAR-10 training images held out from ``train``, and ``id_val_from: test`` gives the authors' choice back.

Reads the releases torchvision downloads, with no MD5 check (files are checked for their format instead):
``<root>/cifar-10-batches-py/`` (python pickles ``data_batch_1..5``, ``test_batch``, ``batches.meta``) and
``<root>/stl10_binary/`` (``test_X.bin``: uint8 3x96x96 images stored column-major; ``test_y.bin``: labels 1-10).
"""
from __future__ import annotations

import contextlib
import os
import pickle
import sys

import numpy as np
from PIL import Image

from freeze_embed.errors import FreezeEmbedError
from freeze_embed.data.base import ShiftDataModule
from freeze_embed.data.errors import DataFormatError, missing_files, missing_root
from freeze_embed.data.images import ImageSamples
from freeze_embed.data.transforms import paper_transform

TITLE = "CIFAR-10 -> STL-10"
CIFAR_DIR, STL_DIR = "cifar-10-batches-py", "stl10_binary"
CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_FILES = [*CIFAR_TRAIN, "test_batch", "batches.meta"]
STL_FILES = ["test_X.bin", "test_y.bin"]
STL_SHAPE = (3, 96, 96)
# STL-10 label (0-based) -> CIFAR-10 label; -1 = monkey, dropped (stl_to_cifar_indices in stl_cifar_style.py)
STL_TO_CIFAR = np.array([0, 2, 1, 3, 4, 5, 7, -1, 8, 9])
ID_VAL_FROM = ("train_holdout", "test")
LAYOUT = (f"<root>/{CIFAR_DIR}/ with {', '.join(CIFAR_FILES)} and <root>/{STL_DIR}/ with {', '.join(STL_FILES)} "
          "(the python version of CIFAR-10 and the binary version of STL-10)")
MANUAL = ("download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and "
          "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz and extract both under <root>")
HOW = f"set data.init_args.download: true to fetch both with torchvision, or {MANUAL}"


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _BatchUnpickler(pickle.Unpickler):
    """Builds numpy arrays and plain containers only: a file that asks for anything else (a function to call) is
    refused before it runs ("restricting globals", Python's pickle documentation)."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}  # protocol 2's bytes from Python 3

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a CIFAR-10 batch never does, and "
                                         "unpickling it could run code")
        import codecs
        return {"_reconstruct": _numpy_reconstruct(), "ndarray": np.ndarray, "dtype": np.dtype,
                "encode": codecs.encode}[name]


def unpickle(path: str) -> dict:
    """A CIFAR-10 python pickle as a dict with str keys (the release's Python 2 pickles give bytes keys), read by
    an unpickler that builds numpy arrays and nothing else."""
    try:
        with open(path, "rb") as f:
            entry = _BatchUnpickler(f, encoding="bytes").load()  # bytes, as the CIFAR-10 page says for Python 3
        return {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
    except Exception as err:
        raise DataFormatError(f"{path} is not a CIFAR-10 python pickle ({type(err).__name__}: {err}); "
                              "re-download it.") from err


def read_cifar(directory: str, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images N x 32 x 32 x 3, int64 labels) of the batches ``names``."""
    images, labels = [], []
    for name in names:
        path, entry = os.path.join(directory, name), unpickle(os.path.join(directory, name))
        data, y = np.asarray(entry.get("data")), np.asarray(entry.get("labels", []), dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(y) != len(data) \
                or not np.isin(y, range(10)).all():
            raise DataFormatError(f"{path} should hold 'data' (uint8, N x 3072) and N 'labels' in 0-9; got data "
                                  f"{data.dtype} {data.shape} and {len(y)} labels: re-download CIFAR-10.")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # rows are R, G, B planes -> HWC
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def read_stl_test(directory: str) -> tuple[np.ndarray, np.ndarray]:
    """STL-10 test images (uint8 N x 96 x 96 x 3) with CIFAR-10 labels, monkeys dropped."""
    x_path, y_path = (os.path.join(directory, f) for f in STL_FILES)
    y, pixels = np.fromfile(y_path, dtype=np.uint8), np.fromfile(x_path, dtype=np.uint8)
    if not np.isin(y, range(1, 11)).all():
        raise DataFormatError(f"{y_path} holds labels outside 1-10: not STL-10's test_y.bin; re-download STL-10.")
    if len(y) == 0 or pixels.size != len(y) * int(np.prod(STL_SHAPE)):
        raise DataFormatError(f"{x_path} holds {pixels.size} bytes, not the {len(y)} 3x96x96 images that "
                              f"{STL_FILES[1]} labels: the file is truncated or not STL-10's; re-download STL-10.")
    labels = STL_TO_CIFAR[y.astype(np.int64) - 1]
    keep = labels >= 0
    # each image is stored column-major: (3, W, H), read as torchvision and stl_cifar_style.py do, then HWC
    images = pixels.reshape(-1, *STL_SHAPE).transpose(0, 3, 2, 1)[keep]
    return np.ascontiguousarray(images), labels[keep]


class ArraySamples(ImageSamples):
    """``(transform(image), label, 0)`` for rows ``indices`` of an in-memory uint8 N x H x W x 3 array."""

    def __init__(self, images: np.ndarray, indices, labels: np.ndarray, transform=None):
        self.images, self.indices = images, np.asarray(indices, dtype=np.int64)
        super().__init__([None] * len(self.indices), labels[self.indices], None, transform)

    def load(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[self.indices[i]])


class CIFAR10(ShiftDataModule):
    """CIFAR-10 -> STL-10 (Table 6); ID = ``id_test`` accuracy (CIFAR-10 test), OOD = ``ood_test`` (STL-10 test).

    Args:
        val_size: CIFAR-10 training images held out as ``id_val`` (CIFAR-10 has no validation split).
        val_seed: seed of the held-out subset (a fixed random subset, the same on every run).
        id_val_from: ``train_holdout`` (default), or ``test``: ``id_val`` is the CIFAR-10 test set and ``train`` all
            50,000 training images, the authors' choice. That selects on a test set; for exact replication only.
    """

    num_classes = 10
    eval_names = ("id_val", "id_test", "ood_test")
    id_metric = "id_test/acc"
    # batches.meta's label_names, which are also CLIP's CIFAR10 classes (openai/CLIP data/prompts.md)
    class_names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    prompt_templates = "cifar10"
    paper_epochs = 20  # epochs: 20 in the authors' configs/adaptation/cifar_stl.yaml

    def __init__(self, val_size: int = 5000, val_seed: int = 0, id_val_from: str = "train_holdout", **kwargs):
        super().__init__(**kwargs)
        if id_val_from not in ID_VAL_FROM:
            raise FreezeEmbedError(f"id_val_from must be one of {', '.join(ID_VAL_FROM)}, not '{id_val_from}'.")
        self.val_size, self.val_seed, self.id_val_from = int(val_size), int(val_seed), id_val_from
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _dir(self, folder: str, files: list[str]) -> str:
        directory = os.path.join(self.root_dir, folder) if self.root_dir else None
        if directory is None or missing_files(directory, files):
            raise missing_root(TITLE, self.root, LAYOUT, HOW)
        return directory

    def prepare_data(self) -> None:
        if not self.download:
            return
        try:
            self._dir(CIFAR_DIR, CIFAR_FILES)
            self._dir(STL_DIR, STL_FILES)
        except FileNotFoundError:
            if not self.root:
                raise
            from torchvision import datasets
            try:
                with contextlib.redirect_stdout(sys.stderr):  # keep stdout for results (describe --json)
                    datasets.CIFAR10(self.root_dir, train=True, download=True)
                    datasets.STL10(self.root_dir, split="test", download=True)
            except Exception as err:
                raise missing_root(TITLE, self.root, LAYOUT,
                                   f"the download failed ({type(err).__name__}; no internet?): {MANUAL}") from err

    def arrays(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) of ``cifar_train``, ``cifar_test`` or ``stl_test``, read once."""
        if part not in self._arrays:
            if part == "stl_test":
                self._arrays[part] = read_stl_test(self._dir(STL_DIR, STL_FILES))
            else:
                directory = self._dir(CIFAR_DIR, CIFAR_FILES)
                meta = os.path.join(directory, "batches.meta")
                if len(unpickle(meta).get("label_names", [])) != 10:
                    raise DataFormatError(f"{meta} lacks the 10 'label_names' of CIFAR-10: re-download CIFAR-10.")
                self._arrays[part] = read_cifar(directory, CIFAR_TRAIN if part == "cifar_train" else ["test_batch"])
        return self._arrays[part]

    def holdout(self) -> tuple[np.ndarray, np.ndarray]:
        """(train indices, id_val indices) into the CIFAR-10 training set, both sorted."""
        n = len(self.arrays("cifar_train")[1])
        if self.id_val_from == "test":
            return np.arange(n), np.arange(0)
        if not 0 < self.val_size < n:
            raise FreezeEmbedError(f"val_size must be between 1 and {n - 1} (the CIFAR-10 training set has {n} "
                                   f"images), not {self.val_size}.")
        order = np.random.default_rng(self.val_seed).permutation(n)
        return np.sort(order[self.val_size:]), np.sort(order[:self.val_size])

    def make_split(self, name: str, train: bool):
        tf = paper_transform("cifar10", train, self.mean, self.std)
        if name in ("train", "id_val") and not (name == "id_val" and self.id_val_from == "test"):
            images, labels = self.arrays("cifar_train")
            return ArraySamples(images, self.holdout()[name == "id_val"], labels, tf)
        part = {"id_val": "cifar_test", "id_test": "cifar_test", "ood_test": "stl_test"}[name]
        images, labels = self.arrays(part)
        return ArraySamples(images, np.arange(len(labels)), labels, tf)
