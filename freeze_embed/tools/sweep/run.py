"""One run: an ordinary, resumable ``train.py fit`` in its own directory.

``<run_dir>/`` holds the run's ``run_config.yaml``, ``train.log``, ``checkpoints/`` and, once finished,
``results.json``. A run with a results.json is done (a diverged one too: its results.json says so, and rerunning it
would diverge again); one with ``checkpoints/last.ckpt`` resumes from it; one that failed (no results.json) is
retried by the next invocation. :func:`_call` is the one place a training process starts (tests replace it: patch
``freeze_embed.tools.sweep.run._call``).
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from freeze_embed.files import atomic_write
from freeze_embed.run.config import REPO
from freeze_embed.run.results import RunResults
from freeze_embed.tools.sweep.plan import run_config

RUN_CONFIG = "run_config.yaml"
TRAIN_PY = REPO / "train.py"


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
    entry = [str(TRAIN_PY)] if TRAIN_PY.exists() else ["-c", "from freeze_embed.run.cli import main; main()"]
    cmd = [sys.executable, *entry, "fit", "--config", str(Path(run.run_dir) / RUN_CONFIG), "--run_dir", run.run_dir]
    return cmd + (["--ckpt_path", str(run.last_ckpt)] if run.last_ckpt.exists() else [])


GRACE_S = 120  # after Ctrl-C, how long a run may take to stop where it stands (finish writing a checkpoint)


def _call(cmd: list[str], log, env: dict) -> int:
    """Launch one training process (the one place a run starts; tests replace it).

    On Ctrl-C the run (in the same process group, so it got the same Ctrl-C) is waited for, not killed after 0.25 s
    as ``subprocess.call`` does: Lightning stops it where it stands. One still running after 5 s gets a Ctrl-C of its
    own (the sweep alone was interrupted), and is killed after ``GRACE_S`` more.
    """
    with subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env) as proc:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            if _wait(proc, 5) is None:
                proc.send_signal(signal.SIGINT)
                if _wait(proc, GRACE_S) is None:
                    proc.kill()
            raise


def _wait(proc: subprocess.Popen, seconds: float) -> Optional[int]:
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return None


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
    """The run's results.json (``train.py fit`` writes it when it finishes, ``"diverged": true`` when it diverged),
    or None: :class:`~freeze_embed.run.results.RunResults`' data."""
    results = RunResults.read(run.run_dir)
    return None if results is None else results.data


def diverged(results: Optional[dict]) -> bool:
    return RunResults(results or {}).diverged


def last_error_line(run: Run, tail_bytes: int = 65536) -> Optional[str]:
    """The last non-blank line of the run's train.log (a traceback's last line names the error; ``error: ...``
    is a user error's sentence), or None without a log."""
    path = Path(run.run_dir) / "train.log"
    if not path.exists():
        return None
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - tail_bytes))
        lines = [x.strip() for x in f.read().decode("utf-8", "replace").splitlines() if x.strip()]
    return lines[-1][:300] if lines else None
