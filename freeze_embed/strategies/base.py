"""The one base class every freezing strategy subclasses.

A strategy only answers "which parameters train, at what LR scale, in epoch t of T"; the FineTuner turns the answer
into optimizer param groups, ``requires_grad`` flags and the LR schedule. Override any of these hooks:

* ``frozen(anatomy)``: parameter names frozen for the whole run (default: none);
* ``lr_scales(anatomy)``: ``{name: scale}`` multiplying the base LR of some parameters (default: all 1);
* ``trainable(anatomy, epoch, max_epochs)``: ``{name: lr_scale}`` trained in that epoch; the default combines the
  two hooks above, and per-epoch strategies (gradual unfreezing) override it;
* ``epoch_lr_factor(epoch, max_epochs)``: a per-epoch LR multiplier that replaces the cosine schedule; ``None``
  (default) keeps the paper's cosine decay to 0 over all steps (Appendix A);
* ``on_fit_start(module)``: work before the first step (linear probing fits the head here);
* ``state_dict()`` / ``load_state_dict(state)``: what such work leaves behind that a resumed run must not redo
  (the FineTuner saves it in every checkpoint and restores it before ``on_fit_start``; default: nothing).

Frozen parameters get ``requires_grad=False`` and are handed to no optimizer group, so they hold no optimizer state.
The optimizer's groups (one per LR scale) are built from ``trainable`` by :func:`freeze_embed.optim.param_groups`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from ..anatomy import Anatomy

if TYPE_CHECKING:
    from ..module import FineTuner


class Strategy:
    """Full fine-tuning unless a hook says otherwise."""

    def frozen(self, anatomy: Anatomy) -> list[str]:
        return []

    def lr_scales(self, anatomy: Anatomy) -> dict[str, float]:
        return {}

    def trainable(self, anatomy: Anatomy, epoch: int, max_epochs: int) -> dict[str, float]:
        frozen, scales = set(self.frozen(anatomy)), self.lr_scales(anatomy)
        return {n: float(scales.get(n, 1.0)) for n in anatomy.names if n not in frozen}

    def epoch_lr_factor(self, epoch: int, max_epochs: int) -> Optional[float]:
        return None

    def on_fit_start(self, module: "FineTuner") -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    @property
    def trains_steps(self) -> bool:
        """False for strategies whose fitting happens in ``on_fit_start`` only (logistic-regression probing)."""
        return True

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"
