"""A diverging run stops at its first non-finite loss or gradient, before the step, with one sentence, on every
process at once, and records it in a strict-JSON results.json."""
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from helpers import ROOT, run_cli, tiny_demo_args

IN_BACKWARD = ["--model.optimizer_in_backward", "true"]


def strict(path) -> dict:
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")
    return json.loads(path.read_text(), parse_constant=refuse)


def poison(tmp_path, step: int, rank: int = 0) -> list[str]:
    """A config adding tests/my_strategies.PoisonAt: process ``rank``'s batch is NaN at ``step``."""
    path = tmp_path / "poison.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": [{"class_path": "my_strategies.PoisonAt", "init_args": {
        "step": step, "rank": rank, "out": str(tmp_path / "stopped")}}]}}))
    return ["--config", str(path)]


def the_sentence(err: str) -> str:
    lines = [x for x in err.splitlines() if x.startswith("Training diverged")]
    assert len(lines) == 1, err[-3000:]
    assert lines[0].endswith("lower the learning rate (model.optimizer.init_args.lr).")
    return lines[0]


@pytest.mark.slow
def test_lr_1e6_stops_at_the_first_nonfinite_step(tmp_path, capsys):
    """The issue's run: LR 1e6 on the demo. Its first step is finite; the second's gradients are not."""
    run_cli(tiny_demo_args(tmp_path, epochs=2, extra=["--model.optimizer.init_args.lr", "1e6"]))
    sentence = the_sentence(capsys.readouterr().err)
    assert sentence.startswith("Training diverged at epoch 0, step 1 (learning rate 9.62e+05): the gradients of "
                               "backbone.cls_token, backbone.pos_embed, backbone.blocks.0.norm1.weight and ")
    res = strict(tmp_path / "run/results.json")
    assert res["diverged"] is True and res["message"] == sentence
    assert {k: res["diverged_at"][k] for k in ("epoch", "step", "loss_finite")} == {
        "epoch": 0, "step": 1, "loss_finite": True}
    assert "best" not in res and "last" not in res  # nothing tested: a diverged run is no result
    assert not (tmp_path / "run/checkpoints").exists()  # it stopped inside epoch 0: no checkpoint at all


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["standard", "in_backward"])
def test_nan_loss_stops_before_the_step_and_checkpoints_stay_finite(tmp_path, capsys, mode):
    """A NaN loss at step 5 (epoch 1 of 4-step epochs): no step is taken, the weights stay finite, and the last
    checkpoint is epoch 0's."""
    extra = poison(tmp_path, step=5) + (IN_BACKWARD if mode == "in_backward" else [])
    run_cli(tiny_demo_args(tmp_path, epochs=2, extra=extra))
    sentence = the_sentence(capsys.readouterr().err)
    assert sentence.startswith("Training diverged at epoch 1, step 5 (learning rate ")
    assert "the training loss was not finite and the gradients of " in sentence
    assert "the run stopped before taking this step" in sentence
    at = strict(tmp_path / "run/results.json")["diverged_at"]
    assert (at["epoch"], at["step"], at["loss_finite"]) == (1, 5, False)
    assert "head.weight" in at["nonfinite_gradients"]
    stopped = json.loads((tmp_path / "stopped/rank0.json").read_text())
    assert stopped == {"step": 5, "error": "Diverged", "weights_finite": True}
    last = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=False)
    assert last["global_step"] == 4 and all(v.isfinite().all() for v in last["state_dict"].values())


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["standard", "in_backward"])
def test_two_process_ddp_stops_every_process_at_the_same_step(tmp_path, mode):
    """Only process 1's loss is NaN, at step 1: both processes stop there, the run exits 0 with one sentence."""
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    extra = [*ddp, *poison(tmp_path, step=1, rank=1), *(IN_BACKWARD if mode == "in_backward" else [])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *tiny_demo_args(tmp_path, epochs=2, extra=extra)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert the_sentence(proc.stderr).startswith("Training diverged at epoch 0, step 1 ")
    for rank in (0, 1):
        stopped = json.loads((tmp_path / f"stopped/rank{rank}.json").read_text())
        assert stopped == {"step": 1, "error": "Diverged", "weights_finite": True}
    res = strict(tmp_path / "run/results.json")
    assert res["diverged"] is True and res["diverged_at"]["step"] == 1 and res["diverged_at"]["loss_finite"] is False
