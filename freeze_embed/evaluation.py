"""The FineTuner's evaluation: every set the datamodule describes, measured with the metrics
``freeze_embed.metrics.metrics_for`` builds from that description.

Validation logs ``<set>/<metric>`` and the paper's ``paper/id``, ``paper/ood``; test logs the same under ``test/``
(``TEST_PREFIX``), which the CLI renames ``best/`` and ``last/`` for the two checkpoints it tests after fit.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from freeze_embed.metrics import GroupAccuracy, metrics_for

# Test metrics are "test/<set>/<metric>". Waterbirds' evaluation set is itself named "test" ("test/test/acc"), so
# the CLI renames keys by stripping this one leading prefix, never by replacing "test" anywhere in a key.
TEST_PREFIX = "test/"


class Evaluation:
    """Validation and test steps of the FineTuner (a mixin of ``FineTuner``: ``eval_names``, ``eval_metrics``)."""

    def setup_metrics(self) -> None:
        """One metric collection per evaluation set, from the datamodule's description."""
        dm = self.trainer.datamodule
        if dm is None:  # plain dataloaders (the speed benchmark): one evaluation set, plain accuracy
            self.eval_names, metrics = ["val"], {"val": GroupAccuracy()}
        else:
            self.eval_names = list(dm.eval_names)
            metrics = {name: metrics_for(dm, name) for name in self.eval_names}
        self.eval_metrics = nn.ModuleDict(metrics)

    def _eval_step(self, batch, dataloader_idx: int, prefix: str) -> None:
        x, y = batch[0], batch[1]
        groups = batch[2] if len(batch) > 2 else None
        logits = self(x)
        name = self.eval_names[dataloader_idx]
        self.eval_metrics[name].update(logits, y, groups)
        self.log(f"{prefix}{name}/loss", F.cross_entropy(logits, y), on_step=False, on_epoch=True,
                 add_dataloader_idx=False, sync_dist=True, batch_size=len(y))

    def _eval_epoch_end(self, prefix: str) -> dict[str, float]:
        logged = {}
        for name in self.eval_names:
            for key, value in self.eval_metrics[name].compute().items():
                logged[f"{prefix}{name}/{key}"] = value
            self.eval_metrics[name].reset()
        dm = self.trainer.datamodule
        paper = {} if dm is None else {"id": dm.id_metric, "ood": dm.ood_metric}
        for alias, key in paper.items():
            if f"{prefix}{key}" in logged:  # a group's accuracy is absent when the set has none of it (no Africa)
                logged[f"{prefix}paper/{alias}"] = logged[f"{prefix}{key}"]
        for key, value in logged.items():
            self.log(key, value, on_epoch=True, prog_bar=key in ("id_val/acc", "paper/ood"))
        return logged

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx, "")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("")

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx, TEST_PREFIX)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end(TEST_PREFIX)
