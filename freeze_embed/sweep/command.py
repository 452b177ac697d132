"""The sweep's command line, ``python -m freeze_embed.sweep``: plan the runs, launch what is missing, summarize.

Composes the config (:func:`freeze_embed.config.compose`), names the sweep from its data, backbone and method files
(:func:`_labels`, with :mod:`freeze_embed.paper`'s names), writes each run's config, launches the runs that are not
done, then writes ``summary.json`` and prints the summary table.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence

import yaml

from ..config import compose
from ..paper import dataset_name, model_name
from .launchers import _in_flight, add_slurm_arguments, launch_local, launch_slurm, local_slots, slurm_parameters
from .plan import SweepError, default_group, resolve_lrs
from .run import Run, prepare, read_results, train_command
from .summary import format_summary, summarize


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
    p = argparse.ArgumentParser(prog="python -m freeze_embed.sweep", allow_abbrev=False,
                                description="LR x seed sweep of train.py fit; unknown arguments go to train.py.")
    p.add_argument("--config", action="append", required=True, help="train.py config files, composed in order")
    p.add_argument("--lrs", nargs="+", default=["paper"],
                   help="'paper' (default: the method file's method.lr_grid) or numbers")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", help="sweep directory (default sweeps/<dataset>/<model>/<method>)")
    p.add_argument("--launcher", choices=["local", "slurm", "debug"], default="local",
                   help="local subprocesses, SLURM jobs through submitit, or submitit's in-process debug executor")
    p.add_argument("--parallel", type=int, help="local runs at once (default: one per visible GPU, else 1)")
    p.add_argument("--select", choices=["best", "last"], default="best",
                   help="each run's early-stopped (best ID val) or last epoch")
    p.add_argument("--group", help="W&B group of the sweep's runs (default: from --out)")
    p.add_argument("--method", help="row label in tables (default: method.name of the method file)")
    p.add_argument("--dataset", help="column label (default: from configs/data/<stem>.yaml)")
    p.add_argument("--model", help="model label (default: from model.backbone)")
    p.add_argument("--summarize_only", action="store_true", help="launch nothing, summarize what is there")
    p.add_argument("--dry_run", action="store_true", help="print the runs' commands, launch nothing")
    add_slurm_arguments(p)
    return p.parse_known_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args, overrides = parse_args(argv)
    try:
        config = compose(args.config, overrides)
        family, lrs = resolve_lrs(args.lrs, config)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    labels, default_out = _labels(args.config, config, args)
    out = Path(args.out or default_out)
    group = args.group or default_group(out)
    runs = [Run(lr, seed, str(out / Run.dir_name(lr, seed)), group) for lr in lrs for seed in args.seeds]
    counts = {s: sum(r.status() == s for r in runs) for s in ("done", "resume", "new")}
    print(f"Sweep {out}: {labels['method']} on {labels['dataset']} with {labels['model']}; LRs {lrs} ({family}), "
          f"seeds {args.seeds}: {len(runs)} runs, {counts['done']} done, {counts['resume']} to resume, "
          f"{counts['new']} new", flush=True)
    pending = [r for r in runs if r.status() != "done"]
    folder = out / "slurm"
    if args.launcher == "slurm":
        pending = [r for r in pending if not _in_flight(r, folder)]
    if args.dry_run:
        print("\n".join(shlex.join(train_command(r)) for r in pending))
        return 0
    launched: dict[str, dict] = {}
    if pending and not args.summarize_only:
        out.mkdir(parents=True, exist_ok=True)
        old = out / "config.yaml"
        if old.exists() and yaml.safe_load(old.read_text()) != config:
            print(f"warning: the composed config differs from {old}; finished runs are kept and resumed runs keep "
                  "their own config", file=sys.stderr)
        old.write_text(yaml.safe_dump(config, sort_keys=False))
        for run in pending:
            prepare(run, config)
        if args.launcher == "local":
            launched = launch_local(pending, *local_slots(config, args.parallel))
        else:
            params = slurm_parameters(config, args, name=f"sweep-{group}"[:64])
            launched = launch_slurm(pending, folder, params, cluster=args.launcher, wait=not args.no_wait)
    records = []
    for run in runs:
        res = read_results(run)
        status = ("done" if res else "failed" if run.name in launched
                  else "unfinished" if (Path(run.run_dir) / "train.log").exists() else "missing")
        records.append({"lr": run.lr, "seed": run.seed, "run_dir": run.run_dir, "status": status, "results": res})
    summary = {**labels, "backbone": config["model"]["backbone"], "lr_grid": family, "lrs": lrs,
               "seeds": args.seeds, "configs": args.config, "overrides": overrides, **summarize(records, args.select)}
    if (out / "config.yaml").exists() or any(r["results"] for r in records):
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(f"\nSummary written to {out / 'summary.json'}")
    print(format_summary(summary))
    failed = [r for r in records if r["status"] == "failed"]
    for r in failed:
        print(f"FAILED: lr={r['lr']:g} seed={r['seed']}; see {Path(r['run_dir']) / 'train.log'}", file=sys.stderr)
    others = [r for r in records if r["status"] in ("unfinished", "missing")]
    if others:
        print(f"{len(others)} runs not finished ({', '.join(sorted({r['status'] for r in others}))}): re-run the "
              "same command to finish them.", file=sys.stderr)
    return 1 if failed else 0
