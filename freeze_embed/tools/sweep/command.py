"""The sweep's command line, ``python -m freeze_embed.tools.sweep``: plan the runs, launch what is missing, summarize.

Composes the config (:func:`freeze_embed.run.config.compose`), names the sweep from its data, backbone and method files
(:func:`_labels`, with :mod:`freeze_embed.paper`'s names), writes each run's config, launches the runs that are not
done, then writes ``summary.json`` and prints the summary table. ``--momenta`` adds momentum to the grid (Li et al.,
"Rethinking the Hyperparameters for Fine-tuning", ICLR 2020): with ``--lrs effective`` every momentum runs the same
effective LRs lr / (1 - momentum), and the LR is chosen per momentum.
"""
from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence

from freeze_embed.run.config import compose
from freeze_embed.files import write_json
from freeze_embed.paper import dataset_name, model_name
from freeze_embed.tools.sweep.launchers import add_launch_arguments, launch, to_launch
from freeze_embed.tools.sweep.plan import (SweepError, check_momenta, default_group, momentum_grid, record_config,
                                           resolve_lrs)
from freeze_embed.tools.sweep.run import Run, last_error_line, read_results, train_command
from freeze_embed.tools.sweep.summary import (format_momenta, format_problems, format_summary, summarize,
                                              summarize_momenta)


def _labels(configs: Sequence[str], config: dict, args: argparse.Namespace) -> tuple[dict, Path]:
    """Table labels (method, dataset, model) and the default sweep dir ``sweeps/<dataset>/<model>/<method>``."""
    def stem(kind: str) -> Optional[str]:
        return next((Path(c).stem for c in reversed(configs) if Path(c).parent.name == kind), None)
    model = config["model"]
    strategy = (model.get("strategy") or {}).get("class_path", "FullFineTune").rpartition(".")[2]
    optimizer = (model.get("optimizer") or {}).get("class_path", "SGD").rpartition(".")[2]
    data_class = (config.get("data") or {}).get("class_path", "data").rpartition(".")[2]
    labels = {"method": args.method or (config.get("method") or {}).get("name") or f"{strategy} + {optimizer}",
              "dataset": args.dataset or dataset_name(stem("data") or data_class),
              "model": args.model or model_name(model["backbone"])}
    parts = [stem(kind) or re.sub(r"[^a-z0-9]+", "_", labels[key].lower()).strip("_")
             for kind, key in (("data", "dataset"), ("backbone", "model"), ("method", "method"))]
    return labels, Path("sweeps", *parts)


def parse_args(argv: Optional[Sequence[str]]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="python -m freeze_embed.tools.sweep", allow_abbrev=False,
                                description="(momentum x) LR x seed sweep of train.py fit; unknown arguments go to "
                                            "train.py.")
    p.add_argument("--config", action="append", required=True, help="train.py config files, composed in order")
    p.add_argument("--lrs", nargs="+", default=["paper"],
                   help="'paper' (default: the method file's method.lr_grid), numbers, or 'effective' [numbers]: with "
                        "--momenta, the method's grid (or the numbers) read as effective LRs lr / (1 - momentum), the "
                        "same grid for every momentum (the optimizer gets effective LR x (1 - momentum))")
    p.add_argument("--momenta", nargs="+", type=float, metavar="M",
                   help="SGD momenta to sweep (model.optimizer.init_args.momentum), e.g. 0 0.9 0.99; runs go to "
                        "m<M>_lr<LR>_seed<S>/ and the LR is chosen per momentum (default: the config's momentum)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", help="sweep directory (default sweeps/<dataset>/<model>/<method>)")
    p.add_argument("--select", choices=["best", "last"], default="best",
                   help="each run's early-stopped (best ID val) or last epoch")
    p.add_argument("--method", help="row label in tables (default: method.name of the method file)")
    p.add_argument("--dataset", help="column label (default: from configs/data/<stem>.yaml)")
    p.add_argument("--model", help="model label (default: from model.backbone)")
    p.add_argument("--summarize_only", action="store_true", help="launch nothing, summarize what is there")
    p.add_argument("--dry_run", action="store_true", help="print the runs' commands, launch nothing")
    add_launch_arguments(p, "runs")
    return p.parse_known_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args, overrides = parse_args(argv)
    config = compose(args.config, overrides)
    family, lrs = resolve_lrs(args.lrs, config)
    effective = args.lrs[0] == "effective"
    if effective and args.momenta is None:
        raise SweepError("--lrs effective compares momenta: give them with --momenta, e.g. --momenta 0 0.9.")
    if args.momenta is not None:
        check_momenta(args.momenta, config, effective)
    labels, default_out = _labels(args.config, config, args)
    out = Path(args.out or default_out)
    group = args.group or default_group(out)
    runs = [Run(lr, seed, str(out / Run.dir_name(lr, seed, m)), group, momentum=m)
            for m, lr in momentum_grid(lrs, args.momenta, effective) for seed in args.seeds]
    counts = {s: sum(r.status() == s for r in runs) for s in ("done", "resume", "new")}
    print(f"Sweep {out}: {labels['method']} on {labels['dataset']} with {labels['model']}; LRs {lrs} ({family}), "
          + (f"momenta {args.momenta}, " if args.momenta is not None else "") +
          f"seeds {args.seeds}: {len(runs)} runs, {counts['done']} done, {counts['resume']} to resume, "
          f"{counts['new']} new", flush=True)
    folder = out / "slurm"
    pending, _ = to_launch(runs, args.launcher, folder)
    if args.dry_run:
        print("\n".join(shlex.join(train_command(r)) for r in pending))
        return 0
    launched: dict[str, dict] = {}
    if pending and not args.summarize_only:
        try:
            record_config(out, config)
            launched = launch(runs, lambda run: config, config, args, folder, f"sweep-{group}").reports
        except KeyboardInterrupt:  # every file is whole (atomic writes); finished runs are kept
            print("\nInterrupted: re-run the same command to continue (finished runs are kept, interrupted ones "
                  "resume from their last.ckpt).", file=sys.stderr)
            return 130
    records = []
    for run in runs:
        res = read_results(run)
        status = ("done" if res else "failed" if run.name in launched
                  else "unfinished" if (Path(run.run_dir) / "train.log").exists() else "missing")
        records.append({"lr": run.lr, "seed": run.seed, "run_dir": run.run_dir, "status": status, "results": res,
                        "momentum": run.momentum, "error": last_error_line(run) if status == "failed" else None})
    chosen = (summarize_momenta if args.momenta is not None else summarize)(records, args.select)
    summary = {**labels, "backbone": config["model"]["backbone"], "lr_grid": family, "lrs": lrs,
               **({"momenta": args.momenta, "effective_lrs": effective} if args.momenta is not None else {}),
               "seeds": args.seeds, "configs": args.config, "overrides": overrides, **chosen}
    if (out / "config.yaml").exists() or any(r["results"] for r in records):
        write_json(out / "summary.json", summary)
        print(f"\nSummary written to {out / 'summary.json'}")
    print(format_momenta(summary) if args.momenta is not None else format_summary(summary))
    for line in format_problems(summary):
        print(line, file=sys.stderr)
    failed = summary["failed"]
    others = [r for r in records if r["status"] in ("unfinished", "missing")]
    if others:
        print(f"{len(others)} runs not finished ({', '.join(sorted({r['status'] for r in others}))}): re-run the "
              "same command to finish them.", file=sys.stderr)
    return 1 if failed else 0
