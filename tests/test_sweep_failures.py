"""Sweeps that fail in part: a run that raises does not stop the others and is reported with its log's last line;
re-running retries only it; a diverged run is shown as diverged and its LR is never chosen; Ctrl-C leaves every
file whole and the next invocation continues."""
from __future__ import annotations

import contextlib
import json
from typing import Optional

import pytest

from freeze_embed.tools import sweep
from freeze_embed.tools.results import render
from freeze_embed.tools.sweep import summarize
from freeze_embed.tools.sweep import run as one_run
from test_sweep import record, results_json

OOM = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"


def sweep_args(out, lrs=("0.666", "1e-2"), seeds=("0", "1")):
    return ["--config", "x.yaml", "--lrs", *lrs, "--seeds", *seeds, "--out", str(out)]


@contextlib.contextmanager
def launch_raising(run_name: str, error: BaseException, calls: Optional[list] = None):
    """Inside: launching the run ``run_name`` raises ``error`` (the launcher itself, e.g. a broken environment, or
    Ctrl-C); every launch is recorded in ``calls``; the other runs train as the fake training does."""
    real = one_run._call

    def call(cmd, log, env):
        if calls is not None:
            calls.append(cmd)
        if run_name in " ".join(cmd):
            raise error
        return real(cmd, log, env)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(one_run, "_call", call)
        yield


def test_a_run_that_raises_does_not_stop_the_other_three(tmp_path, fake_training, capsys):
    out = tmp_path / "sweep"
    calls = []
    with launch_raising("lr0.001_seed1", OSError("exec format error"), calls):
        assert sweep.main(sweep_args(out, lrs=("1e-3", "1e-2"))) == 1
    assert len(calls) == 4 and len(fake_training) == 3  # the other three trained
    summary = json.loads((out / "summary.json").read_text())
    assert [(r["lr"], r["seed"]) for r in summary["failed"]] == [(1e-3, 1)]
    assert summary["chosen_lr"] == 1e-2 and summary["id"]["n"] == 2


def test_failed_run_reports_its_last_error_line_and_only_it_is_retried(tmp_path, fake_training, capsys):
    out = tmp_path / "sweep"
    assert sweep.main(sweep_args(out)) == 1
    assert len(fake_training) == 4  # the crash at lr 0.666 stopped nothing
    err = capsys.readouterr().err
    assert f"FAILED: lr=0.666 seed=0: {OOM}; see {out}/lr0.666_seed0/train.log" in err
    assert f"FAILED: lr=0.666 seed=1: {OOM};" in err
    summary = json.loads((out / "summary.json").read_text())
    assert [(r["seed"], r["error"]) for r in summary["failed"]] == [(0, OOM), (1, OOM)]

    fake_training.clear()
    assert sweep.main(sweep_args(out)) == 1
    assert sorted(c["run_dir"].name for c in fake_training) == ["lr0.666_seed0", "lr0.666_seed1"]


def test_diverged_run_is_shown_and_its_lr_never_chosen(tmp_path, fake_training, capsys):
    """lr 6.66 diverges on seed 0; its seed 1 would score best (its results are written by hand), yet 1e-2 wins."""
    out = tmp_path / "sweep"
    (out / "lr6.66_seed1").mkdir(parents=True)
    (out / "lr6.66_seed1/results.json").write_text(json.dumps(results_json(0.99, 0.99, 0.99)))
    assert sweep.main(sweep_args(out, lrs=("1e-2", "6.66"))) == 0  # a diverged run is a result, not a failure
    captured = capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["chosen_lr"] == 1e-2
    assert [(r["lr"], r["seed"], r["diverged_at"]["step"]) for r in summary["diverged"]] == [(6.66, 0, 1)]
    row = next(x for x in captured.out.splitlines() if x.lstrip().startswith("6.66"))
    assert row.endswith("1 diverged")
    assert "DIVERGED (its LR is never chosen): lr=6.66 seed=0 at epoch 0, step 1" in captured.err
    fake_training.clear()
    assert sweep.main(sweep_args(out, lrs=("1e-2", "6.66"))) == 0 and fake_training == []  # not retried


def test_results_tables_footnote_diverged_runs():
    blew_up = {"lr": 1e-2, "seed": 0, "status": "done",
               "results": {"diverged": True, "diverged_at": {"epoch": 2, "step": 40}}}
    s = summarize([record(1e-3, 0, 0.8), blew_up])
    s.update(method="SGD", dataset="Waterbirds", model="CLIP ViT-B/16")
    md = render([s])
    assert md.count("| SGD | 80.0 † |") == 2  # ID and OOD tables: the cell has a diverged run
    assert "† SGD on Waterbirds: 1 of 2 runs diverged (LR 0.01); they are never chosen by LR selection." in md


def test_ctrl_c_leaves_every_file_whole_and_the_next_run_continues(tmp_path, fake_training, capsys):
    out = tmp_path / "sweep"
    with launch_raising("lr0.01_seed0", KeyboardInterrupt()):
        assert sweep.main(sweep_args(out, lrs=("1e-3", "1e-2"))) == 130
    assert "Interrupted: re-run the same command to continue" in capsys.readouterr().err
    assert sorted(c["run_dir"].name for c in fake_training) == ["lr0.001_seed0", "lr0.001_seed1"]
    assert not list(out.rglob(".*.tmp"))  # no half-written file left behind
    assert not (out / "lr0.01_seed1/train.log").exists()  # no run started after the Ctrl-C
    fake_training.clear()
    assert sweep.main(sweep_args(out, lrs=("1e-3", "1e-2"))) == 0
    assert sorted(c["run_dir"].name for c in fake_training) == ["lr0.01_seed0", "lr0.01_seed1"]
    assert json.loads((out / "summary.json").read_text())["chosen_lr"] == 1e-2


def test_a_finished_run_reports_how_long_it_took(tmp_path):
    from freeze_embed.tools.sweep.launchers import _outcome
    run = one_run.Run(lr=0.1, seed=0, run_dir=str(tmp_path))
    (tmp_path / "results.json").write_text(json.dumps({"selection_metric": "id_val/acc", "best": {
        "best/id_val/acc": 0.5, "best/paper/id": 0.5, "best/paper/ood": 0.25}}))
    assert _outcome(run, {"status": "done", "seconds": 12.4}) == \
        "done in 12s (id_val/acc 50.0%, ID 50.0%, OOD 25.0%)"
