"""The one base class every freezing strategy subclasses.

A strategy only answers "which parameters train, at what LR scale, in epoch t of T"; the FineTuner turns the answer
into optimizer param groups, ``requires_grad`` flags and the LR schedule. Override any of these hooks:

* ``frozen(anatomy)``: parameter names frozen for the whole run (default: none);
* ``lr_scales(anatomy)``: ``{name: scale}`` multiplying the base LR of some parameters (default: all 1);
* ``trainable(anatomy, epoch, max_epochs)``: ``{name: lr_scale}`` trained in that epoch; the default combines the
  two hooks above, and per-epoch strategies (gradual unfreezing) override it;
* ``epoch_lr_factor(epoch, max_epochs)``: a per-epoch LR multiplier that replaces the cosine schedule; ``None``
  (default) keeps the paper's cosine decay to 0 over all steps (Appendix A);
* ``on_fit_start(module)``: work before the first step (linear probing fits the head here).

Frozen parameters get ``requires_grad=False`` and are handed to no optimizer group, so they hold no optimizer state.
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

    @property
    def trains_steps(self) -> bool:
        """False for strategies whose fitting happens in ``on_fit_start`` only (logistic-regression probing)."""
        return True

    def param_groups(self, anatomy: Anatomy, epoch: int, max_epochs: int) -> list[dict]:
        """The optimizer's view of epoch ``epoch``: ``[{"lr_scale": s, "names": [...]}, ...]``, largest scale first.

        ``lr_scale`` includes the strategy's own per-epoch factor, if it has one; frozen names are in no group.
        """
        factor = self.epoch_lr_factor(epoch, max_epochs)
        groups: dict[float, list[str]] = {}
        for name, scale in self.trainable(anatomy, epoch, max_epochs).items():
            groups.setdefault(scale * (1.0 if factor is None else factor), []).append(name)
        return [{"lr_scale": s, "names": names} for s, names in sorted(groups.items(), key=lambda kv: -kv[0])]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"
