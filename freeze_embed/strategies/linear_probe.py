"""Linear probing (Table 7): the backbone stays frozen and only the head is learned."""
from __future__ import annotations

from typing import Optional, Sequence

from freeze_embed.anatomy import Anatomy
from freeze_embed.probe import PAPER_C_GRID, probe_head
from freeze_embed.strategies.base import Strategy, TunedModule


class LinearProbe(Strategy):
    """Head only.

    Args:
        logreg: fit the head by the paper's protocol (scikit-learn logistic regression on cached features over
            ``Cs``, chosen on ID validation accuracy) before training. With ``train_head=False`` that is all.
        train_head: also train the head with the configured optimizer after that (or instead, with
            ``logreg=False``).
        Cs: the C grid; the paper's is ``logspace(-7, 2, 50)``.
        feature_cache: a directory to keep extracted features in, so an LR/seed sweep extracts them once.
        select_on: the split that picks C; ``id_val`` (the clean default), or e.g. ``ood_val``, what the authors
            used for FMoW and Camelyon17 (``scripts/run_adaptation_experiments.py``: their ``val_metric``).
        max_iter, random_state: scikit-learn's, as the authors ran them (``unlabeled_extrapolation/log_reg_sk.py``).
    """

    def __init__(self, logreg: bool = True, train_head: bool = False, Cs: Optional[Sequence[float]] = None,
                 feature_cache: Optional[str] = None, select_on: str = "id_val", max_iter: int = 200,
                 random_state: int = 0):
        self.logreg, self.train_head = logreg, train_head
        self.Cs = list(Cs) if Cs is not None else list(PAPER_C_GRID)
        self.feature_cache = feature_cache
        self.select_on, self.max_iter, self.random_state = select_on, max_iter, random_state
        self.probe_result: dict = {}

    def frozen(self, anatomy: Anatomy) -> list[str]:
        return anatomy.embed + [n for b in anatomy.blocks for n in b]

    def on_fit_start(self, module: TunedModule) -> None:
        if self.logreg and not self.probe_result:
            self.probe_result = probe_head(module, self.Cs, self.feature_cache, self.select_on, self.max_iter,
                                           self.random_state)
            module.print(f"Linear probe: C={self.probe_result['C']:.3g} chosen on {self.select_on} "
                         f"(accuracy {self.probe_result['val_acc']:.4f})")

    def state_dict(self) -> dict:
        """The probe is fitted once per run: a resumed run keeps its (since trained) head and refits nothing."""
        return {"probe_result": dict(self.probe_result)}

    def load_state_dict(self, state: dict) -> None:
        self.probe_result = dict(state.get("probe_result") or {})

    @property
    def takes_steps(self) -> bool:
        return self.train_head or not self.logreg
