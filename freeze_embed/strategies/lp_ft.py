"""LP-FT (Kumar et al., 2022; Appendix B): linear probe first, then fine-tune from the probed head.

The fine-tuning stage is any other strategy, e.g. ``FreezeEmbed`` for "LP-FT + SGD (freeze-embed)". After a linear
probe the head already fits, so the paper divides every fine-tuning learning rate by 10 (its sweep grids become
SGD [3e-6 .. 1e-3] and AdamW [3e-8 .. 1e-5]).
"""
from __future__ import annotations

from typing import Optional

from ..anatomy import Anatomy
from .base import Strategy
from .full import FullFineTune
from .linear_probe import LinearProbe


class LPFT(Strategy):
    """Fit the head by ``probe`` (the paper's logistic-regression protocol), then train as ``finetune`` does."""

    def __init__(self, finetune: Optional[Strategy] = None, probe: Optional[LinearProbe] = None):
        self.finetune = finetune if finetune is not None else FullFineTune()
        self.probe = probe if probe is not None else LinearProbe(logreg=True)

    def trained_in(self, anatomy: Anatomy, epoch: int, max_epochs: int) -> dict[str, float]:
        return self.finetune.trained_in(anatomy, epoch, max_epochs)

    def epoch_lr_factor(self, epoch: int, max_epochs: int):
        return self.finetune.epoch_lr_factor(epoch, max_epochs)

    def check(self, max_epochs: int) -> None:
        self.finetune.check(max_epochs)

    def on_fit_start(self, module) -> None:
        self.probe.on_fit_start(module)
        self.finetune.on_fit_start(module)

    def state_dict(self) -> dict:
        return {"probe": self.probe.state_dict(), "finetune": self.finetune.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.probe.load_state_dict(state.get("probe") or {})
        self.finetune.load_state_dict(state.get("finetune") or {})
