"""Momentum x effective LR sweeps (Li et al., "Rethinking the Hyperparameters for Fine-tuning", ICLR 2020):
the arithmetic, selection per momentum, resume, and one-sentence refusals."""
from __future__ import annotations

import json

import pytest

from freeze_embed.errors import run_command
from freeze_embed.tools import sweep
from freeze_embed.tools.sweep import Run, resolve_lrs

from helpers import ROOT, replace_training


def test_effective_lr_arithmetic():
    assert sweep.actual_lr(1e-2, 0.9) == 1e-3 and sweep.actual_lr(0.1, 0.99) == 1e-3  # exact: no 1.0000000000000002e-4
    assert sweep.actual_lr(0.3, 0.0) == 0.3 and sweep.effective_lr(1e-4, 0.9) == 1e-3
    assert sweep.effective_lr(sweep.actual_lr(3e-3, 0.99), 0.99) == 3e-3
    assert sweep.momentum_grid([0.01, 0.1], [0.0, 0.9], effective=True) == [(0.0, 0.01), (0.0, 0.1), (0.9, 0.001),
                                                                            (0.9, 0.01)]
    assert sweep.momentum_grid([0.01], [0.0, 0.9], effective=False) == [(0.0, 0.01), (0.9, 0.01)]
    assert sweep.momentum_grid([0.01, 0.1], None, effective=False) == [(None, 0.01), (None, 0.1)]
    cfg = {"method": {"name": "X", "lr_grid": [1e-2, 1e-3]}, "model": {}}
    assert resolve_lrs(["effective"], cfg) == ("X grid, effective", [1e-2, 1e-3])  # the method's grid, as effective
    assert resolve_lrs(["effective", "0.1", "0.01"], cfg) == ("given, effective", [0.01, 0.1])
    assert Run(1e-3, 0, "d").name == "lr0.001_seed0"  # no --momenta: today's names
    assert Run(1e-3, 2, "d", momentum=0.9).name == "m0.9_lr0.001_seed2"
    assert Run.dir_name(0.1, 0, 0.0) == "m0_lr0.1_seed0"


# (momentum, effective LR) -> ID val accuracy; OOD prefers the other LR, so choosing on it would differ.
MOMENTUM_ACC = {(0.0, 0.01): 0.70, (0.0, 0.1): 0.85, (0.9, 0.01): 0.88, (0.9, 0.1): 0.60}


def momentum_scores(cfg: dict) -> tuple[float, float, float]:
    init = cfg["model"]["optimizer"]["init_args"]
    acc = MOMENTUM_ACC[(init["momentum"], sweep.effective_lr(init["lr"], init["momentum"]))]
    acc += 0.01 * cfg["seed_everything"]
    return acc, acc - 0.05, 1.5 - acc


@pytest.fixture
def momentum_training(monkeypatch):
    return replace_training(monkeypatch, momentum_scores)


def launched(calls: list[dict]) -> list[tuple]:
    """(run, momentum, lr) of every launch."""
    return sorted((c["run_dir"].name, c["cfg"]["model"]["optimizer"]["init_args"]["momentum"],
                   c["cfg"]["model"]["optimizer"]["init_args"]["lr"]) for c in calls)


def test_momentum_sweep_selects_per_momentum_on_id_val(tmp_path, momentum_training, capsys):
    out = tmp_path / "sweep"
    argv = ["--config", "x.yaml", "--momenta", "0", "0.9", "--lrs", "effective", "0.01", "0.1", "--seeds", "0", "1",
            "--out", str(out)]
    assert sweep.main(argv) == 0
    assert launched(momentum_training) == [("m0.9_lr0.001_seed0", 0.9, 0.001), ("m0.9_lr0.001_seed1", 0.9, 0.001),
                                           ("m0.9_lr0.01_seed0", 0.9, 0.01), ("m0.9_lr0.01_seed1", 0.9, 0.01),
                                           ("m0_lr0.01_seed0", 0.0, 0.01), ("m0_lr0.01_seed1", 0.0, 0.01),
                                           ("m0_lr0.1_seed0", 0.0, 0.1), ("m0_lr0.1_seed1", 0.0, 0.1)]
    s = json.loads((out / "summary.json").read_text())
    no_m, m09 = s["per_momentum"]
    assert (no_m["momentum"], no_m["chosen_effective_lr"], no_m["chosen_lr"]) == (0.0, 0.1, 0.1)
    assert (m09["momentum"], m09["chosen_effective_lr"], m09["chosen_lr"]) == (0.9, 0.01, 0.001)
    assert no_m["id_val"]["mean"] == pytest.approx(0.855) and m09["id_val"]["mean"] == pytest.approx(0.885)
    assert m09["ood"]["values"] == [pytest.approx(0.62), pytest.approx(0.61)]  # 1.5 - acc, at the chosen LR
    assert [(p["effective_lr"], p["lr"]) for p in m09["per_lr"]] == [(0.01, 0.001), (0.1, 0.01)]
    assert m09["per_lr"][1]["ood"]["mean"] == pytest.approx(0.895)  # the better OOD LR lost on ID val
    assert s["chosen_momentum"] == 0.9 and s["chosen_lr"] == 0.001 and s["id"]["mean"] == pytest.approx(0.835)
    assert s["momenta"] == [0.0, 0.9] and s["effective_lrs"] is True and len(s["runs"]) == 8
    assert {r["momentum"] for r in s["runs"]} == {0.0, 0.9}
    printed = capsys.readouterr().out
    assert "momentum 0.9: effective LR 0.01 (LR 0.001): ID 83.5 ± 0.8" in printed  # 1.645 * 0.00707 / sqrt(2)
    assert "best momentum on id_val/acc: 0.9" in printed
    momentum_training.clear()  # resumable: everything is done, nothing runs again
    assert sweep.main(argv) == 0 and momentum_training == []


@pytest.mark.parametrize("argv, message", [
    (["--momenta", "0", "0.9", "--lrs", "effective", "--config", "configs/method/adamw.yaml"],
     "freeze_embed.optim.AdamW has none"),
    (["--lrs", "effective"], "--lrs effective compares momenta"),
    (["--momenta", "0.9", "1"], "--momenta must lie in [0, 1), not 1"),
    (["--momenta", "0.9", "--lrs", "effective", "--model.optimizer.init_args.dampening", "0.5"], "dampening 0.5"),
])
def test_momentum_sweep_refusals(tmp_path, argv, message, capsys):
    base = ["--config", str(ROOT / "configs/demo.yaml"), "--config", str(ROOT / "configs/method/sgd.yaml")]
    assert run_command(sweep.main, base + argv + ["--out", str(tmp_path / "s"), "--dry_run"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1  # one sentence
    assert not (tmp_path / "s").exists()
