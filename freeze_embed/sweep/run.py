"""One run: an ordinary, resumable ``train.py fit`` in its own directory.

``<run_dir>/`` holds the run's ``run_config.yaml``, ``train.log``, ``checkpoints/`` and, once finished,
``results.json``. A run with a results.json is done; one with ``checkpoints/last.ckpt`` resumes from it. :func:`_call`
is the one place a training process starts (tests replace it: patch ``freeze_embed.sweep.run._call``).
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from ..files import atomic_write
from .plan import run_config

RUN_CONFIG = "run_config.yaml"
TRAIN_PY = Path(__file__).resolve().parents[2] / "train.py"


@dataclass(frozen=True)
class Run:
    lr: float  # the LR the optimizer gets (for a momentum sweep: effective LR x (1 - momentum))
    seed: int
    run_dir: str
    group: str = ""
    label: str = ""  # a name other run-many tools give their runs (SubTuning's subsets); default lr<lr>_seed<seed>
    momentum: Optional[float] = None  # set by a momentum sweep (--momenta); None keeps the config's

    @property
    def name(self) -> str:
        return self.label or self.dir_name(self.lr, self.seed, self.momentum)

    @staticmethod
    def dir_name(lr: float, seed: int, momentum: Optional[float] = None) -> str:
        """``lr<lr>_seed<seed>`` (``m<momentum>_lr<lr>_seed<seed>`` in a momentum sweep): a run's folder in its
        sweep, and its name in W&B."""
        return ("" if momentum is None else f"m{momentum:g}_") + f"lr{lr:g}_seed{seed}"

    def describe(self) -> str:
        """``lr=0.001 seed=0`` (``m=0.9 lr=0.0001 seed=0``) for progress lines and errors."""
        if self.label:
            return self.label
        return ("" if self.momentum is None else f"m={self.momentum:g} ") + f"lr={self.lr:g} seed={self.seed}"

    @property
    def last_ckpt(self) -> Path:
        return Path(self.run_dir) / "checkpoints" / "last.ckpt"

    def status(self) -> str:
        if (Path(self.run_dir) / "results.json").exists():
            return "done"
        return "resume" if self.last_ckpt.exists() else "new"


def prepare(run: Run, config: dict) -> None:
    """Write the run's config, unless it is resuming: then it keeps the config it started with."""
    path = Path(run.run_dir) / RUN_CONFIG
    if path.exists() and run.last_ckpt.exists():
        return
    with atomic_write(path, "w") as f:  # a run resumes with the config it started with: never half of one
        f.write(yaml.safe_dump(run_config(config, run), sort_keys=False))


def train_command(run: Run) -> list[str]:
    """``python train.py fit --config <run>/run_config.yaml --run_dir <run> [--ckpt_path <run>/.../last.ckpt]``."""
    entry = [str(TRAIN_PY)] if TRAIN_PY.exists() else ["-c", "from freeze_embed.cli import main; main()"]
    cmd = [sys.executable, *entry, "fit", "--config", str(Path(run.run_dir) / RUN_CONFIG), "--run_dir", run.run_dir]
    return cmd + (["--ckpt_path", str(run.last_ckpt)] if run.last_ckpt.exists() else [])


def _call(cmd: list[str], log, env: dict) -> int:
    """Launch one training process (the one place a run starts; tests replace it)."""
    return subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def execute(run: Run, env: Optional[dict] = None) -> dict:
    """Train one run to its results.json, resuming from last.ckpt; never raises, reports ``status``."""
    if run.status() == "done":
        return {"status": "done", "skipped": True}
    cmd = train_command(run)
    env = dict(os.environ if env is None else env)
    if run.group:
        env["WANDB_RUN_GROUP"] = run.group
    start, log_path = time.time(), Path(run.run_dir) / "train.log"
    try:
        with open(log_path, "a") as log:
            log.write(f"\n$ {shlex.join(cmd)}\n")
            log.flush()
            rc = _call(cmd, log, env)
    except Exception as err:  # noqa: BLE001 - a sweep outlives any one run
        return {"status": "failed", "error": repr(err), "log": str(log_path)}
    done = (Path(run.run_dir) / "results.json").exists()
    return {"status": "done" if done else "failed", "rc": rc, "seconds": round(time.time() - start, 1),
            "resumed": "--ckpt_path" in cmd, "log": str(log_path)}


def read_results(run: Run) -> Optional[dict]:
    """The run's results.json (``train.py fit`` writes it when it finishes), or None."""
    path = Path(run.run_dir) / "results.json"
    return json.loads(path.read_text()) if path.exists() else None
