"""The pretraining command line (a LightningCLI, like ``train.py``'s):

    python -m freeze_embed.tools.pretrain fit --config configs/pretrain/demo_resnet_sgd.yaml

Checkpoints go to ``<run_dir>/checkpoints/`` (``last.ckpt`` every epoch: resume with ``--ckpt_path``); after fit the
backbone goes to ``<run_dir>/backbone.pth`` with ``backbone.yaml`` beside it (:func:`module.export_backbone`).
"""
from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

from lightning.pytorch.cli import LightningCLI

from freeze_embed.run.checkpoint_io import DurableCheckpoints
from freeze_embed.run.cli import add_run_arguments, checkpoints_in_run_dir
from freeze_embed.files import write_json
from freeze_embed.pretraining.data import PretrainData
from freeze_embed.pretraining.module import Pretrainer, export_backbone


class PretrainCLI(DurableCheckpoints, LightningCLI):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("trainer_defaults", {
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}}})
        super().__init__(Pretrainer, PretrainData, *args, subclass_mode_data=True, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        add_run_arguments(parser, "Put checkpoints/, backbone.pth and backbone.yaml here; default: the logger's dir.")

    def before_instantiate_classes(self) -> None:
        checkpoints_in_run_dir(self.config.get(self.subcommand, self.config), ("last_checkpoint",))

    def after_fit(self) -> None:
        if self.trainer.interrupted or self.trainer.global_rank != 0:
            return
        out = self.config[self.subcommand].get("run_dir") or self.trainer.log_dir or self.trainer.default_root_dir
        pth, cfg = export_backbone(self.model, out)
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val/")}
        write_json(os.path.join(out, "pretrain.json"), {"epochs": self.trainer.current_epoch, "backbone": pth,
                                                         **metrics})
        print(f"\nPretrained backbone written to {pth} (val/acc {metrics.get('val/acc', float('nan')):.4f});"
              f" fine-tune it with --config {cfg}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command's ``main`` (:mod:`freeze_embed.errors`' convention); ``python -m freeze_embed.tools.pretrain``."""
    PretrainCLI(args=None if argv is None else list(argv))
    return 0
