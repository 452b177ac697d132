"""LR sweeps: selection and CI arithmetic, resume, launchers, one real tiny sweep on the demo."""
from __future__ import annotations

import json
import math
import os
import stat

import pytest
import yaml

from freeze_embed.tools import sweep
from freeze_embed.tools.sweep import Run, command, launchers, resolve_lrs, stats, summarize
from freeze_embed.tools.sweep import run as one_run

from helpers import ROOT, SWEEP_CONFIG as CONFIG, results_json

TINY = ["--trainer.max_epochs", "1", "--data.init_args.train_size", "64", "--data.init_args.eval_size", "32",
        "--data.init_args.batch_size", "16", "--data.init_args.num_workers", "0",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def record(lr, seed, id_val, id_=None, ood=None, epoch=3, status="done"):
    res = results_json(id_val, id_ if id_ is not None else id_val, ood if ood is not None else id_val, epoch)
    return {"lr": lr, "seed": seed, "status": status, "results": res if status == "done" else None}


# --- arithmetic ---------------------------------------------------------------------------------------------------
def test_stats_sample_std_and_90_ci():
    s = stats([0.80, 0.90, 1.00])
    assert s["mean"] == pytest.approx(0.9)
    assert s["std"] == pytest.approx(0.1)  # sample std: sqrt((0.01 + 0 + 0.01) / 2)
    assert s["ci90"] == pytest.approx(1.645 * 0.1 / math.sqrt(3))  # 0.0949741...
    assert s["ci90"] == pytest.approx(0.0949741, abs=1e-7)
    assert stats([0.7]) == {"mean": 0.7, "std": None, "ci90": None, "n": 1, "values": [0.7]}
    assert stats([])["mean"] is None


def test_summarize_picks_best_mean_id_val_not_best_single_run():
    records = [  # lr 1e-3 has the single best run, 3e-3 the best mean
        record(1e-3, 0, 0.95, 0.94, 0.60), record(1e-3, 1, 0.70, 0.71, 0.50), record(1e-3, 2, 0.72, 0.70, 0.52),
        record(3e-3, 0, 0.90, 0.88, 0.70, epoch=5), record(3e-3, 1, 0.86, 0.85, 0.74, epoch=7),
        record(3e-3, 2, 0.88, 0.89, 0.72, epoch=6),
        record(1e-2, 0, 0.99, status="failed"), record(1e-2, 1, 0.10), record(1e-2, 2, 0.12),
    ]
    s = summarize(records)
    assert [p["lr"] for p in s["per_lr"]] == [1e-3, 3e-3, 1e-2]
    assert s["per_lr"][0]["id_val"]["mean"] == pytest.approx((0.95 + 0.70 + 0.72) / 3)
    assert s["per_lr"][2]["n_done"] == 2 and s["per_lr"][2]["n_runs"] == 3  # the failed run does not count
    assert s["chosen_lr"] == 3e-3
    assert s["id"]["values"] == [0.88, 0.85, 0.89] and s["ood"]["values"] == [0.70, 0.74, 0.72]
    assert s["id"]["mean"] == pytest.approx(0.873333333333)
    assert s["ood"]["mean"] == pytest.approx(0.72)
    assert s["ood"]["std"] == pytest.approx(0.02)
    assert s["ood"]["ci90"] == pytest.approx(1.645 * 0.02 / math.sqrt(3))
    assert [r["epoch"] for r in s["chosen_runs"]] == [5, 7, 6]  # each run at its own best epoch
    assert len(s["not_done"]) == 1


def test_summarize_last_epoch_and_ties():
    records = [record(1e-4, 0, 0.8), record(1e-3, 0, 0.8)]
    s = summarize(records, select="last")
    assert s["chosen_lr"] == 1e-4  # tie: the smaller LR
    assert s["id_val"]["mean"] == pytest.approx(0.7) and s["chosen_runs"][0]["epoch"] == "last"
    assert summarize([record(1e-3, 0, 0.5, status="failed")])["chosen_lr"] is None


def test_paper_grid_is_the_method_files():
    cfg = {"method": {"name": "X", "lr_grid": [3e-7, 1e-6]}, "model": {}}
    assert resolve_lrs(["paper"], cfg) == ("X grid", [3e-7, 1e-6])
    assert resolve_lrs(["1e-2", "1e-3"], cfg)[1] == [1e-3, 1e-2]
    with pytest.raises(sweep.SweepError, match="needs a method file"):
        resolve_lrs(["paper"], {"model": {}})
    with pytest.raises(sweep.SweepError):
        resolve_lrs(["fast"], cfg)


def test_selection_metric_comes_from_the_runs():
    """Waterbirds' runs select on id_val/weighted_acc: the sweep picks the LR on it, not on id_val/acc."""
    def wb(lr, acc, weighted):
        res = results_json(acc, 0.5, 0.5)
        res["selection_metric"] = "id_val/weighted_acc"
        res["best"]["best/id_val/weighted_acc"] = weighted
        return {"lr": lr, "seed": 0, "status": "done", "results": res}
    s = summarize([wb(1e-3, 0.9, 0.6), wb(3e-3, 0.8, 0.7)])
    assert s["selection_metric"] == "id_val/weighted_acc" and s["chosen_lr"] == 3e-3
    assert summarize([record(1e-3, 0, 0.9)])["selection_metric"] == "id_val/acc"


# --- resume and launchers, with the training process replaced -----------------------------------------------------
def test_resume_runs_only_what_is_missing(tmp_path, fake_training, capsys):
    out = tmp_path / "sweep"
    for name in ("lr0.001_seed0", "lr0.01_seed1"):  # finished before the interruption
        (out / name).mkdir(parents=True)
        (out / name / "results.json").write_text(json.dumps(results_json(0.81, 0.76, 0.51)))
    interrupted = out / "lr0.01_seed0"
    (interrupted / "checkpoints").mkdir(parents=True)
    (interrupted / "checkpoints" / "last.ckpt").write_text("weights")
    started = sweep.run_config(CONFIG, Run(1e-2, 0, str(interrupted)))
    (interrupted / sweep.RUN_CONFIG).write_text(yaml.safe_dump({**started, "note": "original"}))

    rc = sweep.main(["--config", "x.yaml", "--lrs", "1e-3", "1e-2", "--seeds", "0", "1", "--out", str(out)])
    assert rc == 0
    launched = sorted(c["run_dir"].name for c in fake_training)
    assert launched == ["lr0.001_seed1", "lr0.01_seed0"]
    resumed = next(c for c in fake_training if c["run_dir"] == interrupted)
    assert resumed["cmd"][-2:] == ["--ckpt_path", str(interrupted / "checkpoints" / "last.ckpt")]
    assert resumed["cfg"]["note"] == "original"  # a resumed run keeps the config it started with
    new = next(c for c in fake_training if c["run_dir"].name == "lr0.001_seed1")
    assert "--ckpt_path" not in new["cmd"]
    assert new["cfg"]["seed_everything"] == 1 and new["cfg"]["model"]["optimizer"]["init_args"]["lr"] == 1e-3
    assert new["cfg"]["model"]["optimizer"]["init_args"]["momentum"] == 0.9

    summary = json.loads((out / "summary.json").read_text())
    assert summary["chosen_lr"] == 1e-2 and summary["id"]["n"] == 2
    assert summary["id_val"]["values"] == [pytest.approx(0.90), pytest.approx(0.81)]
    assert "chosen LR 0.01" in capsys.readouterr().out

    fake_training.clear()  # everything is finished now: a re-run launches nothing
    assert sweep.main(["--config", "x.yaml", "--lrs", "1e-3", "1e-2", "--seeds", "0", "1", "--out", str(out)]) == 0
    assert fake_training == []


def test_failed_run_is_reported_and_sweep_goes_on(tmp_path, fake_training, capsys):
    out = tmp_path / "sweep"
    rc = sweep.main(["--config", "x.yaml", "--lrs", "0.666", "1e-2", "--seeds", "0", "--out", str(out)])
    assert rc == 1
    assert len(fake_training) == 2  # the crash did not stop the second run
    err = capsys.readouterr().err
    assert "FAILED: lr=0.666 seed=0" in err and "train.log" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["chosen_lr"] == 1e-2
    assert [(r["lr"], r["status"]) for r in summary["runs"]] == [(1e-2, "done"), (0.666, "failed")]


def test_run_config_logs_under_run_dir_and_shares_wandb_group(tmp_path, fake_training):
    out = tmp_path / "sweep"
    sweep.main(["--config", "x.yaml", "--lrs", "1e-3", "--seeds", "0", "1", "--out", str(out), "--group", "g"])
    wandb_ids = set()
    for call in fake_training:
        csv, wandb = call["cfg"]["trainer"]["logger"]
        assert csv["init_args"]["save_dir"] == str(call["run_dir"]) and csv["init_args"]["name"] == "logs"
        assert wandb["init_args"]["group"] == "g" and wandb["init_args"]["save_dir"] == str(call["run_dir"])
        assert wandb["init_args"]["resume"] == "allow"
        wandb_ids.add(wandb["init_args"]["id"])
        assert call["env"]["WANDB_RUN_GROUP"] == "g"
        assert call["cfg"]["trainer"]["default_root_dir"] == str(call["run_dir"])
    assert len(wandb_ids) == 2


def test_train_command_is_the_repos_train_py(tmp_path):
    """The package sits one level deeper than the old module: the command still finds <repo>/train.py."""
    assert sweep.TRAIN_PY == ROOT / "train.py" and sweep.TRAIN_PY.exists()
    cmd = sweep.train_command(Run(1e-3, 0, str(tmp_path / "r")))
    assert cmd[1:4] == [str(ROOT / "train.py"), "fit", "--config"]


def test_dry_run_launches_nothing(tmp_path, fake_training, capsys):
    assert sweep.main(["--config", "x.yaml", "--seeds", "0", "--out", str(tmp_path / "s"), "--dry_run"]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if "train.py" in x]
    assert len(lines) == 6 and all(" fit --config " in x for x in lines)  # the method's 6-LR grid
    assert [x.split("/lr")[1].split("_seed")[0] for x in lines] == ["3e-05", "0.0001", "0.0003", "0.001", "0.003",
                                                                     "0.01"]
    assert fake_training == [] and not (tmp_path / "s").exists()


def test_one_run_per_visible_gpu(tmp_path, fake_training, monkeypatch):
    monkeypatch.setattr(launchers, "visible_gpus", lambda: ["0", "1"])
    cfg = json.loads(json.dumps(CONFIG))
    cfg["trainer"]["accelerator"] = "gpu"
    monkeypatch.setattr(command, "compose", lambda configs, overrides=(): cfg)
    seen = {}
    real = sweep.launch_local
    monkeypatch.setattr(launchers, "launch_local", lambda runs, parallel, gpus: seen.update(p=parallel, g=gpus)
                        or real(runs, parallel, gpus))
    sweep.main(["--config", "x.yaml", "--lrs", "1e-3", "1e-2", "--seeds", "0", "1", "--out", str(tmp_path / "s")])
    assert seen == {"p": 2, "g": ["0", "1"]}
    assert len(fake_training) == 4 and {c["env"]["CUDA_VISIBLE_DEVICES"] for c in fake_training} <= {"0", "1"}
    cfg["trainer"]["devices"] = 2  # DDP runs use several GPUs each: one at a time, no pinning
    sweep.main(["--config", "x.yaml", "--lrs", "3e-3", "--seeds", "0", "--out", str(tmp_path / "s2")])
    assert seen == {"p": 1, "g": []}


def test_slurm_launcher_through_submitit_debug_executor(tmp_path, fake_training):
    out = tmp_path / "sweep"
    rc = sweep.main(["--config", "x.yaml", "--lrs", "1e-3", "1e-2", "--seeds", "0", "--out", str(out),
                     "--launcher", "debug"])
    assert rc == 0 and len(fake_training) == 2
    assert json.loads((out / "summary.json").read_text())["chosen_lr"] == 1e-2


def test_slurm_job_parameters(tmp_path, monkeypatch):
    """The sbatch script submitit would submit: DDP shape from the Trainer config, options from the command line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"  # submitit only checks that SLURM's srun exists
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cfg = {"trainer": {"accelerator": "gpu", "devices": 4, "num_nodes": 2}}
    args, _ = sweep.parse_args(["--config", "x.yaml", "--slurm_partition", "gpu", "--slurm_time", "600",
                                "--slurm_extra", "account=abc", "qos=high"])
    params = sweep.slurm_parameters(cfg, args, name="sweep-demo")
    assert params["nodes"] == 2 and params["tasks_per_node"] == 4 and params["gpus_per_node"] == 4
    import submitit
    executor = submitit.AutoExecutor(folder=tmp_path / "slurm", cluster="slurm")
    executor.update_parameters(**params)
    text = executor._executor._make_submission_file_text("python job.py", "uid")
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu", "--time=600",
                 "--account=abc", "--qos=high", "--job-name=sweep-demo", "--cpus-per-task=8"):
        assert f"#SBATCH {line}" in text, line


# --- the real thing -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_tiny_demo_sweep_end_to_end_and_resume(tmp_path, capsys, monkeypatch):
    """2 LRs x 1 seed of 1 tiny epoch through train.py subprocesses; then an interrupted run resumes."""
    out = tmp_path / "sweep"
    argv = ["--config", str(ROOT / "configs/demo.yaml"), "--config", str(ROOT / "configs/method/sgd.yaml"),
            "--lrs", "1e-3", "1e-2", "--seeds", "0", "--out", str(out), *TINY]
    assert sweep.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "SGD" and summary["dataset"] == "Demo" and len(summary["runs"]) == 2
    assert all(r["status"] == "done" and 0 <= r["id"] <= 1 and 0 <= r["ood"] <= 1 for r in summary["runs"])
    best = max(summary["per_lr"], key=lambda p: p["id_val"]["mean"])
    assert summary["chosen_lr"] == best["lr"]
    for lr in ("0.001", "0.01"):
        run = out / f"lr{lr}_seed0"
        cfg = yaml.safe_load((run / sweep.RUN_CONFIG).read_text())
        assert cfg["model"]["optimizer"]["init_args"] == {"lr": float(lr), "momentum": 0.9, "dampening": 0.0,
                                                          "weight_decay": 0.0, "nesterov": False,
                                                          "foreach": None, "fused": None}  # None: chosen per device
        assert cfg["model"]["strategy"]["class_path"] == "freeze_embed.strategies.FullFineTune"
        assert (run / "checkpoints" / "last.ckpt").exists()
        assert list((run / "logs").glob("version_0/metrics.csv"))

    interrupted = out / "lr0.01_seed0"  # crashed after its last checkpoint, before results.json
    before = json.loads((interrupted / "results.json").read_text())
    (interrupted / "results.json").unlink()
    capsys.readouterr()

    def in_process(cmd, log, env):  # the same train.py command, without paying a second Python start-up
        from freeze_embed.run.cli import main
        main(cmd[cmd.index("fit"):])
        return 0
    monkeypatch.setattr(one_run, "_call", in_process)
    assert sweep.main(argv) == 0
    assert "1 done, 1 to resume, 0 new" in capsys.readouterr().out
    commands = [x for x in (interrupted / "train.log").read_text().splitlines() if x.startswith("$ ")]
    assert len(commands) == 2 and "--ckpt_path" not in commands[0]
    assert commands[1].endswith(f"--ckpt_path {interrupted / 'checkpoints' / 'last.ckpt'}")
    after = json.loads((interrupted / "results.json").read_text())
    assert after["best"] == pytest.approx(before["best"])
