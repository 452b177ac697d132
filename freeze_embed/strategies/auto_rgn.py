"""Auto-RGN, surgical fine-tuning's automatic criterion (Lee et al., ICLR 2023, Section 5)."""
from __future__ import annotations

import numpy as np

from freeze_embed.strategies.base import Strategy, TunedModule


class AutoRGN(Strategy):
    """Each epoch, each tensor's LR scale is its relative gradient norm ``||g|| / ||theta||`` averaged over the first
    ``num_batches`` training batches, divided by the largest: the tensors the data pulls hardest train fastest.

    As ``get_lr_weights`` and the ``auto_tune == 'RGN'`` branch of ``main.py`` in ``anniesch/surgical-finetuning``:
    5 batches, per-batch ratios averaged, divided by the maximum, and the optimizer re-created every epoch (its
    state forgotten): ``reset_state: true`` does the same here by clearing the optimizer's state, which leaves the
    groups, the cosine schedule and checkpoints as they are. Differences: the original neither trains nor scores
    BatchNorm parameters (it drops every name containing ``bn``); here every tensor is scored and trained, norm
    layers included (``skip_norms: true`` leaves norm layers at scale 1 instead of scoring them), and a tensor that is
    all zeros (no relative norm; the original divides by 0) keeps scale 1; the original runs
    Adam at a constant LR, here the run's optimizer and schedule apply on top of the scales.
    """

    per_tensor_groups = True

    def __init__(self, num_batches: int = 5, reset_state: bool = True, skip_norms: bool = False):
        self.num_batches = num_batches
        self.reset_state = reset_state
        self.skip_norms = skip_norms
        self.scales: dict[str, float] = {}

    def relative_grad_norms(self, module: TunedModule) -> dict[str, float]:
        """``||g|| / ||theta||`` per trained tensor, averaged over the first batches and over DDP ranks."""
        params = dict(module.named_parameters())
        ratios: dict[str, list[float]] = {}
        for grads in module.first_batch_gradients(self.num_batches):
            for name, g in grads.items():
                size = params[name].detach().norm()
                if size == 0 or (self.skip_norms and name in module.anatomy.norms):
                    continue  # a zero tensor (an unused bias) has no relative norm: it keeps its scale
                ratios.setdefault(name, []).append((g.norm() / size).item())
        if not ratios:
            raise ValueError("AutoRGN found no training batch to score; the training set is empty.")
        return module.mean_over_ranks({n: float(np.mean(r)) for n, r in ratios.items()})

    def on_train_epoch_start(self, module: TunedModule, epoch: int) -> None:
        rgn = self.relative_grad_norms(module)
        largest = max(rgn.values())
        self.scales = {n: (v / largest if largest > 0 else 1.0) for n, v in rgn.items()}
        module.set_lr_scales(self.scales)
        if self.reset_state:
            module.reset_optimizer_state()

    def state_dict(self) -> dict:
        return {"scales": dict(self.scales)}

    def load_state_dict(self, state: dict) -> None:
        self.scales = dict(state.get("scales", {}))
