"""Predict the class of any images with a checkpoint or an export (``python -m freeze_embed.tools.predict --images``).

    python -m freeze_embed.tools.predict --ckpt_path runs/x/checkpoints/best.ckpt --images /new/photos --out preds.csv
    python -m freeze_embed.tools.predict --model exported/ --images a.jpg b.png --out preds.csv --topk 3

``--images`` is a folder (searched recursively), a CSV manifest (``path`` and optionally ``label``) or image files.
The CSV has one row per image: ``path``, ``label`` (when known), ``pred`` and ``prob`` (the top class and its
softmax probability), ``pred_2``, ``prob_2``, ... up to ``--topk``, and ``error`` (empty unless the image could not
be read). Labels are known for a CSV with a ``label`` column and for a class-per-folder tree whose folder names are
all class names of the model; then the accuracy is printed too.
"""
from __future__ import annotations

import argparse
import csv
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from freeze_embed.errors import FreezeEmbedError, run_command
from freeze_embed.files import atomic_write
from freeze_embed.inference import Classifier, from_checkpoint, from_export


class ImagesError(FreezeEmbedError):
    """No image to predict, or labels the model does not know."""


@dataclass
class Images:
    paths: list[str]
    labels: Optional[list[str]]  # one per path, or None when unknown


def collect(sources: Sequence[str]) -> Images:
    """The images ``--images`` names, with their labels where a class-per-folder tree or a CSV gives them."""
    from freeze_embed.data.image_files import list_folder, list_images, read_manifest
    if len(sources) == 1 and os.path.isfile(sources[0]) and sources[0].lower().endswith(".csv"):
        rows = read_manifest(sources[0])
        labels = [row[1] for row in rows]
        images = Images([row[0] for row in rows], labels if all(y is not None for y in labels) else None)
    elif len(sources) == 1 and os.path.isdir(sources[0]):
        everything = list_images(sources[0])
        try:
            tree = list_folder(sources[0])
        except FreezeEmbedError:  # not a class-per-folder tree: just images
            tree = []
        if tree and len(tree) == len(everything):
            images = Images([p for p, _ in tree], [c for _, c in tree])
        else:
            images = Images(list(everything), None)
    else:
        paths = []
        for source in sources:
            if os.path.isdir(source):
                paths.extend(list_images(source))
            elif os.path.isfile(source):
                paths.append(source)
            else:
                raise ImagesError(f"--images '{source}' does not exist: give a folder, a CSV manifest or image files.")
        images = Images(paths, None)
    if not images.paths:
        raise ImagesError(f"There is no image in {' '.join(sources)}: give a folder with image files (searched "
                          "recursively), a CSV manifest with a path column, or image files.")
    return images


def known_labels(images: Images, class_names: list[str], from_csv: bool) -> Optional[list[int]]:
    """Label indices, or None. A folder tree whose names are not the model's classes is just images; a CSV label
    that is not a class is the user's mistake."""
    if images.labels is None:
        return None
    unknown = sorted(set(images.labels) - set(class_names))
    if unknown and from_csv:
        raise ImagesError(f"The labels {unknown[:5]} are not classes of this model ({', '.join(class_names[:10])}"
                          f"{', ...' if len(class_names) > 10 else ''}): fix the CSV's label column.")
    if unknown:
        print(f"Not computing accuracy: the folders {unknown[:5]} are not classes of this model.")
        return None
    index = {name: i for i, name in enumerate(class_names)}
    return [index[y] for y in images.labels]


class ImageList(Dataset):
    """(image, error): an unreadable file gives a blank image and its error, so one bad file never stops a run."""

    def __init__(self, paths: list[str], transform, input_size):
        self.paths, self.transform, self.blank = paths, transform, torch.zeros(tuple(input_size))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            with Image.open(self.paths[i]) as image:
                return self.transform(image.convert("RGB")), ""
        except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, DecompressionBomb...
            return self.blank, f"{type(err).__name__}: {' '.join(str(err).split())}"[:300]


def predict(classifier: Classifier, paths: list[str], topk: int, batch_size: int, num_workers: int,
            device: torch.device) -> list[dict]:
    """One row per path: ``pred``/``prob`` ... ``pred_k``/``prob_k`` and ``error``."""
    from freeze_embed.data.preprocess import eval_transform
    cfg = classifier.preprocess
    data = ImageList(paths, eval_transform(cfg), cfg["input_size"])
    loader = DataLoader(data, batch_size=batch_size, num_workers=num_workers, pin_memory=device.type == "cuda")
    model, names = classifier.model.to(device).eval(), classifier.class_names
    rows = []
    with torch.no_grad():
        for images, errors in tqdm(loader, desc="predict", unit="batch"):
            ok = torch.tensor([not e for e in errors])
            probs = torch.zeros(len(errors), len(names))
            if ok.any():
                probs[ok] = model(images[ok].to(device)).float().softmax(-1).cpu()
            top_p, top_i = probs.topk(topk, dim=-1)
            for p, i, error in zip(top_p.tolist(), top_i.tolist(), errors):
                row = {"error": error}
                if not error:
                    for rank, (pj, ij) in enumerate(zip(p, i), start=1):
                        suffix = "" if rank == 1 else f"_{rank}"
                        row[f"pred{suffix}"], row[f"prob{suffix}"] = names[ij], f"{pj:.6f}"
                rows.append(row)
    return rows


def write_csv(path: str, images: Images, rows: list[dict], topk: int) -> None:
    columns = ["path"] + (["label"] if images.labels is not None else []) + ["pred", "prob"]
    columns += [f"{name}_{rank}" for rank in range(2, topk + 1) for name in ("pred", "prob")] + ["error"]
    with atomic_write(path, "w") as f:
        writer = csv.DictWriter(f, columns, lineterminator="\n")
        writer.writeheader()
        for i, row in enumerate(rows):
            extra = {"path": images.paths[i], **({"label": images.labels[i]} if images.labels is not None else {})}
            writer.writerow({**extra, **row})


def run(model: str, from_folder: bool, sources: Sequence[str], out: str, topk: int, batch_size: int,
        num_workers: int) -> str:
    images = collect(sources)  # before the model: a wrong folder costs nothing
    classifier = from_export(model) if from_folder else from_checkpoint(model)
    if not 1 <= topk <= len(classifier.class_names):
        raise ImagesError(f"--topk {topk} is not possible: this model has {len(classifier.class_names)} classes.")
    from_csv = len(sources) == 1 and sources[0].lower().endswith(".csv")
    labels = known_labels(images, classifier.class_names, from_csv)
    if labels is None:
        images.labels = None  # folder names that are not classes are not labels
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = predict(classifier, images.paths, topk, batch_size, num_workers, device)
    write_csv(out, images, rows, topk)
    failed = sum(bool(row["error"]) for row in rows)
    lines = [f"Wrote {len(rows)} predictions to {os.path.abspath(out)}."]
    if labels is not None and failed < len(rows):
        index = {name: i for i, name in enumerate(classifier.class_names)}
        scored = [(index[r["pred"]], y) for r, y in zip(rows, labels) if not r["error"]]
        correct = sum(p == y for p, y in scored)
        lines.append(f"Accuracy: {correct / max(len(scored), 1):.4f} ({correct} of {len(scored)} labelled images).")
    if failed:
        lines.append(f"{failed} of {len(rows)} images could not be read; their rows' error column says why.")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m freeze_embed.tools.predict", description=__doc__.split("\n")[0],
                                     allow_abbrev=False)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--ckpt_path", help="checkpoint written by train.py")
    which.add_argument("--model", help="folder written by python -m freeze_embed.tools.export")
    parser.add_argument("--images", nargs="+", required=True, help="a folder, a CSV manifest or image files")
    parser.add_argument("--out", required=True, help="the predictions CSV")
    parser.add_argument("--topk", type=int, default=1, help="classes (and probabilities) per image")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="processes reading images")
    args = parser.parse_args(argv)
    print(run(args.model or args.ckpt_path, args.model is not None, args.images, args.out, args.topk, args.batch_size,
              args.num_workers))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command(main))
