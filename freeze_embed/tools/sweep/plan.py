"""A sweep's plan: its LR grid, each run's ``train.py`` config, and their W&B group and ids.

Functions of the composed config (:func:`freeze_embed.run.config.compose`): nothing here starts a process or touches
a run's directory; :func:`record_config` writes the sweep's own ``DIR/config.yaml``.
"""
from __future__ import annotations

import copy
import hashlib
import importlib
import inspect
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import yaml

from freeze_embed.run.config import ConfigError
from freeze_embed.files import atomic_write

if TYPE_CHECKING:
    from freeze_embed.tools.sweep.run import Run


class SweepError(ConfigError):
    """A sweep that cannot start; the message says why."""


def resolve_lrs(spec: Sequence[str], config: dict) -> tuple[str, list[float]]:
    """``paper`` (the method's ``method.lr_grid``), explicit LRs, or ``effective [numbers]``: the method's grid (or
    the numbers) read as effective LRs lr / (1 - momentum), for :func:`momentum_grid`."""
    spec = list(spec)
    if spec[:1] == ["effective"]:
        family, lrs = resolve_lrs(spec[1:] or ["paper"], config)
        return f"{family}, effective", lrs
    if spec == ["paper"]:
        meta = config.get("method") or {}
        if not meta.get("lr_grid"):
            raise SweepError("--lrs paper needs a method file (configs/method/*.yaml sets method.lr_grid); compose "
                             "one with --config, or give the LRs, e.g. --lrs 1e-3 3e-3.")
        return f"{meta.get('name') or 'method'} grid", [float(x) for x in meta["lr_grid"]]
    try:
        return "given", sorted(float(x) for x in spec)
    except ValueError:
        raise SweepError(f"--lrs takes 'paper', 'effective' or numbers, not {' '.join(spec)}") from None


# --- momentum x effective LR (Li et al., "Rethinking the Hyperparameters for Fine-tuning", ICLR 2020, Sec. 3.1) --
def effective_lr(lr: float, momentum: float) -> float:
    """lr / (1 - momentum): SGD with momentum m (no dampening) moves lr / (1 - m) per unit of a steady gradient,
    so runs with different momenta compare at equal effective LR (Li et al. 2020, Sec. 3.1)."""
    return _round(lr / (1.0 - momentum))


def actual_lr(effective: float, momentum: float) -> float:
    """The LR the optimizer gets for an effective LR: effective x (1 - momentum)."""
    return _round(effective * (1.0 - momentum))


def _round(x: float) -> float:
    return float(f"{x:.12g}")  # 1e-3 * (1 - 0.9) is 1.0000000000000002e-4: names and keys want 1e-4


def check_momenta(momenta: Sequence[float], config: dict, effective: bool) -> None:
    """Refuse momenta the optimizer cannot take, or an effective LR the formula does not give."""
    opt = config["model"].get("optimizer") or {}
    path = opt.get("class_path", "freeze_embed.optim.SGD") if isinstance(opt, dict) else str(opt)
    args = (opt.get("init_args") or {}) if isinstance(opt, dict) else {}
    if "momentum" not in _init_params(path, args):
        raise SweepError(f"--momenta needs an optimizer with a momentum argument; {path} has none (use an SGD "
                         "method file, e.g. configs/method/sgd.yaml).")
    bad = [m for m in momenta if not 0.0 <= m < 1.0]
    if bad:
        raise SweepError(f"--momenta must lie in [0, 1), not {' '.join(f'{m:g}' for m in bad)}.")
    if effective and float(args.get("dampening") or 0.0) != 0.0:
        raise SweepError("--lrs effective assumes dampening 0 (effective LR = lr / (1 - momentum)); this optimizer "
                         f"has dampening {args['dampening']}.")


def _init_params(path: str, args: dict) -> set[str]:
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        return set(inspect.signature(cls.__init__).parameters)
    except (ImportError, AttributeError, ValueError, TypeError):
        return set(args)  # a class we cannot import here: trust its arguments in the config


def momentum_grid(lrs: Sequence[float], momenta: Optional[Sequence[float]], effective: bool
                  ) -> list[tuple[Optional[float], float]]:
    """(momentum, actual LR) of every run: one grid of effective LRs for every momentum (``effective``), else the
    same LRs for every momentum; ``momenta=None`` keeps the config's momentum (today's sweep)."""
    if momenta is None:
        return [(None, lr) for lr in lrs]
    return [(m, actual_lr(lr, m) if effective else lr) for m in momenta for lr in lrs]


def default_group(out: Path) -> str:
    """The W&B group of a sweep in ``out``: its last three parts, ``<dataset>-<model>-<method>`` by default."""
    return "-".join(out.parts[-3:])


def wandb_id(run_dir: str) -> str:
    """A run's W&B id, fixed by its directory: a resumed run continues its W&B run."""
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


def run_config(config: dict, run: Run) -> dict:
    """The sweep's config with this run's LR (and momentum, when the sweep sets one), seed, and logs under its run
    dir (W&B: one group per sweep)."""
    cfg = copy.deepcopy(config)
    cfg["seed_everything"] = run.seed
    init = cfg["model"]["optimizer"].setdefault("init_args", {})
    init["lr"] = run.lr
    if run.momentum is not None:
        init["momentum"] = run.momentum
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


def record_config(out: Path, config: dict, what: str = "runs") -> None:
    """``out/config.yaml``: the composed config a sweep (or search) runs, with a warning when it changed since the
    last call (finished runs are kept, resumed ones keep the config they started with)."""
    out.mkdir(parents=True, exist_ok=True)
    old = out / "config.yaml"
    if old.exists() and yaml.safe_load(old.read_text()) != config:
        print(f"warning: the composed config differs from {old}; finished {what} are kept and resumed ones keep "
              "their own config", file=sys.stderr)
    with atomic_write(old, "w") as f:
        f.write(yaml.safe_dump(config, sort_keys=False))
