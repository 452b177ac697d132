"""The command line: ``python train.py fit --config configs/demo.yaml`` (a LightningCLI).

Adds what every paper run needs: the best checkpoint chosen on ``id_val`` accuracy (the paper's early stopping),
the last checkpoint for resuming, the backbone's mean/std handed to the data, the head sized from the data, and
after ``fit`` a test of both the best and the last checkpoint written to ``<log_dir>/results.json``.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Optional

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_only

from .data.base import ShiftDataModule
from .errors import FreezeEmbedError
from .module import FineTuner

SELECTION_METRIC = "id_val/acc"  # model selection and early stopping on ID validation accuracy (Section 4)


class FreezeEmbedCLI(LightningCLI):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("seed_everything_default", 0)  # reproducible unless a sweep sets the seed
        kwargs.setdefault("trainer_defaults", {
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}}})
        super().__init__(FineTuner, ShiftDataModule, *args, subclass_mode_data=True, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        # Two checkpoints: the best epoch by ID validation accuracy, and the latest epoch (resume after a crash).
        # Lightning's own save_last only refreshes when a new best is saved, so "last" is a callback of its own.
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.monitor": SELECTION_METRIC, "checkpoint.mode": "max",
                             "checkpoint.filename": "best-epoch{epoch:02d}", "checkpoint.auto_insert_metric_name": False})
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.set_defaults({"last_checkpoint.filename": "last", "last_checkpoint.enable_version_counter": False})
        parser.link_arguments("model.backbone", "data.init_args.backbone")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.add_argument("--test_after_fit", type=bool, default=True,
                            help="After fit, test the best (by id_val accuracy) and the last checkpoint.")
        parser.add_argument("--run_dir", type=Optional[str], default=None,
                            help="Put checkpoints/ and results.json here (sweeps use it); default: the logger's dir.")

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand, self.config)
        run_dir = config.get("run_dir")
        for key in ("checkpoint", "last_checkpoint"):
            if run_dir and not config[key].get("dirpath"):
                config[key]["dirpath"] = os.path.join(run_dir, "checkpoints")

    def after_fit(self) -> None:
        if not self.config[self.subcommand].get("test_after_fit", True) or self.trainer.interrupted:
            return
        ckpts = [c for c in self.trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
        best = next(c for c in ckpts if c.monitor == SELECTION_METRIC)
        last = next(c for c in ckpts if c.monitor is None)
        results = {"best_epoch": None}
        for tag, path in (("best", best.best_model_path), ("last", last.best_model_path)):
            if not path:
                continue
            self.model.test_tag = tag
            out = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=path, verbose=False)
            results[tag] = {k: float(v) for d in out for k, v in d.items()}
            results[f"{tag}_checkpoint"] = path
        results["best_epoch"] = _epoch_of(best.best_model_path)
        self._report(results)

    @rank_zero_only
    def _report(self, results: dict) -> None:
        log_dir = (self.config[self.subcommand].get("run_dir") or self.trainer.log_dir
                   or self.trainer.default_root_dir)
        os.makedirs(log_dir, exist_ok=True)
        with open(os.path.join(log_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
        dm = self.datamodule
        rows = []
        for tag in ("best", "last"):
            r = results.get(tag, {})
            id_v, ood_v = r.get(f"{tag}/paper/id"), r.get(f"{tag}/paper/ood")
            if id_v is not None:
                rows.append(f"  {tag:<5} ID ({dm.id_metric}) {100 * id_v:6.2f}%   OOD ({dm.ood_metric}) "
                            f"{100 * (ood_v or float('nan')):6.2f}%")
        print(f"\nResults (best = epoch {results['best_epoch']} by {SELECTION_METRIC}), "
              f"written to {os.path.join(log_dir, 'results.json')}:\n" + "\n".join(rows), file=sys.stderr)


def _epoch_of(path: str):
    import re
    m = re.search(r"best-epoch(\d+)", os.path.basename(path or ""))
    return int(m.group(1)) if m else None


def main(args=None) -> None:
    try:
        FreezeEmbedCLI(args=args)
    except FreezeEmbedError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
