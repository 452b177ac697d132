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
  step, with the model in training mode; ``module`` gives it the gradients of the first batches, per-tensor LR
  scales and an optimizer-state reset (Auto-RGN; :class:`TunedModule`); ``per_tensor_groups = True`` gives each
  trained tensor its own optimizer group so it can be rescaled;
* ``penalty(module)``: a term added to the training loss (``None``: nothing), logged as ``train/penalty``
  (L2-SP's pull towards the pretrained weights);
* ``state_dict()`` / ``load_state_dict(state)``: what such work leaves behind that a resumed run must not redo
  (the FineTuner saves it in every checkpoint and restores it before ``on_fit_start``; default: nothing);
* ``takes_steps``: ``False`` when all fitting happens in ``on_fit_start``.

The hooks that take ``module`` receive the FineTuner, and use only the surface :class:`TunedModule` names (the
FineTuner's own strategy attribute is ``tuning``, apart from Lightning's ``trainer.strategy``).

A strategy that trains as another does and adds to it (LP-FT, L2-SP) subclasses ``Wrapper`` (``wrapper.py``), which
forwards every hook above; a new hook goes there too (``tests/test_wrappers.py`` fails until it does).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Optional, Protocol

import torch
from torch import nn

from freeze_embed.anatomy import Anatomy


class TunedModule(Protocol):
    """What a strategy's hooks may use of the module they train (``freeze_embed.module.FineTuner`` is one), so
    strategies never import the FineTuner or read its private state. Linear probing also hands it to
    :func:`freeze_embed.probe.probe_head`, which reads its backbone, head, hparams and trainer (the datamodule)."""

    anatomy: Anatomy
    pretrained_head: bool  # the head comes pretrained (CLIP's zero-shot head), not fresh
    trained_now: frozenset[str]  # the parameter names trained in the current epoch

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]: ...

    def ever_trained(self) -> dict[str, float]:
        """``{name: LR scale}`` of every parameter any epoch trains: what the optimizer holds."""

    def print(self, *args, **kwargs) -> None:
        """Print once (rank 0 under DDP)."""

    # At an epoch's start (freeze_embed.epoch_rescale):
    def first_batch_gradients(self, num_batches: int) -> Iterator[dict[str, torch.Tensor]]:
        """``{name: gradient}`` of each of the first training batches, for the tensors trained this epoch."""

    def mean_over_ranks(self, values: dict[str, float]) -> dict[str, float]:
        """The mean over DDP ranks, so every replica uses the same values."""

    def set_lr_scales(self, scales: dict[str, float]) -> None:
        """Give each named tensor its own LR scale from now on (needs ``per_tensor_groups``)."""

    def reset_optimizer_state(self) -> None:
        """Forget momentum / Adam moments."""


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

    def on_fit_start(self, module: TunedModule) -> None:
        pass

    def on_train_epoch_start(self, module: TunedModule, epoch: int) -> None:
        pass

    def penalty(self, module: TunedModule) -> Optional[torch.Tensor]:
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
