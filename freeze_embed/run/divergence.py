"""Stop a run at its first non-finite training loss or gradient, before the step, on every process at once.

A learning rate far too high makes the loss NaN within a few steps; left alone the run trains to the end on NaN
weights and reports chance accuracy as if it were a result. :class:`StopOnDivergence` (installed by ``train.py``)
checks each step's loss and gradients and, at the first that is not finite on any process, raises :class:`Diverged`
on every process at the same step, before the optimizer steps: the weights in memory and every checkpoint on disk
stay finite (no checkpoint is written after the stop). The CLI then writes ``results.json`` with ``"diverged": true``.

A gradient counts as non-finite when its sum is (one cheap reduction per tensor, no copy; a sum overflows float32
only for a gradient that has diverged anyway). With 16-mixed precision only the loss is checked: the loss scaler
expects an inf gradient now and then and skips that step itself. With ``model.optimizer_in_backward`` every parameter
steps inside backward, so the loss is checked before backward (a non-finite loss: no parameter steps, backward runs
only to name the gradients); a non-finite gradient under a finite loss is seen after its parameter stepped, and the
run stops at that step all the same, writing no checkpoint after it.
"""
from __future__ import annotations

from typing import Optional

import torch
from lightning.pytorch.callbacks import Callback

NAMES_SHOWN = 3


class Diverged(Exception):
    """Raised by :class:`StopOnDivergence` on every process; ``at`` is what results.json records."""

    def __init__(self, sentence: str, at: dict):
        super().__init__(sentence)
        self.sentence, self.at = sentence, at


def _any_process(trainer, *flags: torch.Tensor) -> list[bool]:
    """For each flag: true on every process when it is true on any (one reduction, one host sync)."""
    device = trainer.strategy.root_device
    flag = torch.stack([f.detach().float().reshape(()).to(device) for f in flags])
    if trainer.world_size > 1:
        flag = trainer.strategy.reduce(flag, reduce_op="sum")
    return [x > 0 for x in flag.tolist()]


def nonfinite(tensors: list[torch.Tensor]) -> torch.Tensor:
    """One bool tensor per tensor, true where its sum is not finite (no host sync)."""
    return ~torch.isfinite(torch.stack([t.detach().sum().float() for t in tensors]))


def describe(epoch: int, step: int, lr: Optional[float], loss_bad: bool, names: list[str],
             stepped: bool = False) -> str:
    """The one sentence the run ends with."""
    what = []
    if loss_bad:
        what.append("the training loss was not finite")
    if names:
        more = len(names) - NAMES_SHOWN
        shown = ", ".join(names[:NAMES_SHOWN]) + (f" and {more} more" if more > 0 else "")
        what.append(f"the gradients of {shown} were not finite")
    lr_text = "" if lr is None else f" (learning rate {lr:.3g})"
    after = ("their parameters had already stepped inside backward, so no checkpoint was written after this step"
             if stepped else "the run stopped before taking this step, so the weights and checkpoints stay finite")
    return (f"Training diverged at epoch {epoch}, step {step}{lr_text}: {' and '.join(what)}; {after}; "
            "lower the learning rate (model.optimizer.init_args.lr).")


class StopOnDivergence(Callback):
    """Stop training at the first step whose loss or gradients are not finite, on every process at once.

    Args:
        check_gradients: also stop on a non-finite gradient under a finite loss (the next step's loss would not be
            finite either, but the weights would be); ignored under 16-mixed precision (see the module's text).
    """

    def __init__(self, check_gradients: bool = True):
        self.check_gradients = check_gradients
        self._loss_bad: Optional[torch.Tensor] = None

    @staticmethod
    def _in_backward(trainer):
        from freeze_embed.in_backward import InBackward
        return next((o for o in trainer.optimizers if isinstance(o, InBackward)), None)

    def _raise(self, trainer, loss_bad: bool, names: list[str], stepped: bool = False) -> None:
        lrs = [g["lr"] for o in trainer.optimizers for g in o.param_groups]
        lr = max(lrs) if lrs else None
        at = {"epoch": trainer.current_epoch, "step": trainer.global_step, "lr": lr, "loss_finite": not loss_bad,
              "nonfinite_gradients": names}
        raise Diverged(describe(trainer.current_epoch, trainer.global_step, lr, loss_bad, names, stepped), at)

    def on_train_start(self, trainer, pl_module) -> None:
        self._loss_bad = None

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        bad = ~torch.isfinite(loss.detach()).all()
        self._loss_bad = bad if self._loss_bad is None else self._loss_bad | bad  # accumulated micro-batches
        in_backward = self._in_backward(trainer)
        if in_backward is not None and _any_process(trainer, bad)[0]:
            in_backward.skip_steps = True  # backward runs only to name the non-finite gradients

    def on_after_backward(self, trainer, pl_module) -> None:
        in_backward = self._in_backward(trainer)
        if in_backward is None:
            return
        names, flags = in_backward.gradient_flags()
        if in_backward.skip_steps:
            in_backward.skip_steps = False
            self._raise(trainer, True, [n for n, bad in zip(names, flags.tolist()) if bad])
        if self.check_gradients and _any_process(trainer, flags.any())[0]:  # on every process: a collective
            self._raise(trainer, False, [n for n, bad in zip(names, flags.tolist()) if bad], stepped=True)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self._in_backward(trainer) is not None:
            return
        named = [(n, p.grad) for n, p in pl_module.named_parameters() if p.grad is not None]
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        loss_bad = self._loss_bad if self._loss_bad is not None else torch.tensor(False)
        grads_bad = nonfinite([g for _, g in named]) if named and self.check_gradients and scaler is None else None
        grads_any = grads_bad.any() if grads_bad is not None else torch.tensor(False)
        loss_any, grads_any = _any_process(trainer, loss_bad, grads_any)
        if loss_any or grads_any:
            names = [n for (n, _), bad in zip(named, grads_bad.tolist()) if bad] if grads_bad is not None else []
            self._raise(trainer, loss_any, names)
        self._loss_bad = None
