"""Random-number-generator states in checkpoints: Lightning saves none, and an exact resume needs them all."""
from __future__ import annotations

import numpy as np
import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states


def rng_states() -> dict:
    """CPU, numpy, Python and every CUDA device's states, numpy's as plain lists (``torch.load(weights_only=True)``
    refuses numpy arrays)."""
    states = _collect_rng_states(include_cuda=torch.cuda.is_available())
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    states["numpy"] = (kind, keys.tolist(), int(pos), int(has_gauss), float(gauss))
    return states


def set_rng_states(saved: dict) -> None:
    """Restore :func:`rng_states`; a GPU run resumed on CPU has no CUDA state to restore."""
    states = dict(saved)
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    states["numpy"] = (kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss)
    if not torch.cuda.is_available():
        states.pop("torch.cuda", None)
    _set_rng_states(states)


class ResumedRNG:
    """Where a resumed run's random streams restart: where the uninterrupted run's were when it saved.

    The restore path draws from the global RNG before the first resumed epoch starts: Lightning's ``FitLoop.
    setup_data`` creates the training DataLoader's iterator (its worker base seed and the sampler's shuffle seed come
    from the global generator) before ``on_train_epoch_start``, while the uninterrupted run creates it after (in
    ``_TrainingEpochLoop.on_run_start``). So the states are set back at ``on_train_start`` and, when a new epoch
    starts, the iterator is created again after the epoch's start hooks, in the uninterrupted run's order. A run
    resumed mid-epoch keeps its iterator (the uninterrupted run made none there).
    """

    def __init__(self):
        self.saved: dict | None = None

    def load(self, saved: dict) -> None:
        set_rng_states(saved)
        self.saved = saved

    def on_train_start(self) -> None:
        if self.saved is not None:
            set_rng_states(self.saved)

    def after_epoch_start(self, trainer, new_epoch: bool) -> None:
        if self.saved is None:
            return
        fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
        if new_epoch and fetcher is not None:
            iter(fetcher)  # what _TrainingEpochLoop.on_run_start does when it is not resuming
        self.saved = None
