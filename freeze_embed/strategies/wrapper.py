"""The base of strategies that train as another strategy does and add to it (LP-FT's probe, L2-SP's penalty).

Every hook of :class:`~freeze_embed.strategies.base.Strategy` goes to the inner strategy here, so a wrapper extends
the hooks it adds to (calling ``super()``) and cannot drop the others. ``tests/test_wrappers.py`` enumerates
Strategy's hooks and fails until each has a check that every wrapper forwards it: a hook added to Strategy later
must be added here too.
"""
from __future__ import annotations

from typing import Optional

import torch

from freeze_embed.anatomy import Anatomy
from freeze_embed.strategies.base import Strategy, TunedModule


class Wrapper(Strategy):
    """Train as ``inner`` does. ``inner_arg`` names the ``__init__`` argument (and attribute) that holds it; the
    inner's run state is kept under that key of ``state_dict``."""

    inner_arg: str = "strategy"

    @property
    def inner(self) -> Strategy:
        return getattr(self, self.inner_arg)

    def frozen(self, anatomy: Anatomy) -> list[str]:
        return self.inner.frozen(anatomy)

    def lr_scales(self, anatomy: Anatomy) -> dict[str, float]:
        return self.inner.lr_scales(anatomy)

    def trained_in(self, anatomy: Anatomy, epoch: int, max_epochs: int) -> dict[str, float]:
        return self.inner.trained_in(anatomy, epoch, max_epochs)

    def epoch_lr_factor(self, epoch: int, max_epochs: int) -> Optional[float]:
        return self.inner.epoch_lr_factor(epoch, max_epochs)

    def check(self, max_epochs: int) -> None:
        self.inner.check(max_epochs)

    def on_fit_start(self, module: TunedModule) -> None:
        self.inner.on_fit_start(module)

    def on_train_epoch_start(self, module: TunedModule, epoch: int) -> None:
        self.inner.on_train_epoch_start(module, epoch)

    def penalty(self, module: TunedModule) -> Optional[torch.Tensor]:
        return self.inner.penalty(module)

    def state_dict(self) -> dict:
        return {self.inner_arg: self.inner.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state.get(self.inner_arg) or {})

    @property
    def per_tensor_groups(self) -> bool:
        return self.inner.per_tensor_groups

    @property
    def takes_steps(self) -> bool:
        return self.inner.takes_steps
