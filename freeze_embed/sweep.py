"""Learning-rate x seed sweeps, the paper's protocol (Section 4, Appendix A).

    python -m freeze_embed.sweep --config configs/data/waterbirds.yaml --config configs/backbone/clip_vit_b16.yaml \\
        --config configs/method/sgd_freeze_embed.yaml [train.py overrides] [--lrs paper] [--seeds 0 1 2] [--out DIR]

Each (LR, seed) is one ``train.py fit`` subprocess in ``DIR/lr<lr>_seed<seed>/`` (its config, logs, checkpoints and
results.json), so a crashing run does not stop the sweep. Runs with a results.json are skipped and runs with a
last.ckpt resume from it: the same command finishes an interrupted sweep. The LR with the best mean ID validation
accuracy wins; each run counts at its best epoch by ID validation (early stopping); DIR/summary.json gets the mean
+- 1.645 * std / sqrt(n) over seeds (Table 5's 90% CI), with the sample std (ddof=1; the paper does not say which).

LR grids live with the methods: ``--lrs paper`` (the default) runs the composed config's ``method.lr_grid``, which
each ``configs/method/*.yaml`` sets to the authors' grid (see :mod:`freeze_embed.methods`). The selection metric is
the dataset's (``selection_metric`` of its datamodule, recorded in each run's results.json).
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import queue
import re
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import submitit
import yaml

from .methods import ConfigError, compose
from .results import dataset_name, model_name

Z90 = 1.645  # two-sided 90% normal quantile
RUN_CONFIG = "run_config.yaml"
TRAIN_PY = Path(__file__).resolve().parents[1] / "train.py"
STD_NOTE = "sample standard deviation over seeds (ddof=1)"
CI_NOTE = "90% CI half-width = 1.645 * std / sqrt(n)"
SLURM_ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING"}


class SweepError(ConfigError):
    """A sweep that cannot start; the message says why."""


# --- the LR grid ---------------------------------------------------------------------------------------------
def resolve_lrs(spec: Sequence[str], config: dict) -> tuple[str, list[float]]:
    """``paper`` (the method's ``method.lr_grid``) or explicit LRs."""
    if list(spec) == ["paper"]:
        meta = config.get("method") or {}
        if not meta.get("lr_grid"):
            raise SweepError("--lrs paper needs a method file (configs/method/*.yaml sets method.lr_grid); compose "
                             "one with --config, or give the LRs, e.g. --lrs 1e-3 3e-3.")
        return f"{meta.get('name') or 'method'} grid", [float(x) for x in meta["lr_grid"]]
    try:
        return "given", sorted(float(x) for x in spec)
    except ValueError:
        raise SweepError(f"--lrs takes 'paper' or numbers, not {' '.join(spec)}") from None


# --- one run ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    lr: float
    seed: int
    run_dir: str
    group: str = ""

    @property
    def name(self) -> str:
        return f"lr{self.lr:g}_seed{self.seed}"

    @property
    def last_ckpt(self) -> Path:
        return Path(self.run_dir) / "checkpoints" / "last.ckpt"

    def status(self) -> str:
        if (Path(self.run_dir) / "results.json").exists():
            return "done"
        return "resume" if self.last_ckpt.exists() else "new"


def run_config(config: dict, run: Run) -> dict:
    """The sweep's config with this run's LR, seed, and logs under its run dir (W&B: one group per sweep)."""
    cfg = copy.deepcopy(config)
    cfg["seed_everything"] = run.seed
    cfg["model"]["optimizer"].setdefault("init_args", {})["lr"] = run.lr
    trainer = cfg.setdefault("trainer", {})
    trainer["default_root_dir"] = run.run_dir
    logger = trainer.get("logger")
    for item in logger if isinstance(logger, list) else [logger] if isinstance(logger, dict) else []:
        init = item["init_args"] = dict(item.get("init_args") or {})
        if item.get("class_path", "").endswith("WandbLogger"):
            run_id = hashlib.sha1(str(Path(run.run_dir).resolve()).encode()).hexdigest()[:16]
            init.update(save_dir=run.run_dir, group=run.group or None, name=f"{run.group}/{run.name}", id=run_id,
                        resume="allow")  # a resumed run continues its W&B run
        elif "save_dir" in init or item.get("class_path", "").endswith(("CSVLogger", "TensorBoardLogger")):
            init.update(save_dir=run.run_dir, name="logs", version=None)  # logs/version_N: a resume adds one
    return cfg


def prepare(run: Run, config: dict) -> None:
    """Write the run's config, unless it is resuming: then it keeps the config it started with."""
    path = Path(run.run_dir) / RUN_CONFIG
    if path.exists() and run.last_ckpt.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(run_config(config, run), sort_keys=False))


def train_command(run: Run) -> list[str]:
    """``python train.py fit --config <run>/run_config.yaml --run_dir <run> [--ckpt_path <run>/.../last.ckpt]``."""
    entry = [str(TRAIN_PY)] if TRAIN_PY.exists() else ["-c", "from freeze_embed.cli import main; main()"]
    cmd = [sys.executable, *entry, "fit", "--config", str(Path(run.run_dir) / RUN_CONFIG), "--run_dir", run.run_dir]
    return cmd + (["--ckpt_path", str(run.last_ckpt)] if run.last_ckpt.exists() else [])


def _call(cmd: list[str], log, env: dict) -> int:
    """Launch one training process (the one place a run starts; tests replace it)."""
    return subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def execute(run: Run, env: Optional[dict] = None) -> dict:
    """Train one run to its results.json, resuming from last.ckpt; never raises, reports ``status``."""
    if run.status() == "done":
        return {"status": "done", "skipped": True}
    cmd = train_command(run)
    env = dict(os.environ if env is None else env)
    if run.group:
        env["WANDB_RUN_GROUP"] = run.group
    start, log_path = time.time(), Path(run.run_dir) / "train.log"
    try:
        with open(log_path, "a") as log:
            log.write(f"\n$ {shlex.join(cmd)}\n")
            log.flush()
            rc = _call(cmd, log, env)
    except Exception as err:  # noqa: BLE001 - a sweep outlives any one run
        return {"status": "failed", "error": repr(err), "log": str(log_path)}
    done = (Path(run.run_dir) / "results.json").exists()
    return {"status": "done" if done else "failed", "rc": rc, "seconds": round(time.time() - start, 1),
            "resumed": "--ckpt_path" in cmd, "log": str(log_path)}


# --- launchers ----------------------------------------------------------------------------------------------------
def _progress(i: int, n: int, run: Run, msg: str, lock=threading.Lock()) -> None:
    with lock:
        print(f"[{i}/{n}] lr={run.lr:g} seed={run.seed}: {msg}", flush=True)


def _outcome(run: Run, res: dict) -> str:
    if res.get("status") != "done":
        why = res.get("error") or f"exit code {res.get('rc')}"
        return f"FAILED ({why}); log: {res.get('log', Path(run.run_dir) / 'train.log')}"
    res = _read_results(run) or {}
    r, selection = res.get("best") or {}, res.get("selection_metric", "id_val/acc")
    nums = ", ".join(f"{k} {100 * r[f'best/{m}']:.1f}%" for k, m in
                     ((selection, selection), ("ID", "paper/id"), ("OOD", "paper/ood")) if f"best/{m}" in r)
    secs = res.get("seconds")
    return "done" + (f" in {secs:.0f}s" if secs is not None else "") + (f" ({nums})" if nums else "")


def visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and not g.strip().startswith("-")]
    import torch
    return [str(i) for i in range(torch.cuda.device_count())]


def devices_per_run(config: dict) -> int:
    trainer = config.get("trainer") or {}
    devices, nodes = trainer.get("devices"), int(trainer.get("num_nodes") or 1)
    if isinstance(devices, (list, tuple)):
        return len(devices) * nodes
    try:
        return max(int(devices), 1) * nodes
    except (TypeError, ValueError):  # "auto": one device once CUDA_VISIBLE_DEVICES names one
        return nodes


def launch_local(runs: list[Run], parallel: int = 1, gpus: Sequence[str] = ()) -> dict[str, dict]:
    """Run sequentially, or ``parallel`` at a time, each slot pinned to one of ``gpus``."""
    todo: queue.Queue = queue.Queue()
    for i, run in enumerate(runs, 1):
        todo.put((i, run))
    results: dict[str, dict] = {}

    def worker(slot: int) -> None:
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
        while True:
            try:
                i, run = todo.get_nowait()
            except queue.Empty:
                return
            where = f" on GPU {env['CUDA_VISIBLE_DEVICES']}" if gpus else ""
            _progress(i, len(runs), run, ("resuming from last.ckpt" if run.status() == "resume" else "started") + where)
            results[run.name] = res = execute(run, env)
            _progress(i, len(runs), run, _outcome(run, res))

    if parallel <= 1:
        worker(0)
    else:
        threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in range(parallel)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return results


def slurm_parameters(config: dict, args: argparse.Namespace, name: str) -> dict:
    """submitit parameters: one job per run, its DDP shape (nodes x devices) from the Trainer config."""
    trainer = config.get("trainer") or {}
    nodes = int(trainer.get("num_nodes") or 1)
    per_node = max(devices_per_run(config) // nodes, 1)
    params = {"name": name, "timeout_min": args.slurm_time, "nodes": nodes, "tasks_per_node": per_node,
              "cpus_per_task": args.slurm_cpus_per_task, "slurm_array_parallelism": args.slurm_array_parallelism}
    if trainer.get("accelerator") != "cpu":
        params["gpus_per_node"] = per_node
    if args.slurm_partition:
        params["slurm_partition"] = args.slurm_partition
    if args.slurm_mem_gb:
        params["mem_gb"] = args.slurm_mem_gb
    if args.slurm_extra:
        params["slurm_additional_parameters"] = dict(kv.split("=", 1) for kv in args.slurm_extra)
    return params


class RunJob(submitit.helpers.Checkpointable):
    """One run as a SLURM job; requeued on preemption or timeout, it resumes from last.ckpt."""

    def __call__(self, run: Run) -> dict:
        return execute(run)


def _in_flight(run: Run, folder: Path) -> bool:
    marker = Path(run.run_dir) / "slurm_job_id"
    if not marker.exists():
        return False
    try:
        return submitit.SlurmJob(folder=folder, job_id=marker.read_text().strip()).state in SLURM_ACTIVE
    except Exception:  # noqa: BLE001 - no sacct: assume finished
        return False


def launch_slurm(runs: list[Run], folder: Path, params: dict, cluster: str = "slurm",
                 wait: bool = True) -> dict[str, dict]:
    """Submit one job per run through submitit (``cluster="debug"`` runs them here, for checks without SLURM)."""
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    executor.update_parameters(**params)
    jobs = executor.map_array(RunJob(), runs)
    for i, (run, job) in enumerate(zip(runs, jobs), 1):
        if cluster == "slurm":
            (Path(run.run_dir) / "slurm_job_id").write_text(str(job.job_id))
        _progress(i, len(runs), run, f"submitted as job {job.job_id}")
    results: dict[str, dict] = {}
    if not wait:
        return results
    for i, (run, job) in enumerate(zip(runs, jobs), 1):
        try:
            results[run.name] = res = job.result()
        except Exception as err:  # noqa: BLE001 - job killed, node failure, ...
            results[run.name] = res = {"status": "failed", "error": f"job {job.job_id}: {err}".splitlines()[0]}
        _progress(i, len(runs), run, _outcome(run, res))
    return results


# --- the summary --------------------------------------------------------------------------------------------------
def stats(values: Sequence[float]) -> dict:
    """Mean, sample std (ddof=1), 90% CI half-width 1.645 * std / sqrt(n); std and CI are None for n < 2."""
    n = len(values)
    if n == 0:
        return {"mean": None, "std": None, "ci90": None, "n": 0, "values": []}
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "ci90": None if std is None else Z90 * std / math.sqrt(n), "n": n,
            "values": list(values)}


def summarize(records: Sequence[dict], select: str = "best") -> dict:
    """Pick the LR with the best mean selection metric (the dataset's, from results.json) and report its seeds'
    ID/OOD.

    ``records``: ``{"lr", "seed", "status", "results"}`` with ``results`` a run's results.json (or None).
    ``select``: ``best`` (each run's early-stopped checkpoint) or ``last`` (its last epoch).
    Ties between LRs go to the smaller LR.
    """
    runs, selections = [], set()
    for r in records:
        res = r.get("results") or {}
        one = {"lr": r["lr"], "seed": r["seed"], "status": r["status"], "run_dir": r.get("run_dir"),
               "epoch": (res.get("best_epoch") if select == "best" else "last") if res else None}
        selection = res.get("selection_metric", "id_val/acc")
        if res:
            selections.add(selection)
        for key, metric in (("id_val", selection), ("id", "paper/id"), ("ood", "paper/ood")):
            one[key] = (res.get(select) or {}).get(f"{select}/{metric}")
        runs.append(one)
    per_lr = []
    for lr in sorted({r["lr"] for r in runs}):
        done = [r for r in runs if r["lr"] == lr and r["id_val"] is not None]
        per_lr.append({"lr": lr, "n_runs": sum(r["lr"] == lr for r in runs), "n_done": len(done),
                       **{k: stats([r[k] for r in done if r[k] is not None]) for k in ("id_val", "id", "ood")}})
    scored = [p for p in per_lr if p["n_done"]]
    best = max(scored, key=lambda p: p["id_val"]["mean"]) if scored else None  # max keeps the first (smallest) LR
    chosen = [r for r in runs if best and r["lr"] == best["lr"] and r["id_val"] is not None]
    if len(selections) > 1:
        raise SweepError(f"runs of one sweep were selected on different metrics {sorted(selections)}")
    return {"select": select, "selection_metric": next(iter(selections), None), "std": STD_NOTE, "ci": CI_NOTE,
            "chosen_lr": best["lr"] if best else None,
            **{k: best[k] if best else stats([]) for k in ("id", "ood", "id_val")},
            "chosen_runs": [{k: r[k] for k in ("seed", "epoch", "id_val", "id", "ood")} for r in chosen],
            "per_lr": per_lr, "runs": runs,
            "not_done": [f"{r['run_dir'] or r['lr']}: {r['status']}" for r in runs if r["status"] != "done"]}


def format_summary(summary: dict) -> str:
    pct = lambda s: "-" if s["mean"] is None else f"{100 * s['mean']:.1f}" + (  # noqa: E731
        f" ± {100 * s['ci90']:.1f}" if s["ci90"] is not None else "")
    lines = [f"{'':2}{'LR':>8}  {'runs':>5}  {'ID val':>12}  {'ID':>12}  {'OOD':>12}"]
    for p in summary["per_lr"]:
        mark = "*" if p["lr"] == summary["chosen_lr"] else " "
        lines.append(f"{mark:2}{p['lr']:>8g}  {p['n_done']:>2}/{p['n_runs']:<2}  {pct(p['id_val']):>12}  "
                     f"{pct(p['id']):>12}  {pct(p['ood']):>12}")
    if summary["chosen_lr"] is None:
        return "\n".join(lines + ["No finished run: nothing to choose."])
    epochs = ", ".join(str(r["epoch"]) for r in summary["chosen_runs"])
    lines += [f"* chosen LR {summary['chosen_lr']:g} (best mean {summary['selection_metric']}); "
              f"epoch per seed ({summary['select']}): {epochs}",
              f"{summary.get('method', '')} on {summary.get('dataset', '')}: ID {pct(summary['id'])}  "
              f"OOD {pct(summary['ood'])}  (%, mean ± 90% CI over {summary['id']['n']} seed"
              f"{'' if summary['id']['n'] == 1 else 's'})"]
    return "\n".join(lines)


def _read_results(run: Run) -> Optional[dict]:
    path = Path(run.run_dir) / "results.json"
    return json.loads(path.read_text()) if path.exists() else None


# --- the command line ---------------------------------------------------------------------------------------------
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
    s = p.add_argument_group("SLURM (--launcher slurm)")
    s.add_argument("--slurm_partition")
    s.add_argument("--slurm_time", type=int, default=24 * 60, help="minutes per job")
    s.add_argument("--slurm_cpus_per_task", type=int, default=8)
    s.add_argument("--slurm_mem_gb", type=int)
    s.add_argument("--slurm_array_parallelism", type=int, default=64)
    s.add_argument("--slurm_extra", nargs="+", metavar="KEY=VALUE", help="more #SBATCH options, e.g. account=abc")
    s.add_argument("--no_wait", action="store_true", help="submit and exit; summarize later (--summarize_only)")
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
    group = args.group or "-".join(out.parts[-3:])
    runs = [Run(lr, seed, str(out / f"lr{lr:g}_seed{seed}"), group) for lr in lrs for seed in args.seeds]
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
            gpus = [] if (config.get("trainer") or {}).get("accelerator") == "cpu" else visible_gpus()
            single = devices_per_run(config) == 1
            parallel = args.parallel or (len(gpus) if gpus and single else 1)
            launched = launch_local(pending, parallel, gpus if single else [])
        else:
            params = slurm_parameters(config, args, name=f"sweep-{group}"[:64])
            launched = launch_slurm(pending, folder, params, cluster=args.launcher, wait=not args.no_wait)
    records = []
    for run in runs:
        res = _read_results(run)
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


if __name__ == "__main__":
    sys.exit(main())
