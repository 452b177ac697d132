"""Check a data set-up before a 10-hour run: each split's size, the number of classes, group counts.

    python -m freeze_embed.tools.describe --config configs/data/waterbirds.yaml --data.root /data [--json]

Reads only metadata and split lists (no image is opened). ``--json`` prints ``{"splits": {"<name>": {"size": n,
"groups": {...}}}, "num_classes": k}`` (``groups`` is empty where a dataset has none); a user's data
(``ImageFolders``) adds each split's images per class, the imbalance (largest over smallest training class) and the
resolved transforms. ``--check_images`` opens every image (in parallel threads) and lists each unreadable one with
its reason (exit status 1), instead of a training run dying at batch 9,000. Any ``--data.init_args.<key> <value>``
(or ``--data.<key>``) overrides the config, read by ``train.py``'s own parser
(:func:`freeze_embed.run.config.build_data`); no model is built.
"""
from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence

import torch

from freeze_embed.errors import run_command
from freeze_embed.run.config import build_data


def summary(dm) -> dict:
    """``{"splits": {name: {"size", "groups"}}, "num_classes"}`` from the datasets' label/group tensors."""
    splits = {}
    for name in [dm.train_split, *dm.eval_names]:
        ds = dm.split(name, train=name == dm.train_split)
        groups = getattr(ds, "groups", None)
        if groups is None:
            groups = torch.tensor([int(ds[i][2]) for i in range(len(ds))], dtype=torch.long)
        names = dm.group_names(name)
        counts = {}
        if names:
            counts = dict(zip(names, torch.bincount(groups, minlength=len(names)).tolist()))
        splits[name] = {"size": len(ds), "groups": counts}
        if getattr(dm, "describe_classes", False):
            per_class = torch.bincount(ds.labels, minlength=dm.num_classes).tolist()
            splits[name]["classes"] = dict(zip(dm.class_names, per_class))
    info = {"splits": splits, "num_classes": int(dm.num_classes)}
    if getattr(dm, "describe_classes", False):
        train = [n for n in splits[dm.train_split]["classes"].values() if n > 0]
        info["imbalance"] = max(train) / min(train) if train else None
        info["transforms"] = {"preprocess": dict(dm.preprocess), "train": _one_line(dm.split(dm.train_split, True)),
                              "eval": _one_line(dm.split(dm.eval_names[0]))}
    return info


def _one_line(ds) -> str:
    return " -> ".join(line.strip() for line in repr(ds.transform).splitlines()[1:-1])


def unreadable_images(dm, workers: Optional[int] = None) -> list[dict]:
    """``[{"image", "reason"}]`` for every image of every split that cannot be decoded, each file opened once."""
    from freeze_embed.data.errors import ImageReadError
    jobs = {}
    for name in [dm.train_split, *dm.eval_names]:
        ds = dm.split(name, train=name == dm.train_split)
        if not hasattr(ds, "load"):
            continue
        for i in range(len(ds)):
            where = ds.describe_item(i) if hasattr(ds, "describe_item") else str(ds.paths[i])
            jobs.setdefault(where, (ds, i))

    def check(item):
        where, (ds, i) = item
        try:
            ds.load(i)
        except ImageReadError as err:
            cause = err.__cause__
            reason = f"{type(cause).__name__}: {cause}" if cause is not None else str(err)
            return {"image": where, "reason": reason}
        return None

    with ThreadPoolExecutor(max_workers=workers or min(32, (os.cpu_count() or 1) * 4)) as pool:
        return [r for r in pool.map(check, sorted(jobs.items(), key=lambda kv: kv[0])) if r is not None]


def render(info: dict, dm) -> str:
    width = max(len(n) for n in info["splits"])
    lines = [f"{type(dm).__name__} at {dm.root}: {info['num_classes']} classes"]
    for name, s in info["splits"].items():
        line = f"  {name:<{width}} {s['size']:>8,d}"
        if s["groups"]:
            line += "   " + ", ".join(f"{g} {n:,d}" for g, n in s["groups"].items())
        lines.append(line)
        if "classes" in s:
            lines.append("      " + ", ".join(f"{c} {n:,d}" for c, n in s["classes"].items()))
    if "imbalance" in info:
        lines.append(f"  imbalance (largest / smallest training class) = {info['imbalance']:.2f}")
        for key, value in info["transforms"].items():
            lines.append(f"  {key}: {value}")
    lines.append(f"  paper ID = {dm.id_metric}, OOD = {dm.ood_metric}, epochs = {dm.paper_epochs}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m freeze_embed.tools.describe", description=__doc__.split("\n")[0])
    parser.add_argument("--config", action="append", default=[], help="YAML config(s) with a data: section")
    parser.epilog = "Any other argument goes to train.py's parser, e.g. --data.root /data."
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--check_images", action="store_true",
                        help="open every image (in parallel) and list the unreadable ones with their reasons")
    args, extra = parser.parse_known_args(argv)

    dm = build_data(args.config, extra)
    dm.prepare_data()
    info = summary(dm)
    if args.check_images:
        info["unreadable"] = unreadable_images(dm)
    print(json.dumps(info, sort_keys=False) if args.json else render(info, dm))
    if args.check_images:
        bad = info["unreadable"]
        if not args.json:
            print(f"{len(bad)} unreadable image(s)" + "".join(f"\n  {b['image']}: {b['reason']}" for b in bad))
        if bad:
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command(main))
