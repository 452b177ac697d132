"""Check a data set-up before a 10-hour run: each split's size, the number of classes, group counts.

    python -m freeze_embed.data.describe --config configs/data/waterbirds.yaml --data.root /data [--json]

Reads only metadata and split lists (no image is opened). ``--json`` prints
``{"splits": {"<name>": {"size": n, "groups": {...}}}, "num_classes": k}`` (``groups`` is empty where a dataset
has none). Any ``--data.init_args.<key> <value>`` (or ``--data.<key>``) overrides the config, read by ``train.py``'s
own parser (:func:`freeze_embed.config.build_data`); no model is built.
"""
from __future__ import annotations

import argparse
import json
from typing import Optional, Sequence

import torch

from ..cli import exit_on_user_error
from ..config import build_data


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
    return {"splits": splits, "num_classes": int(dm.num_classes)}


def render(info: dict, dm) -> str:
    width = max(len(n) for n in info["splits"])
    lines = [f"{type(dm).__name__} at {dm.root}: {info['num_classes']} classes"]
    for name, s in info["splits"].items():
        line = f"  {name:<{width}} {s['size']:>8,d}"
        if s["groups"]:
            line += "   " + ", ".join(f"{g} {n:,d}" for g, n in s["groups"].items())
        lines.append(line)
    lines.append(f"  paper ID = {dm.id_metric}, OOD = {dm.ood_metric}, epochs = {dm.paper_epochs}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m freeze_embed.data.describe", description=__doc__.split("\n")[0])
    parser.add_argument("--config", action="append", default=[], help="YAML config(s) with a data: section")
    parser.epilog = "Any other argument goes to train.py's parser, e.g. --data.root /data."
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args, extra = parser.parse_known_args(argv)
    def describe():
        dm = build_data(args.config, extra)
        dm.prepare_data()
        return dm, summary(dm)

    dm, info = exit_on_user_error(describe)
    print(json.dumps(info, sort_keys=False) if args.json else render(info, dm))


if __name__ == "__main__":
    main()
