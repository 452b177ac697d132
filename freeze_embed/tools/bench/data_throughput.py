"""Data-loading throughput against the decode-only limit and a GPU's step rate: how many workers feed one GPU.

    python -m freeze_embed.tools.bench.data_throughput                       # the benchmarks' file formats
    python -m freeze_embed.tools.bench.data_throughput --config configs/data/waterbirds.yaml \
        --config configs/backbone/clip_vit_b16.yaml --data.root /data --workers 8    # a dataset on disk

Without ``--config`` it writes files in each benchmark's format into a temporary folder (JPEGs of ImageNet's typical
500x375 size at quality 90 for Living-17 and DomainNet, 224x224 PNGs for FMoW, 96x96 PNGs for Camelyon17, and
2048x1536 JPEG photos as a user's own data may be; smooth content plus noise, so file sizes are realistic) and
reads them through the real path: ``ImageSamples`` + the paper's training and test transforms
(:mod:`freeze_embed.data.transforms`) + ``ShiftDataModule.loader``'s DataLoader. One row per format, side by side:
decode-only images/s (PIL open + convert to RGB in one process: what one worker cannot beat), the loader's images/s
per worker and its share of that limit, and the workers one GPU needs: the GPU's training images/s (``GPU_RATES``)
over the loader's per-worker rate. ``--listing N`` instead times how long ``ImageFolders`` takes to list and label N
files. Every timing is the best of ``--passes`` passes after a warm-up pass (page cache, worker start).
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from typing import Optional

import numpy as np
from PIL import Image

from freeze_embed.data.base import ShiftDataModule
from freeze_embed.data.images import ImageSamples, load_rgb
from freeze_embed.data.transforms import paper_transform
from freeze_embed.errors import run_command
from freeze_embed.files import atomic_write
from freeze_embed.run.config import build_data

# Training images/s of the paper's models on one GPU. The paper gives no step rate (its profiling, Table 4, is memory
# on a Titan-X); these are timm's published figures for the same architectures at 224 px, mixed precision, on one
# RTX 3090 (about twice a Titan-X): huggingface/pytorch-image-models, results/benchmark-train-amp-nchw-pt112-cu113-
# rtx3090.csv (vit_base_patch16_224, vit_large_patch14_224, convnext_base, resnetv2_50x1_bit_distilled). Newer GPUs
# step faster (an A100 about 2x, an H100 more): scale the workers needed with them.
GPU_RATES = {"ViT-B/16": 390.86, "ViT-L/14": 85.27, "ConvNeXt-B": 336.98, "BiT-R50": 587.0}

# name: (transforms of data.transforms, file format, size, decode_min_side)
FORMATS = {
    "living17": ("living17", "JPEG", (500, 375), None),  # ImageNet's JPEGs (BREEDS)
    "domainnet": ("domainnet", "JPEG", (500, 375), None),
    "fmow": ("fmow", "PNG", (224, 224), None),  # WILDS' 224x224 RGB PNGs
    "camelyon17": ("camelyon17", "PNG", (96, 96), None),  # WILDS' 96x96 PNG patches
    "photos": ("living17", "JPEG", (2048, 1536), None),  # a user's camera photos, Living-17's transforms
    "photos_draft": ("living17", "JPEG", (2048, 1536), 256),  # the same, decode_min_side 256 (an option)
}


def write_images(folder: str, fmt: str, size: tuple[int, int], n: int, seed: int = 0) -> list[str]:
    """``n`` files of ``size`` (width, height) in ``fmt``: smooth colour fields plus noise, as photos compress."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for k in range(n):
        coarse = rng.integers(0, 255, (max(size[1] // 25, 2), max(size[0] // 25, 2), 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize(size, Image.BICUBIC), dtype=np.int16)
        noisy = (smooth + rng.integers(-12, 12, smooth.shape)).clip(0, 255).astype(np.uint8)
        path = os.path.join(folder, f"{k:05d}.{'jpg' if fmt == 'JPEG' else 'png'}")
        with atomic_write(path) as f:
            Image.fromarray(noisy).save(f, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        paths.append(path)
    return paths


class Files(ShiftDataModule):
    """A list of files read as a benchmark reads them: its ``ImageSamples``, its transforms, the common loader."""

    def __init__(self, paths: list[str], transforms: str, decode_min_side: Optional[int] = None, **kwargs):
        super().__init__(decode_min_side=decode_min_side, **kwargs)
        self.paths, self.transforms = paths, transforms

    def make_split(self, name: str, train: bool) -> ImageSamples:
        return ImageSamples(self.paths, np.zeros(len(self.paths), dtype=np.int64), None,
                            paper_transform(self.transforms, train, self.mean, self.std))


def best_rate(run, passes: int) -> float:
    """Items/s of ``run()`` (which returns its item count): the best of ``passes`` after one warm-up."""
    best = 0.0
    for p in range(passes + 1):
        start = time.perf_counter()
        n = run()
        if p > 0:
            best = max(best, n / (time.perf_counter() - start))
    return best


def loader_rate(loader, passes: int) -> float:
    return best_rate(lambda: sum(len(x) for x, _, _ in loader), passes)


def decode_rate(paths: list[str], passes: int, min_side: Optional[int] = None) -> float:
    return best_rate(lambda: len([load_rgb(p, min_side) for p in paths]), passes)


def measure(dm, passes: int) -> tuple[float, int]:
    """(images/s, images per pass) of a datamodule's training loader."""
    loader = dm.train_dataloader()
    return loader_rate(loader, passes), len(loader.dataset)


def formats_table(names: list[str], n: int, workers: int, batch_size: int, passes: int) -> list[dict]:
    """One row per format: file size, decode-only, train and eval loader images/s per worker, workers per GPU."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            transforms, fmt, size, min_side = FORMATS[name]
            count = max(n // 4, 2) if size[0] > 1000 else n  # big photos: fewer
            paths = write_images(os.path.join(tmp, name), fmt, size, count)
            dm = Files(paths, transforms, min_side, batch_size=batch_size, num_workers=workers)
            train = loader_rate(dm.train_dataloader(), passes) / max(workers, 1)
            evaluation = loader_rate(dm.loader(dm.split("eval"), shuffle=False), passes) / max(workers, 1)
            decode = decode_rate(paths, passes, min_side)
            rows.append({"dataset": name, "file": f"{fmt} {size[0]}x{size[1]}",
                         "kB": np.mean([os.path.getsize(p) for p in paths]) / 1024, "decode": decode,
                         "train": train, "eval": evaluation,
                         "workers": {m: math.ceil(r / train) for m, r in GPU_RATES.items()}})
    return rows


def print_table(rows: list[dict], workers: int, batch_size: int) -> None:
    models = list(GPU_RATES)
    print(f"images/s per worker ({workers or 'no'} worker processes, batch {batch_size}, {os.cpu_count()} CPUs); "
          "decode = PIL open + RGB in one process, the limit; x = share of it")
    print(f"{'dataset':<13}{'file':<16}{'kB':>5}{'decode':>8}{'train':>8}{'x':>6}{'eval':>8}{'x':>6}   "
          "workers per GPU for " + " ".join(f"{m:>10}" for m in models))
    for r in rows:
        print(f"{r['dataset']:<13}{r['file']:<16}{r['kB']:>5.0f}{r['decode']:>8.0f}{r['train']:>8.0f}"
              f"{r['train'] / r['decode']:>6.2f}{r['eval']:>8.0f}{r['eval'] / r['decode']:>6.2f}   "
              f"{'':<20}" + " ".join(f"{r['workers'][m]:>10d}" for m in models))
    print("GPU training images/s: " + ", ".join(f"{m} {v:.0f}" for m, v in GPU_RATES.items())
          + " (timm's RTX 3090 AMP benchmark; see GPU_RATES)")


def listing_seconds(n: int, classes: int = 100) -> float:
    """Seconds ``ImageFolders`` takes to list, label and split ``n`` files in ``classes`` class folders."""
    from freeze_embed.data import ImageFolders
    with tempfile.TemporaryDirectory() as tmp:
        made = set()
        for i in range(n):  # a nested subfolder per 100 files of a class, as photo dumps often are
            folder = os.path.join(tmp, f"class_{i % classes:03d}", f"part_{i // (classes * 100)}")
            if folder not in made:
                os.makedirs(folder, exist_ok=True)
                made.add(folder)
            open(os.path.join(folder, f"{i:07d}.jpg"), "wb").close()
        start = time.perf_counter()
        ImageFolders(train=tmp)
        return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     epilog="Any other argument goes to train.py's parser, e.g. --data.root /data.")
    parser.add_argument("--config", action="append", default=[],
                        help="configs/data/*.yaml (and a backbone config): time that dataset on disk instead")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=list(FORMATS))
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers (figures are per worker)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--images", type=int, default=256, help="files per format (fewer of the big photos)")
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--listing", type=int, default=0, metavar="N",
                        help="time listing N files with ImageFolders instead (e.g. 100000)")
    args, overrides = parser.parse_known_args(argv)
    if args.listing:
        seconds = listing_seconds(args.listing)
        print(f"ImageFolders listed and labelled {args.listing:,d} files in {seconds:.2f} s "
              f"({args.listing / seconds:,.0f} files/s)")
    elif args.config:
        overrides += ["--data.num_workers", str(args.workers), "--data.batch_size", str(args.batch_size)]
        dm = build_data(args.config, overrides)
        rate, n = measure(dm, args.passes)
        print(f"{type(dm).__name__}: {rate:.0f} images/s with the paper's training transforms "
              f"({n} images/pass, batch {args.batch_size}, {args.workers} workers, {os.cpu_count()} CPUs)")
    else:
        rows = formats_table(args.formats, args.images, args.workers, args.batch_size, args.passes)
        print_table(rows, args.workers, args.batch_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command(main))
