"""What a strategy may do at the start of an epoch (``Strategy.on_train_epoch_start``): look at the gradients of the
first training batches, give each tensor its own LR scale, and reset the optimizer's state (Auto-RGN does all three).

These are methods of the FineTuner (it mixes :class:`EpochRescale` in), part of the surface a strategy's hooks
receive (``strategies.base.TunedModule``); they use only the FineTuner's public ``trained_now``, ``lr_factor_now()``,
``optimizer_in_backward`` and ``tuning`` and Lightning's own API, so this file never imports the FineTuner.

A strategy that rescales per tensor sets ``per_tensor_groups = True``, so each trained tensor has its own optimizer
group. A scale multiplies that group's base LR under whichever schedule runs (``LambdaLR``'s ``base_lrs`` in the
standard step, the groups' ``initial_lr`` in backward), so the cosine still decays it to 0.
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F


class EpochRescale:
    """The FineTuner's epoch-start operations for strategies (a mixin of ``FineTuner``)."""

    def first_batch_gradients(self, num_batches: int) -> Iterator[dict[str, torch.Tensor]]:
        """``{name: gradient}`` of the cross-entropy on each of the first ``num_batches`` training batches, for every
        parameter trained this epoch; nothing is accumulated into ``.grad`` and no optimizer steps.

        The batches come from a fresh pass over the training loader (under DDP each rank's own shard), as
        ``anniesch/surgical-finetuning``'s ``get_lr_weights`` takes ``islice(loader, 5)``. That pass draws its shuffle
        (and dropout) from its own generator, seeded by the run's seed and the epoch: the training run's random
        stream is untouched, and a resumed run scores the same batches as the uninterrupted one.
        """
        trainer = self.trainer
        named = [(n, p) for n, p in self.named_parameters() if n in self.trained_now and p.requires_grad]
        seed = int(os.environ.get("PL_GLOBAL_SEED", "0")) + 1000 * (self.current_epoch + 1)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            for batch in itertools.islice(iter(trainer.train_dataloader), num_batches):
                batch = trainer.strategy.batch_to_device(batch)
                loss = F.cross_entropy(self(batch[0]), batch[1])
                grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
                yield {n: (g if g is not None else torch.zeros_like(p)) for (n, p), g in zip(named, grads)}

    def mean_over_ranks(self, values: dict[str, float]) -> dict[str, float]:
        """Every rank must use the same scales (else the replicas diverge): the mean over ranks."""
        if self.trainer.world_size <= 1:
            return values
        names = sorted(values)
        t = torch.tensor([values[n] for n in names], dtype=torch.float64, device=self.device)
        t = self.trainer.strategy.reduce(t, reduce_op="mean")
        return dict(zip(names, t.tolist()))

    def _torch_optimizer(self):
        """The optimizer itself (or the in-backward aggregate), not Lightning's wrapper of it."""
        opt = self.optimizers()
        return getattr(opt, "optimizer", opt)

    def set_lr_scales(self, scales: dict[str, float]) -> None:
        """Give each named tensor its own LR scale from now on (its group must hold it alone)."""
        optimizer = self._torch_optimizer()
        scheduler = None if self.optimizer_in_backward else self.lr_schedulers()
        factor = self.lr_factor_now()
        for i, group in enumerate(optimizer.param_groups):
            names = group.get("names", [])
            if len(names) != 1 or names[0] not in scales:
                if any(n in scales for n in names):
                    raise ValueError(f"{type(self.tuning).__name__} rescales single tensors; set "
                                     "per_tensor_groups = True on the strategy.")
                continue
            base = group.setdefault("base_lr", group["initial_lr"] / group["lr_scale"])
            group["lr_scale"] = float(scales[names[0]])
            group["initial_lr"] = base * group["lr_scale"]
            group["lr"] = group["initial_lr"] * factor
            if scheduler is not None:
                scheduler.base_lrs[i] = group["initial_lr"]

    def reset_optimizer_state(self) -> None:
        """Forget momentum / Adam moments, as re-creating the optimizer would."""
        optimizer = self._torch_optimizer()
        for opt in getattr(optimizer, "per_param", {}).values() or [optimizer]:
            opt.state.clear()
