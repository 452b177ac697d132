"""Checkpoints that survive a kill and cannot run code: the CheckpointIO plugin the CLIs install, and resuming.

* :class:`AtomicCheckpointIO` writes each checkpoint through :func:`~freeze_embed.files.atomic_write` (a temporary
  file in the checkpoint's own folder, fsynced, then ``os.replace``), so a kill, a preemption or a full disk mid-save
  leaves the previous checkpoint whole. Lightning's own ``TorchCheckpointIO`` stages the file in ``$TMPDIR`` and
  moves it: when that is another filesystem (a node-local ``/tmp``, checkpoints on shared storage) the move is a copy
  onto ``last.ckpt`` itself. It reads with ``weights_only=True``; a file that needs arbitrary pickle, or a truncated
  one, is one sentence. :func:`install` makes it the trainer's plugin unless the user gave a CheckpointIO of their own.
* :func:`resolve_ckpt_path` checks ``--ckpt_path`` before the model is built: a missing or unsafe file is one
  sentence, and resuming (``fit``) from an unreadable ``last.ckpt`` (cut short by a kill during a copy onto it, or
  by something else outside our control) falls back to the newest readable checkpoint of the run, saying which. The
  sweep and the SubTuning search resume their runs with ``--ckpt_path <run>/checkpoints/last.ckpt``, so they get the
  same fallback.
"""
from __future__ import annotations

import os
import pickle
import re
import sys
from typing import Any, Callable, Optional

import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.plugins.io.wrapper import _WrappingCheckpointIO

from freeze_embed.errors import FreezeEmbedError
from freeze_embed.files import UnreadableFileError, atomic_write, load_torch

LAST = re.compile(r"^last(-v?\d+)?\.ckpt$")  # ModelCheckpoint's last.ckpt, last-v1.ckpt (its version counter)


class CheckpointWriteError(FreezeEmbedError):
    """A checkpoint could not be written (full disk, I/O error); the previous one is still there."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temporary file beside the target, then ``os.replace``; ``torch.load(weights_only=True)``
    unless ``trust_pickle``. Remote paths (``s3://``...) keep Lightning's own transaction."""

    def __init__(self, trust_pickle: bool = False):
        self.trust_pickle = trust_pickle

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        try:
            with atomic_write(path) as f:
                torch.save(checkpoint, f)
        except OSError as err:
            raise CheckpointWriteError(
                f"Could not write the checkpoint '{path}' ({err.strerror or err}); the checkpoints written before are "
                "untouched: free space (or give --run_dir on a disk with room) and resume with --ckpt_path last."
            ) from err

    def load_checkpoint(self, path, map_location: Optional[Callable] = lambda storage, loc: storage,
                        weights_only: Optional[bool] = None) -> dict[str, Any]:
        if not _is_local_file_protocol(path):
            return super().load_checkpoint(path, map_location, weights_only)
        return load_torch(path, "checkpoint", trust_pickle=self.trust_pickle, map_location=map_location)


def install(trainer, trust_pickle: bool = False) -> None:
    """Make :class:`AtomicCheckpointIO` the trainer's CheckpointIO, unless the user gave one (it wins)."""
    strategy = trainer.strategy
    given = strategy._checkpoint_io
    if isinstance(given, _WrappingCheckpointIO):  # e.g. AsyncCheckpointIO: ours does the writing inside it
        if given.checkpoint_io is None:
            given.checkpoint_io = AtomicCheckpointIO(trust_pickle)
    elif given is None:
        strategy.checkpoint_io = AtomicCheckpointIO(trust_pickle)


def trust_pickle_of(config) -> bool:
    """``model.trust_pickle`` of a parsed config (False where the model has no such argument)."""
    return bool((config.get("model") or {}).get("trust_pickle", False))


class DurableCheckpoints:
    """LightningCLI mixin (``class MyCLI(DurableCheckpoints, LightningCLI)``): ``--ckpt_path`` checked and resolved
    (:func:`resolve_ckpt_path`) before Lightning reads the checkpoint's hyperparameters and before any model is
    built, and :class:`AtomicCheckpointIO` installed in the trainer."""

    def _parse_ckpt_path(self) -> None:
        subcommand = self.config.get("subcommand")
        if subcommand and self.config[subcommand].get("ckpt_path"):
            from freeze_embed.run.cli import checkpoints_in_run_dir
            config = self.config[subcommand]
            checkpoints_in_run_dir(config, ("last_checkpoint",))
            folder = (config.get("last_checkpoint") or {}).get("dirpath")
            config["ckpt_path"] = resolve_ckpt_path(config["ckpt_path"], subcommand, folder, trust_pickle_of(config))
        try:
            super()._parse_ckpt_path()  # reads it with weights_only=True, for its hyperparameters
        except pickle.UnpicklingError:
            if not trust_pickle_of(self.config[subcommand]):
                raise
            # a trusted file only full pickle reads: keep the config's own hyperparameters

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        install(trainer, trust_pickle_of(self.config.get(self.subcommand, self.config)))
        return trainer


def resolve_ckpt_path(ckpt_path: Optional[str], subcommand: str, checkpoint_dir: Optional[str],
                      trust_pickle: bool = False) -> Optional[str]:
    """The checkpoint ``subcommand`` should read, checked before anything is built (see the module's docstring).

    ``last`` is resolved here when the checkpoint folder is known (``--run_dir`` or a ``dirpath``); with none there
    Lightning starts afresh, as it does. ``best``, ``hpc`` and remote paths are left to Lightning.
    """
    if ckpt_path in (None, "best", "hpc") or not _is_local_file_protocol(ckpt_path):
        return ckpt_path
    if ckpt_path == "last":
        if not checkpoint_dir or not os.path.isdir(checkpoint_dir):
            return ckpt_path
        lasts = [os.path.join(checkpoint_dir, n) for n in os.listdir(checkpoint_dir) if LAST.match(n)]
        if not lasts:
            return ckpt_path
        ckpt_path = max(lasts, key=os.path.getmtime)  # Lightning's choice among last*.ckpt
    ckpt_path = os.fspath(ckpt_path)
    if not os.path.isfile(ckpt_path):
        raise UnreadableFileError(f"The checkpoint '{ckpt_path}' given as --ckpt_path does not exist; give a .ckpt "
                                  "file a run wrote (or --ckpt_path last with the run's --run_dir).")
    try:
        _read(ckpt_path, trust_pickle)
        return ckpt_path
    except UnreadableFileError as err:
        if subcommand != "fit" or not LAST.match(os.path.basename(ckpt_path)):
            raise
        return _fallback(ckpt_path, err, trust_pickle)


def _read(path: str, trust_pickle: bool) -> tuple[int, int]:
    """``(global_step, epoch)`` of a checkpoint that reads whole (truncation breaks the zip's directory at its end)."""
    ckpt = load_torch(path, "checkpoint", trust_pickle=trust_pickle)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UnreadableFileError(f"The checkpoint '{path}' is not a Lightning checkpoint (no state_dict in it).")
    return int(ckpt.get("global_step", -1)), int(ckpt.get("epoch", -1))


def _fallback(broken: str, err: UnreadableFileError, trust_pickle: bool) -> str:
    """The newest readable checkpoint (by global step, then epoch, then time) in ``broken``'s folder."""
    folder = os.path.dirname(os.path.abspath(broken))
    readable = {}
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.endswith(".ckpt") and not os.path.samefile(path, broken):
            try:
                readable[path] = (*_read(path, trust_pickle), os.path.getmtime(path))
            except UnreadableFileError:
                pass
    if not readable:
        reason = str(err).rstrip(".")
        raise UnreadableFileError(f"Cannot resume: {reason[0].lower()}{reason[1:]}, and no other checkpoint in "
                                  f"'{folder}' reads either; start the run afresh without --ckpt_path.") from err
    chosen = max(readable, key=readable.get)
    step, epoch, _ = readable[chosen]
    print(f"warning: '{broken}' is unreadable (truncated, or cut by a kill mid-write); resuming from '{chosen}' "
          f"(epoch {epoch}, step {step}), the newest readable checkpoint of this run.", file=sys.stderr)
    return chosen
