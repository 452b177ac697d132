"""Linear probing (Table 7): the backbone stays frozen and only the head is learned."""
from __future__ import annotations

from typing import Optional, Sequence

from ..anatomy import Anatomy
from ..probe import PAPER_C_GRID, probe_head
from .base import Strategy


class LinearProbe(Strategy):
    """Head only.

    Args:
        logreg: fit the head by the paper's protocol (scikit-learn logistic regression on cached features over
            ``Cs``, chosen on ID validation accuracy) before training. With ``train_head=False`` that is all.
        train_head: also train the head with the configured optimizer after that (or instead, with
            ``logreg=False``).
        Cs: the C grid; the paper's is ``logspace(-7, 2, 50)``.
        feature_cache: a directory to keep extracted features in, so an LR/seed sweep extracts them once.
    """

    def __init__(self, logreg: bool = True, train_head: bool = False, Cs: Optional[Sequence[float]] = None,
                 feature_cache: Optional[str] = None):
        self.logreg, self.train_head = logreg, train_head
        self.Cs = list(Cs) if Cs is not None else list(PAPER_C_GRID)
        self.feature_cache = feature_cache
        self.probe_result: dict = {}

    def frozen(self, anatomy: Anatomy) -> list[str]:
        return anatomy.embed + [n for b in anatomy.blocks for n in b]

    def on_fit_start(self, module) -> None:
        if self.logreg and not self.probe_result:
            self.probe_result = probe_head(module, self.Cs, self.feature_cache)
            module.print(f"Linear probe: C={self.probe_result['C']:.3g}, "
                         f"id_val acc {self.probe_result['id_val_acc']:.4f}")

    @property
    def trains_steps(self) -> bool:
        return self.train_head or not self.logreg
