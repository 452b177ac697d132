"""Launchers: many ordinary, resumable runs (:class:`~freeze_embed.tools.sweep.run.Run`), here or on SLURM.

* :func:`launch_local`: one after another, or ``parallel`` at a time in threads, each pinned to one visible GPU
  (:func:`local_slots` decides from the Trainer config: one run per GPU when each run uses one device);
* :func:`launch_slurm`: one submitit job per run (:class:`RunJob`), requeued on preemption or timeout and resumed
  from last.ckpt; :func:`add_slurm_arguments` and :func:`slurm_parameters` turn command-line options and the
  Trainer's DDP shape into the job's parameters; :func:`_in_flight` tells a run whose job is still queued or running.

Both take any list of runs and return ``{run.name: execute's report}``; nothing here knows what a sweep does with the
results. :func:`launch` is the one launch loop of every run-many tool (the sweep, SubTuning's search): the runs not
done and not still queued on SLURM get their config written and start here or on SLURM, as the options of
:func:`add_launch_arguments` say.
"""
from __future__ import annotations

import argparse
import os
import queue
import threading
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import submitit

from freeze_embed.files import atomic_write
from freeze_embed.run.results import RunResults
from freeze_embed.tools.sweep.run import Run, execute, last_error_line, prepare

SLURM_ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING"}


_PRINT_LOCK = threading.Lock()  # one progress line at a time from the launcher's threads


def _progress(i: int, n: int, run: Run, msg: str) -> None:
    with _PRINT_LOCK:
        print(f"[{i}/{n}] {run.describe()}: {msg}", flush=True)


def _outcome(run: Run, res: dict) -> str:
    if res.get("status") != "done":
        why = res.get("error") or last_error_line(run) or f"exit code {res.get('rc')}"
        return f"FAILED ({why}); log: {res.get('log', Path(run.run_dir) / 'train.log')}"
    results = RunResults.read(run.run_dir) or RunResults()
    if results.diverged:
        at = results.data.get("diverged_at") or {}
        return f"DIVERGED at epoch {at.get('epoch')}, step {at.get('step')} (never chosen)"
    selection = results.selection_metric
    nums = ", ".join(f"{k} {100 * v:.1f}%"
                     for k, m in ((selection, selection), ("ID", "paper/id"), ("OOD", "paper/ood"))
                     if (v := results.value(m)) is not None)
    secs = res.get("seconds")  # the launcher timed the run; results.json holds metrics only
    return "done" + (f" in {secs:.0f}s" if secs is not None else "") + (f" ({nums})" if nums else "")


# --- here: threads, one run per GPU ----------------------------------------------------------------------------
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


def local_slots(config: dict, parallel: Optional[int] = None) -> tuple[int, list[str]]:
    """(runs at once, GPUs to pin them to): one per visible GPU when each run uses one device, else one at a time
    and no pinning (DDP runs see every GPU); ``parallel`` overrides the count."""
    gpus = [] if (config.get("trainer") or {}).get("accelerator") == "cpu" else visible_gpus()
    single = devices_per_run(config) == 1
    return parallel or (len(gpus) if gpus and single else 1), gpus if single else []


def launch_local(runs: list[Run], parallel: int = 1, gpus: Sequence[str] = ()) -> dict[str, dict]:
    """Run sequentially, or ``parallel`` at a time, each slot pinned to one of ``gpus``. A run that fails does not
    stop the others (:func:`~.run.execute` never raises). On Ctrl-C no run starts any more, the running ones (which
    got the same Ctrl-C) are waited for as they stop, and KeyboardInterrupt goes on to the caller."""
    todo: queue.Queue = queue.Queue()
    stop = threading.Event()
    for i, run in enumerate(runs, 1):
        todo.put((i, run))
    results: dict[str, dict] = {}

    def worker(slot: int) -> None:
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
        while not stop.is_set():
            try:
                i, run = todo.get_nowait()
            except queue.Empty:
                return
            where = f" on GPU {env['CUDA_VISIBLE_DEVICES']}" if gpus else ""
            _progress(i, len(runs), run, ("resuming from last.ckpt" if run.status() == "resume" else "started") + where)
            results[run.name] = res = execute(run, env)
            _progress(i, len(runs), run, _outcome(run, res))

    threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in range(parallel if parallel > 1 else 0)]
    try:
        if not threads:
            worker(0)
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    except KeyboardInterrupt:
        stop.set()
        for t in threads:  # each waits for its run, which got the same Ctrl-C (a second Ctrl-C leaves at once)
            t.join()
        raise
    return results


# --- either: the one launch loop -------------------------------------------------------------------------------
def add_launch_arguments(parser: argparse.ArgumentParser, what: str = "runs") -> None:
    """``--launcher``, ``--parallel``, ``--group`` and the SLURM options that :func:`launch` reads."""
    parser.add_argument("--launcher", choices=["local", "slurm", "debug"], default="local",
                        help="local subprocesses, SLURM jobs through submitit, or submitit's in-process debug executor")
    parser.add_argument("--parallel", type=int, help=f"local {what} at once (default: one per visible GPU, else 1)")
    parser.add_argument("--group", help=f"W&B group of the {what} (default: from --out)")
    add_slurm_arguments(parser)


@dataclass
class Launched:
    """What :func:`launch` did: ``reports`` (``{run.name: execute's report}``, empty for jobs not waited for),
    ``started`` (the runs it started or submitted) and ``in_flight`` (SLURM runs still queued or running, left
    alone)."""
    reports: dict[str, dict] = field(default_factory=dict)
    started: list[Run] = field(default_factory=list)
    in_flight: list[Run] = field(default_factory=list)


def to_launch(runs: Sequence[Run], launcher: str, folder: Path) -> tuple[list[Run], list[Run]]:
    """(runs to start, SLURM runs still queued or running): every run not done is one or the other."""
    pending = [r for r in runs if r.status() != "done"]
    in_flight = [r for r in pending if launcher == "slurm" and _in_flight(r, folder)]
    return [r for r in pending if r not in in_flight], in_flight


def launch(runs: Sequence[Run], config_of: Callable[[Run], dict], config: dict, args: argparse.Namespace,
           folder: Path, name: str) -> Launched:
    """Write the config (``config_of(run)``) of each run to start and start it: here (``--parallel`` at a time,
    pinned to GPUs as ``config``'s Trainer allows) or as SLURM jobs in ``folder`` named ``name``, waited for unless
    ``--no_wait``."""
    todo, in_flight = to_launch(runs, args.launcher, folder)
    for run in todo:
        prepare(run, config_of(run))
    if not todo:
        reports = {}
    elif args.launcher == "local":
        reports = launch_local(todo, *local_slots(config, args.parallel))
    else:
        params = slurm_parameters(config, args, name=name[:64])
        reports = launch_slurm(todo, folder, params, cluster=args.launcher, wait=not args.no_wait)
    return Launched(reports, todo, in_flight)


# --- SLURM, through submitit ------------------------------------------------------------------------------------
def add_slurm_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--slurm_*`` and ``--no_wait`` options that :func:`slurm_parameters` and :func:`launch_slurm` read."""
    s = parser.add_argument_group("SLURM (--launcher slurm)")
    s.add_argument("--slurm_partition")
    s.add_argument("--slurm_time", type=int, default=24 * 60, help="minutes per job")
    s.add_argument("--slurm_cpus_per_task", type=int, default=8)
    s.add_argument("--slurm_mem_gb", type=int)
    s.add_argument("--slurm_array_parallelism", type=int, default=64)
    s.add_argument("--slurm_extra", nargs="+", metavar="KEY=VALUE", help="more #SBATCH options, e.g. account=abc")
    s.add_argument("--no_wait", action="store_true", help="submit and exit; summarize later (--summarize_only)")


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
            with atomic_write(Path(run.run_dir) / "slurm_job_id", "w") as f:
                f.write(str(job.job_id))
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
