"""The command line: ``python train.py fit --config configs/demo.yaml`` (a LightningCLI).

Adds what every paper run needs: the best checkpoint chosen on the dataset's selection metric (the paper's early
stopping on ID validation), the last checkpoint for resuming, the backbone's mean/std handed to the data, the head
sized from the data, the data root checked before the model is built (a wrong root must not cost a download), and
after ``fit`` a test of both the best and the last checkpoint written to ``<log_dir>/results.json`` (a run that
diverged is recorded as such instead: :mod:`freeze_embed.run.divergence`; settings that cannot work are refused before
anything is built: :mod:`freeze_embed.run.values`). The module
logs test metrics as ``test/<set>/<metric>`` (also for ``train.py test``); here they become ``best/...`` and
``last/...``, the names results.json, the sweep and the tables use.

A method file (``configs/method/*.yaml``) also carries ``method.name`` (its name in the paper's tables) and
``method.lr_grid`` (the LRs the authors swept): the one registry of methods, read by the sweep, the benchmarks and
the results tables through this same parser; training itself ignores them.
"""
from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_only

from freeze_embed.run.checkpoint_io import DurableCheckpoints
from freeze_embed.data.base import ShiftDataModule
from freeze_embed.run.divergence import Diverged, StopOnDivergence
from freeze_embed.errors import exit_on_user_error
from freeze_embed.files import write_json
from freeze_embed.run.values import check_config
from freeze_embed.module import TEST_PREFIX, FineTuner


def _checked_num_classes(data: ShiftDataModule) -> int:
    """Runs between building the data and the model: check the data root first, then size the head."""
    data.check_root()
    return data.num_classes


def add_run_arguments(parser, run_dir_help: str) -> None:
    """What every training CLI here has (``train.py``, ``freeze_embed.tools.pretrain``): a ``last.ckpt`` every epoch
    (resume after a crash), the model's backbone linked to the data (its normalisation), the data root checked before
    the model is built, and ``--run_dir``."""
    parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
    parser.set_defaults({"last_checkpoint.filename": "last", "last_checkpoint.enable_version_counter": False})
    parser.link_arguments("model.backbone", "data.init_args.backbone")
    parser.link_arguments("model.backbone_kwargs", "data.init_args.backbone_kwargs")
    parser.link_arguments("data", "model.num_classes", compute_fn=_checked_num_classes, apply_on="instantiate")
    parser.add_argument("--run_dir", type=Optional[str], default=None, help=run_dir_help)


def checkpoints_in_run_dir(config, keys: Sequence[str]) -> None:
    """Checkpoint callbacks without a ``dirpath`` write to ``<run_dir>/checkpoints``."""
    run_dir = config.get("run_dir")
    for key in keys:
        if run_dir and not config[key].get("dirpath"):
            config[key]["dirpath"] = os.path.join(run_dir, "checkpoints")


class FreezeEmbedCLI(DurableCheckpoints, LightningCLI):
    diverged: Optional[Diverged] = None  # set by fit when StopOnDivergence stopped the run

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("seed_everything_default", 0)  # reproducible unless a sweep sets the seed
        kwargs.setdefault("trainer_defaults", {
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}}})
        super().__init__(FineTuner, ShiftDataModule, *args, subclass_mode_data=True, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        # Two checkpoints: the best epoch by the dataset's selection metric, and the latest epoch (resume after a
        # crash). Lightning's own save_last only refreshes when a new best is saved, so "last" is a callback of its own.
        parser.add_lightning_class_args(StopOnDivergence, "divergence")  # the first non-finite loss ends the run
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.mode": "max", "checkpoint.filename": "best-epoch{epoch:02d}",
                             "checkpoint.auto_insert_metric_name": False})
        parser.link_arguments("data.selection_metric", "checkpoint.monitor", apply_on="instantiate")
        add_run_arguments(parser, "Put checkpoints/ and results.json here (sweeps use it); default: the logger's dir.")
        parser.add_argument("--method.name", type=Optional[str], default=None,
                            help="The method's name in the paper's tables (set by configs/method/*.yaml).")
        parser.add_argument("--method.lr_grid", type=Optional[list[float]], default=None,
                            help="The LRs the authors swept for this method; `sweep --lrs paper` runs them.")
        parser.add_argument("--test_after_fit", type=bool, default=True,
                            help="After fit, test the best (by the selection metric) and the last checkpoint.")

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand, self.config)
        check_config(config)  # values that would fail deep inside (or not at all), before anything is built
        if config.get("model", {}).get("optimizer_in_backward"):  # what was asked, before Lightning rewrites it
            from freeze_embed.in_backward import check_precision
            check_precision(config.get("trainer", {}).get("precision"))
        checkpoints_in_run_dir(config, ("checkpoint", "last_checkpoint"))

    def fit(self, **kwargs) -> None:
        """``trainer.fit``; a diverged run (every process raises at the same step) ends in one sentence."""
        try:
            self.trainer.fit(**kwargs)
        except Diverged as stop:
            self.diverged = stop
            _say(stop.sentence)

    def after_fit(self) -> None:
        if self.diverged is not None:  # no test: the run is excluded from LR selection (docs/reliability.md)
            return self._report({"diverged": True, "diverged_at": self.diverged.at, "message": self.diverged.sentence,
                                 "best_epoch": None, "selection_metric": self.datamodule.selection_metric})
        if not self.config[self.subcommand].get("test_after_fit", True) or self.trainer.interrupted:
            return
        ckpts = [c for c in self.trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
        selection = self.datamodule.selection_metric
        best = next(c for c in ckpts if c.monitor == selection)
        last = next(c for c in ckpts if c.monitor is None)
        results = {"best_epoch": None, "selection_metric": selection}
        for tag, path in (("best", best.best_model_path), ("last", last.best_model_path)):
            if not path:
                continue
            out = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=path, verbose=False)
            results[tag] = {tagged(k, tag): float(v) for d in out for k, v in d.items()}
            results[f"{tag}_checkpoint"] = path
            # the loggers saw both tests as test/...: give them the checkpoint's name too (metrics.csv, W&B)
            for logger in self.trainer.loggers:
                logger.log_metrics(results[tag], step=self.trainer.global_step)
                logger.save()
        results["best_epoch"] = _epoch_of(best.best_model_path)
        self._report(results)

    @rank_zero_only
    def _report(self, results: dict) -> None:
        log_dir = (self.config[self.subcommand].get("run_dir") or self.trainer.log_dir
                   or self.trainer.default_root_dir)
        write_json(os.path.join(log_dir, "results.json"), results)  # strict JSON: NaN -> null
        if results.get("diverged"):
            return print(f"Diverged: recorded in {os.path.join(log_dir, 'results.json')}", file=sys.stderr)
        dm = self.datamodule
        rows = []
        for tag in ("best", "last"):
            r = results.get(tag, {})
            id_v, ood_v = r.get(f"{tag}/paper/id"), r.get(f"{tag}/paper/ood")
            if id_v is not None:
                rows.append(f"  {tag:<5} ID ({dm.id_metric}) {_pct(id_v)}   OOD ({dm.ood_metric}) {_pct(ood_v)}")
        print(f"\nResults (best = epoch {results['best_epoch']} by {results['selection_metric']}), "
              f"written to {os.path.join(log_dir, 'results.json')}:\n" + "\n".join(rows), file=sys.stderr)


@rank_zero_only
def _say(sentence: str) -> None:
    print(sentence, file=sys.stderr)


def tagged(key: str, tag: str) -> str:
    """A test metric's key under the checkpoint's tag: ``test/id_val/acc`` -> ``best/id_val/acc``.

    Only the leading ``test/`` is replaced: Waterbirds' evaluation set is itself called ``test`` (``test/test/acc``
    -> ``best/test/acc``). A key some callback logged without the prefix is kept as it is.
    """
    return f"{tag}/{key[len(TEST_PREFIX):]}" if key.startswith(TEST_PREFIX) else key


def _pct(value: Optional[float]) -> str:
    """A collapsed model's 0 shows as 0.00%; only a metric that was not computed shows as n/a."""
    return "   n/a" if value is None else f"{100 * value:6.2f}%"


def _epoch_of(path: str):
    import re
    m = re.search(r"best-epoch(\d+)", os.path.basename(path or ""))
    return int(m.group(1)) if m else None


def main(args=None) -> None:
    exit_on_user_error(lambda: FreezeEmbedCLI(args=args))
