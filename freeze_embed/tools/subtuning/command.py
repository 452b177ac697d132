"""The search's command line, ``python -m freeze_embed.tools.subtuning``: compose, count blocks, search, write results.

Writes ``DIR/config.yaml`` (the composed config), ``DIR/trials/<subset>/`` (one ``train.py`` run per subset),
``DIR/search.csv`` (every trial, as each round ends; ``--profile_only``: ``DIR/profile.csv``), ``DIR/profile.png``
(each single block's score) and, at the end, ``DIR/strategy.yaml``: the best subset as a ``TrainBlocks`` config
(``train.py fit --config ... --config DIR/strategy.yaml``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import yaml

from freeze_embed.run.config import compose
from freeze_embed.files import atomic_write
from freeze_embed.tools.sweep.launchers import add_launch_arguments
from freeze_embed.tools.sweep.plan import record_config
from freeze_embed.tools.subtuning.profile import plot_profile
from freeze_embed.tools.subtuning.search import STARTS, SearchError, SearchResult, Trial, greedy_search, subset_name
from freeze_embed.tools.subtuning.trials import (SCORES, STRATEGY, Pending, SearchLog, TrialRunner, count_blocks,
                                                strategy_args)


def parse_args(argv: Optional[Sequence[str]]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="python -m freeze_embed.tools.subtuning", allow_abbrev=False,
                                description="SubTuning's greedy search of the blocks to fine-tune; unknown arguments "
                                            "go to every trial's train.py (e.g. --trainer.max_epochs 2).")
    p.add_argument("--config", action="append", required=True, help="train.py config files, composed in order")
    p.add_argument("--out", required=True, help="search directory: trials/, search.csv, profile.png, strategy.yaml")
    p.add_argument("--start", choices=STARTS, default="forward",
                   help="forward: from the linear probe, adding blocks (the official default, 'non'); backward: from "
                        "all blocks, removing them ('all'); best: train both, start from the better ('best')")
    p.add_argument("--epsilon", type=float, default=0.01,
                   help="stop when a round is more than this below the best score so far (scores in [0, 1])")
    p.add_argument("--folds", type=int, default=0,
                   help="score each subset by the mean over K folds of the training set, each trial trained on the "
                        "other K-1 (the official greedy_cross_val; default 0: ID validation)")
    p.add_argument("--score", choices=SCORES, default="last",
                   help="score each trial after its last epoch (the official search: callback_metrics['pred_acc'] "
                        "after fit) or at its best epoch by the selection metric")
    p.add_argument("--include_embed_blocks", action="store_true",
                   help="also search the blocks inside the embedding's first stage (ResNets' layer1, numbered first), "
                        "as the official ResNet candidates include them; the stem stays frozen")
    p.add_argument("--max_blocks", type=int, help="return at most this many blocks (a forward search stops there)")
    p.add_argument("--profile_only", action="store_true",
                   help="train each single block, head only and all blocks; write profile.png and profile.csv, no "
                        "search (in a search's DIR, it trains only what the search has not)")
    add_launch_arguments(p, "trials")
    return p.parse_known_args(argv)


def write_strategy(path: Path, result: SearchResult, metric: str, num_blocks: int, embed_blocks: bool = False) -> None:
    """``metric``: the score's key, e.g. ``last/id_val/acc``."""
    head = (f"# SubTuning's greedy search ({result.start}) picked blocks {list(result.best)} of {num_blocks}: "
            f"{metric} {result.best_score:.4f}.\n# Stopped: {result.stopped}. Every trial: search.csv.\n"
            f"# Use: python train.py fit --config <your configs> --config {path}\n")
    body = {"model": {"strategy": {"class_path": STRATEGY, "init_args": strategy_args(result.best, embed_blocks)}}}
    with atomic_write(path, "w") as f:
        f.write(head + yaml.safe_dump(body, sort_keys=False, default_flow_style=None))


def write_profile(runner: TrialRunner, out: Path, num_blocks: int, title: str) -> Optional[Path]:
    singles = {i: s for i in range(num_blocks) if (s := runner.score_of((i,))[0]) is not None}
    if not singles:
        return None
    metric = runner.score_of((next(iter(singles)),))[1]
    path = out / "profile.png"
    ood = {i: x for i in singles if (x := runner.paper_numbers((i,))["ood"]) is not None}
    plot_profile(singles, num_blocks, f"{runner.score}/{metric}", str(path), runner.score_of(())[0],
                 runner.score_of(tuple(range(num_blocks)))[0], title, ood)
    return path


def _printer(log: SearchLog):
    def on_round(trials: list[Trial]) -> None:
        log(trials)
        shown = ", ".join(f"{subset_name(t.subset)[7:]}="
                          + (log.runner.status(t.subset) if t.score is None else f"{100 * t.score:.2f}")
                          for t in trials)
        print(f"round {trials[0].round}: {shown}", flush=True)
    return on_round


def main(argv: Optional[Sequence[str]] = None) -> int:
    args, overrides = parse_args(argv)
    out = Path(args.out)
    config = compose(args.config, overrides)
    num_blocks = count_blocks(config, args.include_embed_blocks)
    runner = TrialRunner(config, out, args, args.group or "-".join(out.parts[-3:]), folds=args.folds,
                         score=args.score, embed_blocks=args.include_embed_blocks)
    if args.max_blocks is not None and not 0 <= args.max_blocks:
        raise SearchError(f"--max_blocks must be 0 or more, not {args.max_blocks}.")
    record_config(out, config, "trials")
    done = sum(1 for p in (out / "trials").glob("**/results.json"))
    what = ("fine-tuning profile" if args.profile_only else f"search from {args.start}, epsilon {args.epsilon:g}, "
            f"max_blocks {args.max_blocks if args.max_blocks is not None else num_blocks}")
    print(f"SubTuning {out}: {num_blocks} blocks, {what}; {done} trials already done", flush=True)
    log = SearchLog(out / ("profile.csv" if args.profile_only else "search.csv"), runner)
    on_round = _printer(log)
    title = f"Fine-tuning profile ({num_blocks} blocks, lr {runner.lr:g}, seed {runner.seed})"
    try:
        if args.profile_only:
            subsets = [(i,) for i in range(num_blocks)] + [(), tuple(range(num_blocks))]
            scores = runner(subsets)
            on_round([Trial(0, s, x, "profile") for s, x in zip(subsets, scores)])
            result = None
        else:
            result = greedy_search(num_blocks, runner, args.start, args.epsilon, args.max_blocks, on_round)
    except Pending as wait:
        print(f"{wait}: run the same command again when they finish; the search goes on from there.")
        return 0
    except SearchError as err:
        print(f"error: {err} Logs: {', '.join(str(Path(r.run_dir) / 'train.log') for r in runner.failed)}",
              file=sys.stderr)
        return 1
    profile = write_profile(runner, out, num_blocks, title)
    print(f"Every trial: {log.path}" + (f"; profile: {profile}" if profile else ""))
    if result is not None:
        metric = f"{runner.score}/{runner.score_of(result.best)[1]}"
        write_strategy(out / "strategy.yaml", result, metric, num_blocks, args.include_embed_blocks)
        print(f"Best: blocks {list(result.best)} ({metric} {100 * result.best_score:.2f}), searched "
              f"{result.start} in {len(result.path) - 1} rounds, {len(result.trials)} trials; stopped: "
              f"{result.stopped}.\nWritten {out / 'strategy.yaml'}: train with --config {out / 'strategy.yaml'}")
    return 1 if runner.failed else 0
