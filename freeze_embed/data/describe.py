"""Check a data set-up before a 10-hour run: each split's size, the number of classes, group counts.

    python -m freeze_embed.data.describe --config configs/data/waterbirds.yaml --data.root /data [--json]

Reads only metadata and split lists (no image is opened). ``--json`` prints
``{"splits": {"<name>": {"size": n, "groups": {...}}}, "num_classes": k}`` (``groups`` is empty where a dataset
has none). Any ``--data.init_args.<key> <value>`` (or ``--data.<key>``) overrides the config.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Optional, Sequence

import torch
import yaml

from ..errors import FreezeEmbedError


def build(configs: Sequence[str], overrides: dict) -> "ShiftDataModule":  # noqa: F821
    """Instantiate the ``data:`` section of the (merged) YAML configs, as the training CLI would."""
    data: dict = {}
    for path in configs:
        with open(path) as f:
            section = (yaml.safe_load(f) or {}).get("data") or {}
        if "class_path" in section and section["class_path"] != data.get("class_path"):
            data = {"class_path": section["class_path"], "init_args": {}}
        data.setdefault("init_args", {}).update(section.get("init_args") or {})
    if "class_path" in overrides:
        data["class_path"] = overrides.pop("class_path")
    data.setdefault("init_args", {}).update(overrides)
    if "class_path" not in data:
        raise FreezeEmbedError("No data class: give --config with a 'data: {class_path: ...}' section "
                               "(e.g. configs/data/waterbirds.yaml) or --data.class_path.")
    module, _, name = data["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return cls(**data["init_args"])


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


def _overrides(extra: list[str]) -> dict:
    """``--data.root X`` / ``--data.init_args.root X`` / ``--data.class_path X`` pairs; values parsed as YAML."""
    out, i = {}, 0
    while i < len(extra):
        key, _, value = extra[i].partition("=")
        if not key.startswith("--data."):
            raise FreezeEmbedError(f"Unknown argument '{extra[i]}': use --config, --json or --data.<key> <value>.")
        if not _:
            if i + 1 >= len(extra):
                raise FreezeEmbedError(f"'{key}' needs a value.")
            i, value = i + 1, extra[i + 1]
        key = key[len("--data."):]
        key = key[len("init_args."):] if key.startswith("init_args.") else key
        out[key] = value if key in ("root", "class_path") else yaml.safe_load(value)
        i += 1
    return out


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m freeze_embed.data.describe", description=__doc__.split("\n")[0])
    parser.add_argument("--config", action="append", default=[], help="YAML config(s) with a data: section")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args, extra = parser.parse_known_args(argv)
    try:
        dm = build(args.config, _overrides(extra))
        dm.prepare_data()
        info = summary(dm)
    except FreezeEmbedError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(info, sort_keys=False) if args.json else render(info, dm))


if __name__ == "__main__":
    main()
