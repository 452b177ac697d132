"""Gradual unfreezing (Table 5; Appendix A "Learning rate schedule for gradual unfreezing")."""
from __future__ import annotations

import math

from freeze_embed.anatomy import Anatomy
from freeze_embed.strategies.base import Strategy


class GradualUnfreeze(Strategy):
    """At epoch t (0-indexed) of T, train the head and the top ``int(t / (T-1) * L)`` of the L blocks.

    The LR is not cosine-decayed: epoch t multiplies the base LR by ``exp(decay_exp * (1 - t / (T-1)))``, about
    41.7x in epoch 0 and 1x in the last, because tuning fewer layers wants a larger LR (3.73 was chosen on
    Waterbirds). The embedding stays frozen throughout, as in the paper's code for SGD.

    As in the authors' ``freeze_bottom_trans`` (``unlabeled_extrapolation/models/clip_model.py``): CLIP's ``proj``
    (``anatomy.proj``) trains with the head from epoch 0 (it is in none of their freezable layers); the final norm
    (``ln_post``, part of the top block) from the first epoch that unfreezes a block; class and position tokens (part
    of the bottom block) once every block is unfrozen.
    """

    def __init__(self, decay_exp: float = 3.73, freeze_embed: bool = True):
        self.decay_exp = decay_exp
        self.freeze_embed = freeze_embed

    def check(self, max_epochs: int) -> None:
        if max_epochs < 2:  # epoch 0 trains the head alone; the schedule unfreezes blocks from epoch 1 of T - 1
            from freeze_embed.run.values import BadValueError
            raise BadValueError(f"GradualUnfreeze needs trainer.max_epochs of at least 2 (epoch 0 trains the head "
                                f"alone, later epochs unfreeze blocks), not {max_epochs}; "
                                "e.g. --trainer.max_epochs 10.")

    @staticmethod
    def _progress(epoch: int, max_epochs: int) -> float:
        return 1.0 if max_epochs <= 1 else min(epoch, max_epochs - 1) / (max_epochs - 1)

    def num_unfrozen_blocks(self, num_blocks: int, epoch: int, max_epochs: int) -> int:
        return int(self._progress(epoch, max_epochs) * num_blocks)

    def trained_in(self, anatomy: Anatomy, epoch: int, max_epochs: int) -> dict[str, float]:
        k = self.num_unfrozen_blocks(len(anatomy.blocks), epoch, max_epochs)
        names = [n for block in anatomy.blocks[len(anatomy.blocks) - k:] for n in block]
        names += [n for n in anatomy.proj if n not in names] + anatomy.head
        if not self.freeze_embed and k == len(anatomy.blocks):
            names = anatomy.embed + names
        return {n: 1.0 for n in names}

    def epoch_lr_factor(self, epoch: int, max_epochs: int) -> float:
        return math.exp(self.decay_exp * (1.0 - self._progress(epoch, max_epochs)))
