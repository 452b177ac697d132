"""ImageFolders through train.py on a generated folder tree: fit, exact resume, 2-process gloo DDP, in-backward."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from helpers import ROOT, results, run_cli

DATA = {"train": {"cat": 12, "dog": 12}, "test": {"cat": 3, "dog": 4}, "site": {"dog": 3}}  # site lacks cat


@pytest.fixture
def folders(tmp_path):
    """A learnable two-class tree (the class sets a colour channel) and a data config naming its sets."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for split, counts in DATA.items():
        for c, n in counts.items():
            k = ["cat", "dog"].index(c)
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                a = rng.integers(0, 120, (36, 40, 3)).astype(np.uint8)
                a[..., 2 * k] = 230
                Image.fromarray(a).save(root / split / c / f"{i}.{'png' if i % 2 else 'jpg'}")
    config = tmp_path / "data.yaml"
    config.write_text(yaml.safe_dump({"data": {"class_path": "freeze_embed.data.ImageFolders", "init_args": {
        "train": str(root / "train"), "eval": {"id_test": str(root / "test"), "ood_site": str(root / "site")},
        "val_fraction": 0.25, "batch_size": 8, "num_workers": 0}}}))
    return config


def args(run, config, epochs=1, extra=()):
    return ["fit", "--config", str(ROOT / "configs/demo.yaml"), "--config", str(config),
            "--trainer.max_epochs", str(epochs), "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.logger.init_args.save_dir", str(run / "logs"),
            "--run_dir", str(run / "run"), *extra]


def last(run):
    return torch.load(run / "run/checkpoints/last.ckpt", weights_only=False)


@pytest.mark.slow
def test_fit_reports_every_set_and_the_checkpoint_carries_the_classes(tmp_path, folders):
    run_cli(args(tmp_path, folders))
    r = results(tmp_path)
    assert r["selection_metric"] == "id_val/acc"
    assert r["best"]["best/paper/id"] == r["best"]["best/id_test/acc"]
    assert r["best"]["best/paper/ood"] == r["best"]["best/ood_site/acc"]
    assert round(r["best"]["best/id_test/acc"] * 7, 4) % 1 == 0  # a fraction of the 7 test images
    ckpt = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)
    assert ckpt["class_names"] == ["cat", "dog"] and ckpt["preprocess"]["input_size"] == [3, 32, 32]


@pytest.mark.slow
def test_resume_is_exact(tmp_path, folders):
    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    extra = ["--data.init_args.balance", "sampler"]  # the weighted sampler's draws resume too
    run_cli(args(whole, folders, epochs=2, extra=extra))
    crash = tmp_path / "crash.yaml"
    crash.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor"},
        {"class_path": "my_strategies.CrashAtEpoch", "init_args": {"epoch": 1}}]}}))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_cli(args(crashed, folders, epochs=2, extra=[*extra, "--config", str(crash)]))
    run_cli(args(crashed, folders, epochs=2,
                 extra=[*extra, "--ckpt_path", str(crashed / "run/checkpoints/last.ckpt")]))
    assert results(crashed)["last"] == pytest.approx(results(whole)["last"], abs=1e-6)
    a, b = last(whole)["state_dict"], last(crashed)["state_dict"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.slow
def test_in_backward_gives_the_standard_weights(tmp_path, folders):
    run_cli(args(tmp_path / "standard", folders))
    run_cli(args(tmp_path / "fused", folders, extra=["--model.optimizer_in_backward", "true"]))
    a, b = last(tmp_path / "standard")["state_dict"], last(tmp_path / "fused")["state_dict"]
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a)


@pytest.mark.slow
def test_two_process_ddp_counts_each_image_once(tmp_path, folders):
    cmd = [sys.executable, str(ROOT / "train.py"), *args(tmp_path, folders, extra=[
        "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"])]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = results(tmp_path)
    # Re-evaluate the last checkpoint in one process: 7 test images over 2 processes, none counted twice.
    from freeze_embed.data import ImageFolders
    from freeze_embed.module import FineTuner
    model = FineTuner.load_from_checkpoint(tmp_path / "run/checkpoints/last.ckpt", map_location="cpu").eval()
    init = yaml.safe_load(folders.read_text())["data"]["init_args"]
    dm = ImageFolders(**init, backbone=model.hparams.backbone, backbone_kwargs=model.hparams.backbone_kwargs)
    for name, n in (("id_test", 7), ("ood_site", 3)):
        x, y = zip(*[(s[0], s[1]) for s in dm.split(name)])
        assert len(x) == n
        with torch.no_grad():
            acc = (model(torch.stack(x)).argmax(-1) == torch.tensor(y)).float().mean().item()
        assert r["last"][f"last/{name}/acc"] == pytest.approx(acc, abs=1e-6)
    assert last(tmp_path)["class_names"] == ["cat", "dog"]
