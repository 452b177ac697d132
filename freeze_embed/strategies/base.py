"""The one base class every freezing strategy subclasses, and the words the code uses for what it does.

Vocabulary (the same words in the strategies, the FineTuner, ``parts`` and the tests):

* **frozen**: never trained in this run (``requires_grad=False``, in no optimizer group, no optimizer state);
* **LR scale**: the multiplier of the base LR a parameter gets in its optimizer group (EmbedLRScale's 0.2);
* **trained in epoch t**: ``{name: LR scale}`` of the parameters that get gradients in epoch t of T;
* **epoch LR factor**: a per-epoch multiplier of every group's LR that replaces the cosine (gradual unfreezing);
* **takes steps**: whether training takes gradient steps at all (a logistic-regression probe does not).

A strategy only answers these questions; the FineTuner does the side effects (``freeze_for(epoch)`` sets the flags,
``ever_trained()`` is what the optimizer holds, ``groups_in_epoch(epoch)`` what ``parts`` shows). Hooks to override:

* ``frozen(anatomy)``: names frozen for the whole run (default: none);
* ``lr_scales(anatomy)``: ``{name: LR scale}`` for parameters not at 1 (default: none);
* ``trained_in(anatomy, epoch, max_epochs)``: the default combines the two hooks above; per-epoch strategies
  (gradual unfreezing) override it;
* ``epoch_lr_factor(epoch, max_epochs)``: ``None`` (default) keeps the paper's cosine decay to 0 (Appendix A);
* ``on_fit_start(module)``: work before the first step (linear probing fits the head here);
* ``on_train_epoch_start(module, epoch)``: work at the start of each epoch, after its freezing and before its first
  step, with the model in training mode; :mod:`freeze_embed.epoch_rescale` gives it the gradients of the first
  batches, per-tensor LR scales and an optimizer-state reset (Auto-RGN); ``per_tensor_groups = True`` gives each
  trained tensor its own optimizer group so it can be rescaled;
* ``penalty(module)``: a term added to the training loss (``None``: nothing), logged as ``train/penalty``
  (L2-SP's pull towards the pretrained weights);
* ``state_dict()`` / ``load_state_dict(state)``: what such work leaves behind that a resumed run must not redo
  (the FineTuner saves it in every checkpoint and restores it before ``on_fit_start``; default: nothing);
* ``takes_steps``: ``False`` when all fitting happens in ``on_fit_start``.

A strategy that trains as another does and adds to it (LP-FT, L2-SP) subclasses ``Wrapper`` (``wrapper.py``), which
forwards every hook above; a new hook goes there too (``tests/test_wrappers.py`` fails until it does).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from freeze_embed.anatomy import Anatomy

if TYPE_CHECKING:
    from freeze_embed.module import FineTuner


class Strategy:
    """Full fine-tuning unless a hook says otherwise."""

    per_tensor_groups: bool = False

    def frozen(self, anatomy: Anatomy) -> list[str]:
        return []

    def lr_scales(self, anatomy: Anatomy) -> dict[str, float]:
        return {}

    def trained_in(self, anatomy: Anatomy, epoch: int, max_epochs: int) -> dict[str, float]:
        frozen, scales = set(self.frozen(anatomy)), self.lr_scales(anatomy)
        return {n: float(scales.get(n, 1.0)) for n in anatomy.names if n not in frozen}

    def epoch_lr_factor(self, epoch: int, max_epochs: int) -> Optional[float]:
        return None

    def check(self, max_epochs: int) -> None:
        """Refuse a ``trainer.max_epochs`` this strategy cannot run (a ``values.BadValueError``, one sentence); the
        CLI calls it before the model is built."""

    def on_fit_start(self, module: "FineTuner") -> None:
        pass

    def on_train_epoch_start(self, module: "FineTuner", epoch: int) -> None:
        pass

    def penalty(self, module: "FineTuner") -> Optional[torch.Tensor]:
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    @property
    def takes_steps(self) -> bool:
        """False for strategies whose fitting happens in ``on_fit_start`` only (logistic-regression probing)."""
        return True

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"
