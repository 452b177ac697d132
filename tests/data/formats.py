"""Tiny copies of the five benchmarks in their exact on-disk formats, written once per test session.

Each writer mirrors what the real release holds (file names, csv columns, RELEASE files, CRLF split lists) so the
tests go through the same code the users hit: ``wilds.get_dataset(..., download=False)`` for the WILDS ones.
Images carry their label and row in the pixels (``code``) where a test checks the right file is read.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TINY_MODEL = ["--model.backbone", "timm:vit_tiny_patch16_224", "--model.pretrained", "false",
              "--model.backbone_kwargs", "{depth: 1, embed_dim: 32, num_heads: 1}"]


def write_image(path: Path, size: tuple[int, int], red: int = 0, green: int = 0, fmt: str | None = None) -> None:
    """A small noisy image whose top-left 16x16 block (one JPEG MCU) codes (red, green) as 4x the value, so the code
    survives JPEG compression (values up to 63)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(red * 1000 + green)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    pixels[:16, :16] = (4 * red, 4 * green, 0)
    Image.fromarray(pixels).save(path, format=fmt)


def code(image) -> tuple[int, int]:
    """(red, green) written by write_image, read back from a PIL image (JPEG-safe)."""
    r, g, _ = image.getpixel((4, 4))
    return round(r / 4), round(g / 4)


def interpolation(transform) -> str:
    """A Resize's interpolation as a plain string ('bilinear', 'bicubic')."""
    mode = transform.interpolation
    return getattr(mode, "value", mode)


# --- Waterbirds ------------------------------------------------------------------------------------------------
# (split, y, place) rows: train groups (2y+place) 4/2/1/3, val 1 each, test 2 each.
WATERBIRDS_ROWS = ([(0, 0, 0)] * 4 + [(0, 0, 1)] * 2 + [(0, 1, 0)] * 1 + [(0, 1, 1)] * 3
                   + [(1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1)]
                   + [(2, 0, 0), (2, 0, 0), (2, 0, 1), (2, 0, 1), (2, 1, 0), (2, 1, 0), (2, 1, 1), (2, 1, 1)])


def write_waterbirds(directory: Path, wilds: bool) -> None:
    """``metadata.csv`` (img_id, img_filename, y, split, place, place_filename) + JPEGs of varying sizes."""
    directory.mkdir(parents=True)
    with open(directory / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["img_id", "img_filename", "y", "split", "place", "place_filename"])
        for i, (split, y, place) in enumerate(WATERBIRDS_ROWS):
            folder = "001.Black_footed_Albatross" if y else "014.Indigo_Bunting"
            name = f"{folder}/{folder.split('.')[1]}_{i:04d}.jpg"
            w.writerow([i + 1, name, y, split, place, f"/b/bamboo_forest/{i:08d}.jpg"])
            write_image(directory / name, (60 + 7 * i, 40 + 3 * i), red=y, green=i)
    if wilds:
        (directory / "RELEASE_v1.0.txt").write_text("v1.0\n")


@pytest.fixture(scope="session")
def waterbirds_wilds(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("waterbirds_wilds")
    write_waterbirds(root / "waterbirds_v1.0", wilds=True)
    return root


@pytest.fixture(scope="session")
def waterbirds_dro(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("waterbirds_dro")
    write_waterbirds(root / "waterbird_complete95_forest2water2", wilds=False)
    return root


# --- FMoW ------------------------------------------------------------------------------------------------------
# (split column, timestamp year, country, category index); row index = image id. The first row is from the
# Americas so WILDS' own region order (first appearance) differs from the canonical one.
FMOW_ROWS = [
    ("train", 2010, "USA", 0), ("train", 2011, "CHN", 6), ("train", 2012, "FRA", 12),
    ("seq", 2016, "USA", 3),  # sequestered: dropped by WILDS, but its row still counts for image ids
    ("train", 2009, "NGA", 61), ("train", 2008, "AUS", 38), ("train", 2012, "XKX", 34),
    ("val", 2011, "KEN", 0), ("val", 2012, "CHN", 6),                      # id_val
    ("test", 2010, "FRA", 12), ("test", 2012, "USA", 61),                  # id_test
    ("val", 2014, "NGA", 38), ("val", 2013, "AUS", 0),                     # ood_val
    ("train", 2014, "CHN", 6),                                             # in no split (train rows after 2013)
    ("test", 2016, "NGA", 0), ("test", 2017, "KEN", 6), ("test", 2016, "NGA", 12), ("test", 2016, "CHN", 0),
    ("test", 2017, "FRA", 6), ("test", 2016, "XKX", 34), ("test", 2016, "USA", 61),  # ood_test
]
COUNTRIES = [("China", "CN", "CHN", "Asia"), ("France", "FR", "FRA", "Europe"), ("Nigeria", "NG", "NGA", "Africa"),
             ("Kenya", "KE", "KEN", "Africa"), ("United States of America", "US", "USA", "Americas"),
             ("Australia", "AU", "AUS", "Oceania")]  # XKX (Kosovo) is not listed: region "Other", as in WILDS


@pytest.fixture(scope="session")
def fmow_root(tmp_path_factory) -> Path:
    """``fmow_v1.1/`` with RELEASE_v1.1.txt, rgb_metadata.csv, country_code_mapping.csv, images/rgb_img_<row>.png."""
    root = tmp_path_factory.mktemp("fmow")
    d = root / "fmow_v1.1"
    (d / "images").mkdir(parents=True)
    (d / "RELEASE_v1.1.txt").write_text("v1.1\n")
    with open(d / "country_code_mapping.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "alpha-2", "alpha-3", "country-code", "region", "sub-region"])
        for i, (name, a2, a3, region) in enumerate(COUNTRIES):
            w.writerow([name, a2, a3, 100 + i, region, ""])
    with open(d / "rgb_metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["split", "img_filename", "img_path", "category", "country_code", "cloud_cover", "timestamp",
                    "lat", "lon"])
        from wilds.datasets.fmow_dataset import categories
        for i, (split, year, country, cat) in enumerate(FMOW_ROWS):
            w.writerow([split, f"{categories[cat]}_{i}_0_rgb.jpg", f"{split}/{categories[cat]}/{categories[cat]}_{i}",
                        categories[cat], country, 0, f"{year}-06-0{1 + i % 9}T10:20:30Z", 1.5, 2.5])
            write_image(d / "images" / f"rgb_img_{i}.png", (224, 224), red=cat, green=i)
    return root


# --- Camelyon17 ------------------------------------------------------------------------------------------------
# (center, split column, tumor); WILDS moves centers 1 and 2 to OOD val / test whatever their split column says.
CAMELYON_ROWS = [(0, 0, 1), (0, 0, 0), (0, 0, 1), (0, 1, 0), (3, 0, 0), (3, 0, 1), (3, 1, 1), (4, 0, 0), (4, 1, 0),
                 (1, 0, 1), (1, 1, 0), (2, 0, 1), (2, 0, 0), (2, 1, 1)]


@pytest.fixture(scope="session")
def camelyon_root(tmp_path_factory) -> Path:
    """``camelyon17_v1.0/`` with RELEASE_v1.0.txt, metadata.csv (index column first) and 96x96 PNG patches."""
    root = tmp_path_factory.mktemp("camelyon")
    d = root / "camelyon17_v1.0"
    d.mkdir()
    (d / "RELEASE_v1.0.txt").write_text("v1.0\n")
    with open(d / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", "patient", "node", "x_coord", "y_coord", "tumor", "slide", "center", "split"])
        for i, (center, split, tumor) in enumerate(CAMELYON_ROWS):
            patient, node, x, y = f"{center * 20 + i:03d}", i % 5, 3200 + 32 * i, 21000 + 64 * i
            w.writerow([i, patient, node, x, y, tumor, center * 10 + i % 2, center, split])
            write_image(d / "patches" / f"patient_{patient}_node_{node}" /
                        f"patch_patient_{patient}_node_{node}_x_{x}_y_{y}.png", (96, 96), red=tumor, green=i)
    return root


# --- DomainNet -------------------------------------------------------------------------------------------------
# SENTRY label order is not alphabetical: airplane 0, bear 6, butterfly 36, donut 39.
DOMAINNET_LISTS = {
    ("sketch", "train"): [("airplane", 0), ("airplane", 0), ("butterfly", 36), ("butterfly", 36), ("donut", 39),
                          ("bear", 6)],
    ("sketch", "test"): [("airplane", 0), ("butterfly", 36), ("donut", 39)],
    ("real", "train"): [("bear", 6)],
    ("real", "test"): [("airplane", 0), ("bear", 6), ("donut", 39), ("butterfly", 36)],
    ("painting", "test"): [("donut", 39), ("bear", 6)],
}


def _domainnet_images(root: Path, lists: dict) -> dict:
    """Write the images of ``lists``; return {(domain, split): [(relative path, label)]}."""
    out = {}
    for (domain, split), items in lists.items():
        rows = []
        for j, (cls, label) in enumerate(items):
            rel = f"{domain}/{cls}/{domain}_{label:03d}_{split}{j:04d}.jpg"
            write_image(root / rel, (80 + 10 * j, 120 - 5 * j), red=label, green=j)
            rows.append((rel, label))
        out[(domain, split)] = rows
    return out


@pytest.fixture(scope="session")
def domainnet_root(tmp_path_factory) -> Path:
    """SENTRY layout: <root>/<domain>/<class>/*.jpg + SENTRY_splits/<domain>_<split>_mini.txt with CRLF endings."""
    root = tmp_path_factory.mktemp("domainnet")
    (root / "SENTRY_splits").mkdir()
    for (domain, split), rows in _domainnet_images(root, DOMAINNET_LISTS).items():
        text = "".join(f"{rel} {label}\r\n" for rel, label in rows)
        (root / "SENTRY_splits" / f"{domain}_{split}_mini.txt").write_bytes(text.encode())
    return root


DOMAINNET_WILDS_LISTS = {
    ("sketch", "train"): [("airplane", 0), ("butterfly", 36), ("donut", 39), ("bear", 6)],
    ("sketch", "test"): [("bear", 6), ("butterfly", 36)],
    ("real", "train"): [("bear", 6)],
    ("real", "test"): [("airplane", 0), ("donut", 39), ("butterfly", 36)],
    ("clipart", "test"): [("airplane", 0), ("bear", 6)],
}


@pytest.fixture(scope="session")
def domainnet_wilds_root(tmp_path_factory) -> Path:
    """WILDS layout: domainnet_v1.0/ with RELEASE_v1.0.txt and sentry_metadata.csv (strings quoted)."""
    root = tmp_path_factory.mktemp("domainnet_wilds")
    d = root / "domainnet_v1.0"
    d.mkdir()
    (d / "RELEASE_v1.0.txt").write_text("v1.0\n")
    written = _domainnet_images(d, DOMAINNET_WILDS_LISTS)
    with open(d / "sentry_metadata.csv", "w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC)
        w.writerow(["image_path", "domain", "split", "category", "y"])
        for (domain, split), rows in written.items():
            for rel, label in rows:
                w.writerow([rel, domain, split, rel.split("/")[1], label])
    return root


# --- Living-17 (ImageNet folders) ------------------------------------------------------------------------------
DISTRACTOR = "n01440764"  # tench: an ImageNet class outside Living-17, must be ignored


@pytest.fixture(scope="session")
def imagenet_root(tmp_path_factory) -> Path:
    """ILSVRC-2012 class folders: one JPEG per Living-17 source class in train/, one per class (68) in val/."""
    from freeze_embed.data.living17 import superclasses
    root = tmp_path_factory.mktemp("imagenet")
    for label, s in enumerate(superclasses()):
        for k, wnid in enumerate(s["source"]):
            write_image(root / "train" / wnid / f"{wnid}_{k}.JPEG", (70, 50), red=label, green=k, fmt="JPEG")
            write_image(root / "val" / wnid / f"ILSVRC2012_val_{label:05d}{k}.JPEG", (50, 70), red=label, green=k,
                        fmt="JPEG")
        for k, wnid in enumerate(s["target"]):
            write_image(root / "val" / wnid / f"ILSVRC2012_val_{label:05d}{k + 2}.JPEG", (64, 64), red=label,
                        green=k + 2, fmt="JPEG")
    for split in ("train", "val"):
        for k in range(2):
            write_image(root / split / DISTRACTOR / f"{DISTRACTOR}_{k}.JPEG", (40, 40), red=63, fmt="JPEG")
    return root


def copy_tree(src: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(src, dst)
    return dst


def fit_args(config: str, root: Path, tmp_path: Path) -> list[str]:
    """``train.py fit`` on a fixture: tiny ViT, one batch of each loader (fast_dev_run), CPU, no workers."""
    return ["fit", "--config", config, *TINY_MODEL, "--data.init_args.root", str(root),
            "--data.init_args.batch_size", "4", "--data.init_args.num_workers", "0",
            "--trainer.fast_dev_run", "true", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.default_root_dir", str(tmp_path), "--run_dir", str(tmp_path / "run")]


# --- CIFAR-10 -> STL-10 (torchvision's cifar-10-batches-py/ and stl10_binary/) ----------------------------------
CIFAR_BATCH = 4  # images per data_batch_<i> (10,000 in the release): 20 training images
CIFAR_TEST = 6
CIFAR_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
STL_LABELS = [1, 2, 3, 8, 7, 3, 8, 10]  # test_y.bin as stored (1-based); 8 = monkey


def cifar_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 N x 32 x 32 x 3 images, labels) written to the ``train`` batches or ``test_batch``."""
    n = 5 * CIFAR_BATCH if split == "train" else CIFAR_TEST
    images = np.random.default_rng(1 if split == "train" else 2).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return images, (np.arange(n) * 3 + (split == "test")) % 10


def stl_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(uint8 N x 96 x 96 x 3 images, 1-based STL-10 labels) written to test_X.bin / test_y.bin."""
    images = np.random.default_rng(3).integers(0, 256, (len(STL_LABELS), 96, 96, 3), dtype=np.uint8)
    return images, np.asarray(STL_LABELS, dtype=np.uint8)


def _cifar_batch(path: Path, images: np.ndarray, labels, name: bytes) -> None:
    """A python pickle like the release's: bytes keys (Python 2 str), rows of R, G and B planes of 1024 bytes."""
    import pickle
    entry = {b"batch_label": name, b"labels": [int(y) for y in labels],
             b"data": images.transpose(0, 3, 1, 2).reshape(len(images), 3072),
             b"filenames": [b"img_%05d.png" % i for i in range(len(images))]}
    path.write_bytes(pickle.dumps(entry, protocol=2))


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    """``cifar-10-batches-py/`` (data_batch_1..5, test_batch, batches.meta) and ``stl10_binary/`` test files."""
    import pickle
    root = tmp_path_factory.mktemp("cifar_stl")
    d = root / "cifar-10-batches-py"
    d.mkdir()
    images, labels = cifar_arrays("train")
    for b in range(5):
        rows = slice(b * CIFAR_BATCH, (b + 1) * CIFAR_BATCH)
        _cifar_batch(d / f"data_batch_{b + 1}", images[rows], labels[rows], b"training batch %d of 5" % (b + 1))
    _cifar_batch(d / "test_batch", *cifar_arrays("test"), b"testing batch 1 of 1")
    meta = {b"num_cases_per_batch": CIFAR_BATCH, b"label_names": CIFAR_NAMES, b"num_vis": 3072}
    (d / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    s = root / "stl10_binary"
    s.mkdir()
    images, labels = stl_arrays()
    (s / "test_X.bin").write_bytes(images.transpose(0, 3, 2, 1).tobytes())  # per image (3, W, H): column-major
    (s / "test_y.bin").write_bytes(labels.tobytes())
    return root
