"""SubTuning's trials: each block subset is one ordinary, resumable ``train.py fit`` run, launched like a sweep's.

A trial is a :class:`~freeze_embed.tools.sweep.run.Run` labelled ``blocks_0-3`` in ``DIR/trials/blocks_0-3/``, its
config the user's composed config with ``model.strategy`` = ``TrainBlocks(blocks=[0, 3], embed=False, head=True)``, at
the config's LR and seed (the same for every trial, so subsets differ only in what trains). A trial with a results.json
is done and is never rerun; one with a last.ckpt resumes: the same command finishes an interrupted search. Its score
is ``last/<selection metric>`` of its results.json (none for a trial that diverged or failed: it is
no candidate; the dataset's ID validation metric after the last epoch, as the
official search reads ``callback_metrics["pred_acc"]`` after fit), or with ``score="best"`` ``best/<selection
metric>``, at its best epoch (as the sweep reads it). With ``folds`` K (SubTuning's ``greedy_cross_val``), a subset
is K runs in ``blocks_0-3/fold<k>/``, each trained on K-1 folds of the training set and scored on the held-out one
(:class:`~freeze_embed.data.HoldOutFold`); its score is their mean, and ID validation is never looked at.
"""
from __future__ import annotations

import argparse
import copy
import csv
import sys
from pathlib import Path
from typing import Optional, Sequence

from freeze_embed.files import atomic_write
from freeze_embed.run.results import RunResults
from freeze_embed.tools.sweep.launchers import launch
from freeze_embed.tools.sweep.run import Run, last_error_line
from freeze_embed.tools.subtuning.search import SearchError, Subset, Trial, subset_name

STRATEGY = "freeze_embed.strategies.TrainBlocks"
FOLDS = "freeze_embed.data.HoldOutFold"
SCORES = ("last", "best")  # the checkpoint a trial is scored at: the official last epoch, or the best epoch
CSV_FIELDS = ["round", "move", "subset", "n_blocks", "score", "metric", "id", "ood", "status", "run_dir"]


class Pending(Exception):
    """Trials were submitted (SLURM, ``--no_wait``) or are still running: the search goes on when they finish."""


def trial_config(config: dict, subset: Sequence[int], fold: Optional[int] = None, folds: int = 0,
                 embed_blocks: bool = False) -> dict:
    """The user's config training only ``subset`` (plus the head): SubTuning's trial; with ``folds``, on all but
    fold ``fold`` of the training set, selected on that fold; with ``embed_blocks``, indices count the embedding's
    blocks first (``TrainBlocks.embed_blocks``)."""
    cfg = copy.deepcopy(config)
    cfg["model"]["strategy"] = {"class_path": STRATEGY, "init_args": strategy_args(subset, embed_blocks)}
    if folds:
        data = cfg["data"]
        data.get("init_args", {}).pop("backbone", None)  # train.py links model.backbone to the outer datamodule
        cfg["data"] = {"class_path": FOLDS, "init_args": {"data": data, "fold": fold, "folds": folds}}
    return cfg


def strategy_args(subset: Sequence[int], embed_blocks: bool = False) -> dict:
    """``TrainBlocks``' arguments for a trial or the pick."""
    return {"blocks": sorted(int(i) for i in subset), "embed": False, "head": True,
            **({"embed_blocks": True} if embed_blocks else {})}


def count_blocks(config: dict, embed_blocks: bool = False) -> int:
    """The number of candidate blocks of the config's backbone (the anatomy's, plus the embedding's with
    ``embed_blocks``): built with random weights, so nothing downloads."""
    from freeze_embed.run.methods import build_module
    model = config["model"]
    keep = ("backbone_kwargs", "embed", "embed_tokens", "num_classes")
    module = build_module(None, model["backbone"], pretrained=False,
                          **{k: model[k] for k in keep if model.get(k) is not None})[0]
    return len(module.anatomy.blocks) + (len(module.anatomy.embed_blocks) if embed_blocks else 0)


def lr_and_seed(config: dict) -> tuple[float, int]:
    lr = ((config["model"].get("optimizer") or {}).get("init_args") or {}).get("lr")
    if lr is None:
        raise SearchError("the config sets no model.optimizer.init_args.lr; give one, e.g. --model.optimizer.init_args"
                          ".lr 1e-3 (every trial trains at it).")
    seed = config.get("seed_everything")
    return float(lr), seed if isinstance(seed, int) and not isinstance(seed, bool) else 0


class TrialRunner:
    """The scorer of :func:`~.search.greedy_search`: trains a round's missing subsets, reads every score."""

    def __init__(self, config: dict, out: Path, launch_args: argparse.Namespace, group: str = "", folds: int = 0,
                 score: str = "last", embed_blocks: bool = False):
        """``launch_args``: the options of :func:`~freeze_embed.tools.sweep.launchers.add_launch_arguments`."""
        if folds == 1 or folds < 0:
            raise SearchError(f"--folds must be 2 or more (or 0: score on ID validation), not {folds}.")
        if score not in SCORES:
            raise SearchError(f"--score is one of {', '.join(SCORES)}, not {score!r}.")
        self.folds, self.score, self.embed_blocks = folds, score, embed_blocks
        self.config, self.out, self.launch_args, self.group = config, Path(out), launch_args, group
        self.lr, self.seed = lr_and_seed(config)
        self.failed: list[Run] = []

    def run(self, subset: Sequence[int]) -> Run:
        """The subset's trial (its directory, with one ``fold<k>/`` run per fold under ``--folds``)."""
        name = subset_name(subset)
        return Run(self.lr, self.seed, str(self.out / "trials" / name), self.group, label=name)

    def runs(self, subset: Sequence[int]) -> list[Run]:
        """What trains for ``subset``: one run, or one per fold."""
        if not self.folds:
            return [self.run(subset)]
        name = subset_name(subset)
        return [Run(self.lr, self.seed, str(self.out / "trials" / name / f"fold{k}"), self.group,
                    label=f"{name}_fold{k}") for k in range(self.folds)]

    def _results(self, subset: Sequence[int]) -> list[RunResults]:
        return [RunResults.read(r.run_dir) or RunResults() for r in self.runs(subset)]

    def _mean(self, subset: Sequence[int], metric: str) -> Optional[float]:
        values = [r.value(metric, self.score) for r in self._results(subset)]
        return None if any(v is None for v in values) else sum(values) / len(values)

    def score_of(self, subset: Sequence[int]) -> tuple[Optional[float], str]:
        metric = self._results(subset)[0].selection_metric
        return self._mean(subset, metric), metric

    def status(self, subset: Sequence[int]) -> str:
        """``done``, ``diverged`` (a run's results.json says so: never selectable, never rerun) or ``failed``."""
        if any(r.diverged for r in self._results(subset)):
            return "diverged"
        return "done" if self.score_of(subset)[0] is not None else "failed"

    def paper_numbers(self, subset: Sequence[int]) -> dict[str, Optional[float]]:
        """The trial's ID and OOD numbers (``last/paper/id``, ``last/paper/ood``, or ``best/...``: the checkpoint
        it is scored at; the mean over folds), for reading the search; the search itself never looks at them."""
        return {k: self._mean(subset, f"paper/{k}") for k in ("id", "ood")}

    def __call__(self, subsets: Sequence[Subset]) -> list[Optional[float]]:
        runs = {r.name: (r, s, k) for s in subsets for k, r in enumerate(self.runs(s))}  # asked twice: trains once
        self._what = {name: (s, k) for name, (_, s, k) in runs.items()}
        runs = {name: r for name, (r, _, _) in runs.items()}
        launched = launch(list(runs.values()), lambda run: trial_config(self.config, *self._what[run.name], self.folds,
                                                                        self.embed_blocks),
                          self.config, self.launch_args, self.out / "slurm", f"subtuning-{self.group}")
        no_wait = self.launch_args.launcher != "local" and self.launch_args.no_wait  # submit a round's jobs and exit
        waiting = launched.in_flight + (launched.started if no_wait else [])
        if waiting:
            raise Pending(f"{len(waiting)} trials are queued or running")
        scores = [self.score_of(s)[0] for s in subsets]
        self.failed += [r for s, x in zip(subsets, scores) if x is None for r in self.runs(s)
                        if RunResults.read(r.run_dir) is None]
        return scores


class SearchLog:
    """``DIR/search.csv``: one row per trial, written as each round ends (a crash loses nothing). The search replays
    finished trials from their results.json, so the file is rewritten from the top on every start."""

    def __init__(self, path: Path, runner: TrialRunner):
        self.path, self.runner = Path(path), runner
        self.rows: list[dict] = []
        self._write()

    def _write(self) -> None:
        """The whole file, atomically: a kill mid-write leaves the previous round's file."""
        with atomic_write(self.path, "w") as f:
            writer = csv.DictWriter(f, CSV_FIELDS)
            writer.writeheader()
            writer.writerows(self.rows)

    def __call__(self, trials: list[Trial]) -> None:
        for t in trials:
            run = self.runner.run(t.subset)
            score, metric = self.runner.score_of(t.subset)
            status = self.runner.status(t.subset)
            paper = {k: "" if v is None else f"{v:.6f}" for k, v in self.runner.paper_numbers(t.subset).items()}
            self.rows.append({"round": t.round, "move": t.move, "subset": subset_name(t.subset)[7:],
                              "n_blocks": len(t.subset), "score": "" if score is None else f"{score:.6f}",
                              "metric": metric, **paper, "status": status, "run_dir": run.run_dir})
            if status == "diverged":
                print(f"trial {run.label} diverged (no candidate); see {run.run_dir}", file=sys.stderr)
            elif status == "failed":
                why = next(filter(None, map(last_error_line, self.runner.runs(t.subset))), None)
                print(f"trial {run.label} failed" + (f" ({why})" if why else "")
                      + f"; see {Path(run.run_dir) / 'train.log'}", file=sys.stderr)
        self._write()
