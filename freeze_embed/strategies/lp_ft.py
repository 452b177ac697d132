"""LP-FT (Kumar et al., 2022; Appendix B): linear probe first, then fine-tune from the probed head.

The fine-tuning stage is any other strategy, e.g. ``FreezeEmbed`` for "LP-FT + SGD (freeze-embed)". After a linear
probe the head already fits, so the paper divides every fine-tuning learning rate by 10 (its sweep grids become
SGD [3e-6 .. 1e-3] and AdamW [3e-8 .. 1e-5]).
"""
from __future__ import annotations

from typing import Optional

from freeze_embed.strategies.base import Strategy, TunedModule
from freeze_embed.strategies.full import FullFineTune
from freeze_embed.strategies.linear_probe import LinearProbe
from freeze_embed.strategies.wrapper import Wrapper


class LPFT(Wrapper):
    """Fit the head by ``probe`` (the paper's logistic-regression protocol), then train as ``finetune`` does: every
    other hook (penalty, per-epoch work, groups) is ``finetune``'s."""

    inner_arg = "finetune"

    def __init__(self, finetune: Optional[Strategy] = None, probe: Optional[LinearProbe] = None):
        self.finetune = finetune if finetune is not None else FullFineTune()
        self.probe = probe if probe is not None else LinearProbe(logreg=True)

    def on_fit_start(self, module: TunedModule) -> None:
        self.probe.on_fit_start(module)
        super().on_fit_start(module)

    def state_dict(self) -> dict:
        return {"probe": self.probe.state_dict(), **super().state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.probe.load_state_dict(state.get("probe") or {})
        super().load_state_dict(state)
