"""Data-loading throughput (images/s) with the paper's training transforms, to check the loader keeps a GPU fed.

    python -m freeze_embed.tools.bench.data_throughput                          # synthetic Living-17, 2 workers
    python -m freeze_embed.tools.bench.data_throughput --config configs/data/waterbirds.yaml \
        --config configs/backbone/clip_vit_b16.yaml --data.root /data --workers 8

Without ``--config`` it writes a synthetic ImageNet-style Living-17 tree (JPEGs of ImageNet's typical 500x375 size,
smooth content so file sizes are realistic, ~60-100 kB) into a temporary folder. ``--listing N`` instead times how
long ``ImageFolders`` takes to list and label N files (empty ones, 100 class folders: listing, no decoding). The
first pass warms the page cache and starts the workers; the reported number is the best of the timed passes. The
datamodule is built by ``train.py``'s parser (:func:`freeze_embed.run.config.build_data`), so its normalisation is the
backbone's.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from PIL import Image

from freeze_embed.run.config import build_data
from freeze_embed.run.methods import CONFIGS


def synthetic_imagenet(root: str, per_class: int, size=(500, 375), seed: int = 0) -> None:
    """``<root>/train/<wnid>/*.JPEG`` for Living-17's 34 source classes (only the training set is timed)."""
    from freeze_embed.data.living17 import wnids
    rng = np.random.default_rng(seed)
    for wnid in wnids("source"):
        os.makedirs(os.path.join(root, "train", wnid), exist_ok=True)
        for k in range(per_class):
            coarse = rng.integers(0, 255, (size[1] // 25, size[0] // 25, 3), dtype=np.uint8)
            img = Image.fromarray(coarse).resize(size, Image.BICUBIC)
            noisy = np.asarray(img, dtype=np.int16) + rng.integers(-12, 12, (size[1], size[0], 3))
            Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(
                os.path.join(root, "train", wnid, f"{wnid}_{k}.JPEG"), quality=90)


def measure(dm, passes: int) -> tuple[float, int]:
    loader = dm.train_dataloader()
    best, n = 0.0, 0
    for p in range(passes + 1):
        start, n = time.perf_counter(), 0
        for x, _, _ in loader:
            n += len(x)
        rate = n / (time.perf_counter() - start)
        if p > 0:  # pass 0 is the warm-up
            best = max(best, rate)
    return best, n


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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     epilog="Any other argument goes to train.py's parser, e.g. --data.root /data.")
    parser.add_argument("--config", action="append", default=[],
                        help="configs/data/*.yaml (and a backbone config); default: synthetic Living-17")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--per_class", type=int, default=12, help="synthetic images per class (34 classes)")
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--listing", type=int, default=0, metavar="N",
                        help="time listing N files with ImageFolders instead (e.g. 100000)")
    args, overrides = parser.parse_known_args(argv)
    if args.listing:
        seconds = listing_seconds(args.listing)
        print(f"ImageFolders listed and labelled {args.listing:,d} files in {seconds:.2f} s "
              f"({args.listing / seconds:,.0f} files/s)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        if not args.config:
            synthetic_imagenet(tmp, args.per_class)
            args.config, overrides = [CONFIGS / "data" / "living17.yaml"], [*overrides, "--data.root", tmp]
        overrides += ["--data.num_workers", str(args.workers), "--data.batch_size", str(args.batch_size)]
        dm = build_data(args.config, overrides)
        rate, n = measure(dm, args.passes)
        print(f"{type(dm).__name__}: {rate:.0f} images/s with the paper's training transforms "
              f"({n} images/pass, batch {args.batch_size}, {args.workers} workers, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
