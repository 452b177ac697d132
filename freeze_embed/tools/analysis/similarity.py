"""Domain similarity between a pretraining (source) set and fine-tuning (target) sets, as Li et al. (ICLR 2020,
"Rethinking the Hyperparameters for Fine-tuning", Section 4) measure it with the method of Cui et al. (CVPR 2018,
"Large Scale Fine-Grained Categorization and Domain-Specific Transfer Learning", Section 4.1).

    python -m freeze_embed.tools.analysis.similarity --backbone configs/demo.yaml \
        --source configs/similarity/demo_pretrain.yaml --target configs/demo.yaml@train configs/demo.yaml@ood_test

Each set is represented by its classes: the mean feature of a class's images (the pretrained backbone's features)
weighted by its share of the images. The distance of two sets is the Earth Mover's Distance between these weighted
centroids under the Euclidean ground distance, and their similarity ``exp(-gamma * EMD)`` with ``gamma = 0.01``;
all as in the authors' ``DomainSimilarityDemo.ipynb`` (richardaecn/cvpr18-inaturalist-transfer), which also drops
source classes with fewer than 200 images (``--min_source_images``; their source was ImageNet's training set).
The EMD is solved exactly by POT's network simplex (``ot.emd2``), as pyemd did for the authors.

A set is a data config read through train.py's parser (``freeze_embed.run.config``), optionally ``@<split>`` (default:
the datamodule's training split), or an ImageNet-style folder of class folders (torchvision ``ImageFolder``), e.g.
``/data/imagenet/train`` for the ImageNet source of the paper's backbones. ``--backbone`` is a spec string or a
config whose ``model`` section (backbone, pretrained, backbone_kwargs) names it. Other arguments are overrides for
every data config (e.g. ``--data.init_args.root /data``).
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from freeze_embed.errors import FreezeEmbedError, run_command
from freeze_embed.files import atomic_write

GAMMA = 0.01  # Cui et al. (2018): similarity = exp(-gamma * EMD), DomainSimilarityDemo.ipynb


class SimilarityError(FreezeEmbedError):
    """A set that cannot be read, or features that cannot be compared; the message says which."""


def class_centroids(features: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(mean feature of each class present, number of images of each class), classes in sorted order."""
    features, labels = np.asarray(features, dtype=np.float64), np.asarray(labels)
    classes = np.unique(labels)
    centroids = np.stack([features[labels == c].mean(0) for c in classes])
    return centroids, np.array([(labels == c).sum() for c in classes], dtype=np.float64)


def emd(source: np.ndarray, source_weights: np.ndarray, target: np.ndarray, target_weights: np.ndarray) -> float:
    """Earth Mover's Distance between weighted centroids (weights normalised to sum 1), Euclidean ground distance."""
    import ot
    if source.shape[1] != target.shape[1]:
        raise SimilarityError(f"Source features have {source.shape[1]} dimensions and target features "
                              f"{target.shape[1]}: extract both with the same backbone.")
    a = np.asarray(source_weights, np.float64) / np.sum(source_weights)
    b = np.asarray(target_weights, np.float64) / np.sum(target_weights)
    distances = np.linalg.norm(source[:, None, :] - target[None, :, :], axis=-1)
    return float(ot.emd2(a, b, distances))


def similarity(distance: float, gamma: float = GAMMA) -> float:
    return math.exp(-gamma * distance)


def domain_similarity(source: tuple, target: tuple, gamma: float = GAMMA, min_source_images: int = 0):
    """(EMD, similarity) of two ``(features, labels)`` sets."""
    f_s, w_s = class_centroids(*source)
    keep = w_s >= min_source_images
    if not keep.any():
        raise SimilarityError(f"No source class has {min_source_images} images (--min_source_images); lower it.")
    d = emd(f_s[keep], w_s[keep], *class_centroids(*target))
    return d, similarity(d, gamma)


# --- reading sets and extracting features -----------------------------------------------------------------------
def backbone_args(backbone: str) -> tuple[str, object, dict]:
    """(spec, pretrained, kwargs for ``create_backbone``): a spec string (pretrained weights downloaded) or a
    config's model section (its ``trust_pickle`` too)."""
    if backbone.endswith((".yaml", ".yml")):
        from freeze_embed.run.config import compose
        model = compose([backbone])["model"]
        kwargs = dict(model.get("backbone_kwargs") or {})
        return model["backbone"], model["pretrained"], {**kwargs, "trust_pickle": bool(model.get("trust_pickle"))}
    return backbone, True, {}


def open_set(name: str, spec: str, overrides: Sequence[str], image_size: int):
    """The dataset behind ``name``: ``config.yaml[@split]`` or a folder of class folders."""
    path, _, split = name.partition("@")
    if os.path.isdir(path):
        from torchvision.datasets import ImageFolder
        from torchvision.transforms import v2 as T
        from freeze_embed.backbones import normalization
        mean, std = normalization(spec)
        tf = T.Compose([T.Resize(round(image_size * 256 / 224)), T.CenterCrop(image_size), T.ToImage(),
                        T.ToDtype(torch.float32, scale=True), T.Normalize(list(mean), list(std))])
        return ImageFolder(path, transform=tf)
    if not os.path.isfile(path):
        raise SimilarityError(f"Set '{name}' is neither a data config (config.yaml[@split]) nor a folder of class "
                              "folders (e.g. /data/imagenet/train).")
    from freeze_embed.run.config import build_data
    dm = build_data([path], [*overrides, "--model.backbone", spec])
    split = split or dm.train_split
    known = [dm.train_split, *dm.eval_names]
    if split not in known:
        raise SimilarityError(f"{type(dm).__name__} has no split '{split}'; choose one of {', '.join(known)}.")
    dm.check_root()
    return dm.split(split, train=False)  # test-time transforms: no augmentation in the features


def extract(model: torch.nn.Module, dataset, batch_size: int, max_images: Optional[int], desc: str):
    """(features, labels) of ``dataset`` (a seeded random subset of ``max_images``), with a progress bar."""
    if max_images and len(dataset) > max_images:
        dataset = Subset(dataset, torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:max_images])
    features, labels = [], []
    with torch.no_grad():
        for batch in tqdm(DataLoader(dataset, batch_size=batch_size, shuffle=False), desc=desc, unit="batch"):
            features.append(model(batch[0]).float())
            labels.append(torch.as_tensor(batch[1]))
    if not features:
        raise SimilarityError(f"Set '{desc}' is empty.")
    return torch.cat(features), torch.cat(labels)


def run(backbone: str, source: str, targets: Sequence[str], overrides: Sequence[str] = (), gamma: float = GAMMA,
        min_source_images: int = 0, max_images: Optional[int] = None, batch_size: int = 64,
        image_size: int = 224) -> list[dict]:
    from freeze_embed.backbones import create_backbone
    spec, pretrained, kwargs = backbone_args(backbone)
    sets = {name: open_set(name, spec, overrides, image_size) for name in [source, *targets]}  # all checked first
    model = create_backbone(spec, pretrained, **kwargs).model.eval()
    feats = {name: extract(model, ds, batch_size, max_images, name) for name, ds in sets.items()}
    rows = []
    for target in targets:
        d, s = domain_similarity(feats[source], feats[target], gamma, min_source_images)
        rows.append({"source": source, "target": target, "emd": d, "similarity": s,
                     "target_classes": len(torch.unique(feats[target][1])), "target_images": len(feats[target][1])})
    return rows


def short(name: str) -> str:
    """``configs/demo.yaml@ood_test`` -> ``demo@ood_test``; a folder keeps its last two parts."""
    path, at, split = name.partition("@")
    if os.path.isdir(path):
        return os.path.join(*os.path.normpath(path).split(os.sep)[-2:])
    return os.path.splitext(os.path.basename(path))[0] + at + split


def plot(rows: list[dict], path: str) -> None:
    from matplotlib.figure import Figure
    fig = Figure(figsize=(1.6 + 1.3 * len(rows), 3.2))
    ax = fig.subplots()
    bars = ax.bar([short(r["target"]) for r in rows], [r["similarity"] for r in rows], color="tab:blue")
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_ylabel(r"domain similarity $e^{-\gamma\,\mathrm{EMD}}$")
    ax.set_title(f"from {short(rows[0]['source'])}", fontsize=9)
    ax.tick_params(axis="x", labelsize=7, labelrotation=15)
    ax.set_ylim(0, 1.05)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m freeze_embed.tools.analysis.similarity",
                                     description=__doc__.split("\n")[0], allow_abbrev=False,
                                     epilog="Other arguments are overrides for every data config.")
    parser.add_argument("--backbone", required=True, help="spec string, or a config naming model.backbone")
    parser.add_argument("--source", required=True, help="config.yaml[@split] or a folder of class folders")
    parser.add_argument("--target", required=True, nargs="+", help="config.yaml[@split] or folders, one or more")
    parser.add_argument("--gamma", type=float, default=GAMMA)
    parser.add_argument("--min_source_images", type=int, default=0, help="drop smaller source classes (authors: 200)")
    parser.add_argument("--max_images", type=int, default=None, help="a seeded random subset of each set")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--image_size", type=int, default=224, help="input size for folders of images")
    parser.add_argument("--out", default=None, help="write the table here (.csv) and a bar plot next to it (.png)")
    args, rest = parser.parse_known_args(argv)
    rows = run(args.backbone, args.source, args.target, rest, args.gamma, args.min_source_images, args.max_images,
               args.batch_size, args.image_size)
    print(f"source: {args.source}")
    for r in rows:
        print(f"  {r['target']:<40} EMD {r['emd']:9.4f}   similarity {r['similarity']:.4f}")
    if args.out:
        with atomic_write(args.out, "w") as f:
            writer = csv.DictWriter(f, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        plot(rows, os.path.splitext(args.out)[0] + ".png")
        print(f"Wrote {args.out} and {os.path.splitext(args.out)[0] + '.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command(main))
