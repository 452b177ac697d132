"""L2-SP (Li, Grandvalet, Davoine, "Explicit Inductive Bias for Transfer Learning with Convolutional Networks",
ICML 2018, arXiv:1802.01483): weight decay towards the pretrained weights instead of towards zero.

``form: paper`` (default) adds to the loss

    Omega(w) = alpha / 2 * ||w_S - w_S^0||^2 + beta / 2 * ||w_new||^2

with w_S the parameters shared with the source (pretrained) network, w_S^0 their pretrained values, and w_new the
new layers (here a fresh head; a zero-shot head is pretrained, so it is in w_S). Li et al. (ICLR 2020, "Rethinking
the Hyperparameters for Fine-tuning", Sec. 3.4 and Appendix D) write it lambda_1 / 2 ||theta' - theta_0||^2 +
lambda_2 / 2 ||theta''||^2, re-run the authors' code with "the authors' setting ... constant lambda_2 = 0.01" and
search lambda_1 in {0.1, 0.01, 0.001, 0.0001}: hence the defaults here, beta = 0.01 and alpha = 0.01 (the middle of
that grid; sweep it for a real comparison). They also find that the reference-based penalty helps little on targets
far from the pretraining data.

``form: authors`` is what the fine-tuning paper's authors ran (AnanyaKumar/transfer_learning,
``unlabeled_extrapolation/baseline_train.py``: ``l2sp_weight * get_l2_dist(weight_dict_initial, weight_dict)``,
``l2sp_weight: 0.01`` in ``scripts/run_adaptation_experiments.py``): ``alpha * sum ||theta - theta_0||^2`` over every
tensor, the head included (their ``get_l2_dist`` skips only names containing ``.fc.``, a ResNet's head; CLIP's head
``_classifier`` is pulled to its start), with no 1/2 and no beta term.
"""
from __future__ import annotations

from typing import Literal, Optional

import torch

from freeze_embed.errors import FreezeEmbedError
from freeze_embed.strategies.base import Strategy, TunedModule
from freeze_embed.strategies.full import FullFineTune
from freeze_embed.strategies.wrapper import Wrapper


class L2SPError(FreezeEmbedError, ValueError):
    """L2SP arguments that define no penalty."""


class L2SP(Wrapper):
    """Train as ``strategy`` does (default full fine-tuning; e.g. ``FreezeEmbed``) and add the L2-SP penalty.

    Args:
        alpha: weight of the pull towards theta_0 (``form: paper``: alpha / 2 ||theta - theta_0||^2; ``authors``:
            alpha ||theta - theta_0||^2). theta_0 is the trained parameters' values when training starts, after
            the inner strategy's ``on_fit_start`` (so an LP-FT head is its probed value); kept in checkpoints.
        beta: ``form: paper`` only (default 0.01): weight of beta / 2 ||w||^2 on a new head (plain weight decay);
            a zero-shot head (``model.head_init: zeroshot``) is pretrained, so alpha pulls it to theta_0 instead.
        strategy: which parameters train, at which LR scale; every hook but the penalty is this strategy's.
        form: ``paper`` (Li et al. 2018) or ``authors`` (the fine-tuning paper's code); see the module docstring.

    Frozen parameters never move, so they get no term (their distance to theta_0 stays 0).
    """

    def __init__(self, alpha: float = 0.01, beta: Optional[float] = None, strategy: Optional[Strategy] = None,
                 form: Literal["paper", "authors"] = "paper"):
        if form not in ("paper", "authors"):
            raise L2SPError(f"L2SP form is 'paper' or 'authors', not {form!r}.")
        if form == "authors" and beta:
            raise L2SPError(f"L2SP form 'authors' has no beta term (it pulls the head to its start with alpha); "
                            f"remove beta={beta} or use form 'paper'.")
        beta = (0.01 if form == "paper" else 0.0) if beta is None else beta
        if alpha < 0 or beta < 0:
            raise L2SPError(f"L2SP needs alpha >= 0 and beta >= 0, not alpha={alpha}, beta={beta}.")
        self.alpha, self.beta, self.form = float(alpha), float(beta), form
        self.strategy = strategy if strategy is not None else FullFineTune()
        self._theta0: dict[str, torch.Tensor] = {}

    # --- theta_0: captured once, restored from checkpoints ----------------------------------------------------
    def on_fit_start(self, module: TunedModule) -> None:
        """Capture theta_0 once the inner strategy has set up (an LP-FT probe moves the head) and before any step;
        a resumed run has it from its checkpoint already (``load_state_dict`` runs first)."""
        super().on_fit_start(module)
        if not self._theta0:
            new = set() if self.form == "authors" or module.pretrained_head else set(module.anatomy.head)
            params = dict(module.named_parameters())
            self._theta0 = {n: params[n].detach().clone() for n in module.ever_trained() if n not in new}

    def state_dict(self) -> dict:
        return {"theta0": dict(self._theta0), **super().state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self._theta0 = dict(state.get("theta0") or {})
        super().load_state_dict(state)

    # --- the penalty ----------------------------------------------------------------------------------------
    def penalty(self, module: TunedModule) -> Optional[torch.Tensor]:
        """The pull of trained parameters towards theta_0 (+ beta / 2 ||w||^2 over a new head, ``form: paper``),
        plus the inner strategy's penalty; None when there is nothing to penalise."""
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
                terms.append((0.5 if self.form == "paper" else 1.0) * self.alpha * torch.stack(sp).sum())
        if self.beta:
            head = [params[n].pow(2).sum() for n in module.anatomy.head
                    if n not in self._theta0 and params[n].requires_grad]
            if head:
                terms.append(0.5 * self.beta * torch.stack(head).sum())
        extra = super().penalty(module)
        if extra is not None:
            terms.append(extra)
        return torch.stack(terms).sum() if terms else None

