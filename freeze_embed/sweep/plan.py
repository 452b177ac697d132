"""A sweep's plan: its LR grid, each run's ``train.py`` config, and their W&B group and ids.

Pure functions of the composed config (:func:`freeze_embed.config.compose`): nothing here starts a process or
touches a run directory.
"""
from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..config import ConfigError

if TYPE_CHECKING:
    from .run import Run


class SweepError(ConfigError):
    """A sweep that cannot start; the message says why."""


def resolve_lrs(spec: Sequence[str], config: dict) -> tuple[str, list[float]]:
    """``paper`` (the method's ``method.lr_grid``) or explicit LRs."""
    if list(spec) == ["paper"]:
        meta = config.get("method") or {}
        if not meta.get("lr_grid"):
            raise SweepError("--lrs paper needs a method file (configs/method/*.yaml sets method.lr_grid); compose "
                             "one with --config, or give the LRs, e.g. --lrs 1e-3 3e-3.")
        return f"{meta.get('name') or 'method'} grid", [float(x) for x in meta["lr_grid"]]
    try:
        return "given", sorted(float(x) for x in spec)
    except ValueError:
        raise SweepError(f"--lrs takes 'paper' or numbers, not {' '.join(spec)}") from None


def default_group(out: Path) -> str:
    """The W&B group of a sweep in ``out``: its last three parts, ``<dataset>-<model>-<method>`` by default."""
    return "-".join(out.parts[-3:])


def wandb_id(run_dir: str) -> str:
    """A run's W&B id, fixed by its directory: a resumed run continues its W&B run."""
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


def run_config(config: dict, run: Run) -> dict:
    """The sweep's config with this run's LR, seed, and logs under its run dir (W&B: one group per sweep)."""
    cfg = copy.deepcopy(config)
    cfg["seed_everything"] = run.seed
    cfg["model"]["optimizer"].setdefault("init_args", {})["lr"] = run.lr
    trainer = cfg.setdefault("trainer", {})
    trainer["default_root_dir"] = run.run_dir
    logger = trainer.get("logger")
    for item in logger if isinstance(logger, list) else [logger] if isinstance(logger, dict) else []:
        init = item["init_args"] = dict(item.get("init_args") or {})
        if item.get("class_path", "").endswith("WandbLogger"):
            init.update(save_dir=run.run_dir, group=run.group or None, name=f"{run.group}/{run.name}",
                        id=wandb_id(run.run_dir), resume="allow")  # a resumed run continues its W&B run
        elif "save_dir" in init or item.get("class_path", "").endswith(("CSVLogger", "TensorBoardLogger")):
            init.update(save_dir=run.run_dir, name="logs", version=None)  # logs/version_N: a resume adds one
    return cfg
