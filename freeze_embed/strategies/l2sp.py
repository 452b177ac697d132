"""L2-SP (Li, Grandvalet, Davoine, "Explicit Inductive Bias for Transfer Learning with Convolutional Networks",
ICML 2018, arXiv:1802.01483): weight decay towards the pretrained weights instead of towards zero.

The penalty added to the loss is

    Omega(w) = alpha / 2 * ||w_S - w_S^0||^2 + beta / 2 * ||w_new||^2

with w_S the parameters shared with the source (pretrained) network, w_S^0 their pretrained values, and w_new the
new layers (here the head). Li et al. (ICLR 2020, "Rethinking the Hyperparameters for Fine-tuning", Sec. 3.4 and
Appendix D) write it lambda_1 / 2 ||theta' - theta_0||^2 + lambda_2 / 2 ||theta''||^2, re-run the authors' code with
"the authors' setting ... constant lambda_2 = 0.01" and search lambda_1 in {0.1, 0.01, 0.001, 0.0001}: hence the
defaults here, beta = 0.01 and alpha = 0.01 (the middle of that grid; sweep it for a real comparison). They also
find that the reference-based penalty helps little on targets far from the pretraining data.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from ..anatomy import Anatomy
from .base import Strategy
from .full import FullFineTune

if TYPE_CHECKING:
    from ..module import FineTuner


class L2SP(Strategy):
    """Train as ``strategy`` does (default full fine-tuning; e.g. ``FreezeEmbed``) and add the L2-SP penalty.

    Args:
        alpha: weight of alpha / 2 ||theta - theta_0||^2 on the trained backbone parameters (theta_0: their values
            when fitting starts, i.e. the pretrained ones; kept in checkpoints, so a resumed run keeps them).
        beta: weight of beta / 2 ||w||^2 on the head (``anatomy.head``), plain weight decay on the new layer.
        strategy: which parameters train, at which LR scale; every hook but the penalty is this strategy's.

    Frozen parameters never move, so they get no term (their distance to theta_0 stays 0).
    """

    def __init__(self, alpha: float = 0.01, beta: float = 0.01, strategy: Optional[Strategy] = None):
        if alpha < 0 or beta < 0:
            raise ValueError(f"L2SP needs alpha >= 0 and beta >= 0, not alpha={alpha}, beta={beta}.")
        self.alpha, self.beta = float(alpha), float(beta)
        self.strategy = strategy if strategy is not None else FullFineTune()
        self._theta0: dict[str, torch.Tensor] = {}

    # --- which parameters train: the inner strategy's ---------------------------------------------------------
    def frozen(self, anatomy: Anatomy) -> list[str]:
        return self.strategy.frozen(anatomy)

    def lr_scales(self, anatomy: Anatomy) -> dict[str, float]:
        return self.strategy.lr_scales(anatomy)

    def trained_in(self, anatomy: Anatomy, epoch: int, max_epochs: int) -> dict[str, float]:
        return self.strategy.trained_in(anatomy, epoch, max_epochs)

    def epoch_lr_factor(self, epoch: int, max_epochs: int) -> Optional[float]:
        return self.strategy.epoch_lr_factor(epoch, max_epochs)

    def check(self, max_epochs: int) -> None:
        self.strategy.check(max_epochs)

    @property
    def takes_steps(self) -> bool:
        return self.strategy.takes_steps

    @property
    def per_tensor_groups(self) -> bool:
        return self.strategy.per_tensor_groups

    def on_train_epoch_start(self, module: "FineTuner", epoch: int) -> None:
        self.strategy.on_train_epoch_start(module, epoch)

    # --- theta_0: captured once, restored from checkpoints ----------------------------------------------------
    def on_fit_start(self, module: "FineTuner") -> None:
        """Capture theta_0 (the backbone parameters any epoch trains) before anything moves them; a resumed run
        has them from its checkpoint already (``load_state_dict`` runs first)."""
        if not self._theta0:
            head = set(module.anatomy.head)
            params = dict(module.named_parameters())
            self._theta0 = {n: params[n].detach().clone() for n in module.ever_trained() if n not in head}
        self.strategy.on_fit_start(module)

    def state_dict(self) -> dict:
        return {"theta0": dict(self._theta0), "strategy": self.strategy.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self._theta0 = dict(state.get("theta0") or {})
        self.strategy.load_state_dict(state.get("strategy") or {})

    # --- the penalty ----------------------------------------------------------------------------------------
    def penalty(self, module: "FineTuner") -> Optional[torch.Tensor]:
        """alpha / 2 sum ||theta - theta_0||^2 over trained backbone parameters + beta / 2 ||w||^2 over the head
        (plus the inner strategy's penalty, if it has one); None when there is nothing to penalise."""
        if not self._theta0 and self.alpha:
            raise RuntimeError("L2SP.penalty needs theta_0: call on_fit_start(module) first (fit does).")
        params = dict(module.named_parameters())
        terms = []
        if self.alpha:
            sp = []
            for name, ref in self._theta0.items():
                p = params[name]
                if not p.requires_grad:
                    continue
                if ref.device != p.device or ref.dtype != p.dtype:
                    ref = self._theta0[name] = ref.to(device=p.device, dtype=p.dtype)
                sp.append((p - ref).pow(2).sum())
            if sp:
                terms.append(0.5 * self.alpha * torch.stack(sp).sum())
        if self.beta:
            head = [params[n].pow(2).sum() for n in module.anatomy.head if params[n].requires_grad]
            if head:
                terms.append(0.5 * self.beta * torch.stack(head).sum())
        extra = self.strategy.penalty(module)
        if extra is not None:
            terms.append(extra)
        return torch.stack(terms).sum() if terms else None
