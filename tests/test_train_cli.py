"""End-to-end ``train.py`` runs on the demo: every strategy, a user's strategy, resume, bf16, clear errors."""
import json
import subprocess
import sys

import pytest
import torch
import yaml

from helpers import ROOT, results, run_cli, tiny_demo_args

STRATEGIES = {
    "full": ["--model.strategy", "freeze_embed.strategies.FullFineTune"],
    "freeze_embed": ["--model.strategy", "freeze_embed.strategies.FreezeEmbed"],
    "embed_lr": ["--model.strategy", "freeze_embed.strategies.EmbedLRScale"],
    "gradual": ["--model.strategy", "freeze_embed.strategies.GradualUnfreeze"],
    "linear_probe": ["--model.strategy", "freeze_embed.strategies.LinearProbe"],
    "lp_ft": ["--model.strategy", "freeze_embed.strategies.LPFT",
              "--model.strategy.init_args.finetune", "freeze_embed.strategies.FreezeEmbed"],
    "adamw": ["--model.optimizer", "freeze_embed.optim.AdamW", "--model.optimizer.init_args.lr", "1e-4"],
    "lars": ["--model.optimizer", "timm.optim.Lars", "--model.optimizer.init_args.lr", "0.1"],
    "lamb": ["--model.optimizer", "timm.optim.Lamb", "--model.optimizer.init_args.lr", "1e-3"],
}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_fit_then_test_best_and_last(tmp_path, name):
    run_cli(tiny_demo_args(tmp_path, extra=STRATEGIES[name]))
    r = results(tmp_path)
    assert r["best_epoch"] in (0, 1)
    for tag in ("best", "last"):
        for key in ("id_val/acc", "id_test/acc", "ood_test/acc", "ood_test/worst_group_acc", "paper/id", "paper/ood"):
            assert 0.0 <= r[tag][f"{tag}/{key}"] <= 1.0, (tag, key)
        assert r[tag][f"{tag}/paper/id"] == r[tag][f"{tag}/id_test/acc"]  # the demo reports ID on id_test
    assert r["last_checkpoint"].endswith("last.ckpt")
    metrics = (tmp_path / "logs" / "demo" / "version_0" / "metrics.csv").read_text()
    assert "optimizer/state_bytes" in metrics and "params/trainable" in metrics


def test_linear_probe_fits_the_head_by_logistic_regression(tmp_path):
    run_cli(tiny_demo_args(tmp_path, epochs=1, extra=STRATEGIES["linear_probe"]))
    ckpt = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=False)
    pretrained = torch.load(ROOT / "freeze_embed/assets/demo_vit_tiny.pth")
    for name, value in pretrained.items():  # the backbone is untouched
        assert torch.equal(ckpt["state_dict"][f"backbone.{name}"], value), name
    assert results(tmp_path)["best"]["best/id_val/acc"] > 0.5  # a probe on orientation features beats chance (0.25)


def test_test_subcommand_on_a_checkpoint(tmp_path):
    run_cli(tiny_demo_args(tmp_path, epochs=1))
    args = tiny_demo_args(tmp_path)[1:]
    run_cli(["test", *[a for a in args if a not in ("--run_dir", str(tmp_path / "run"))],
             "--ckpt_path", str(tmp_path / "run/checkpoints/last.ckpt")])


def test_user_strategy_subclass_named_in_yaml(tmp_path):
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"strategy": {"class_path": "my_strategies.FreezeEmbedAndFirstBlock"}}}))
    run_cli(tiny_demo_args(tmp_path, extra=["--config", str(cfg)]))
    state = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=False)["state_dict"]
    pretrained = torch.load(ROOT / "freeze_embed/assets/demo_vit_tiny.pth")
    for name in ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "cls_token"):
        assert torch.equal(state[f"backbone.{name}"], pretrained[name]), name
    assert not torch.equal(state["backbone.blocks.1.attn.qkv.weight"], pretrained["blocks.1.attn.qkv.weight"])


RESUMED = {  # every strategy; the probe ones fit their head once per run, which a resume must not redo
    "full": STRATEGIES["full"], "freeze_embed": STRATEGIES["freeze_embed"], "gradual": STRATEGIES["gradual"],
    "embed_lr": STRATEGIES["embed_lr"], "lp_ft_freeze_embed": STRATEGIES["lp_ft"],
    "linear_probe_trains_head": ["--model.strategy", "freeze_embed.strategies.LinearProbe",
                                 "--model.strategy.init_args.train_head", "true"],
}


@pytest.mark.parametrize("name", list(RESUMED))
def test_resume_after_crash_gives_the_same_weights_and_metrics(tmp_path, name):
    """Resuming must not refit a probe on the fine-tuned backbone (overwriting the trained head), nor lose RNG or
    schedule state: weights and metrics equal the uninterrupted run's."""
    base = [*RESUMED[name], "--data.init_args.train_size", "48"]
    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    run_cli(tiny_demo_args(whole, epochs=3, extra=base))
    crash = crashed / "crash.yaml"
    crashed.mkdir()
    crash.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor"},
        {"class_path": "my_strategies.CrashAtEpoch", "init_args": {"epoch": 2}}]}}))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_cli(tiny_demo_args(crashed, epochs=3, extra=[*base, "--config", str(crash)]))
    assert not (crashed / "run/results.json").exists()
    run_cli(tiny_demo_args(crashed, epochs=3, extra=[*base, "--ckpt_path", str(crashed / "run/checkpoints/last.ckpt")]))
    a, b = results(whole), results(crashed)
    assert b["last"] == pytest.approx(a["last"], abs=1e-6)
    ckpt = torch.load(crashed / "run/checkpoints/last.ckpt", weights_only=False)
    sa = torch.load(whole / "run/checkpoints/last.ckpt", weights_only=False)["state_dict"]
    for key, value in ckpt["state_dict"].items():
        assert torch.allclose(sa[key], value, atol=1e-6), key
    if "probe" in name or "lp_ft" in name:
        state = ckpt["strategy_state"]
        assert (state.get("probe") or state)["probe_result"]["C"] > 0  # the fit is recorded in the checkpoint


def test_bf16_mixed_step_on_cpu(tmp_path):
    run_cli(tiny_demo_args(tmp_path, extra=["--trainer.precision", "bf16-mixed", "--trainer.fast_dev_run", "1"]))


def _cli_error(tmp_path, capsys, extra):
    with pytest.raises(SystemExit) as exc:
        run_cli(tiny_demo_args(tmp_path, extra=extra))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ")
    return err[-1]


def test_unknown_backbone_is_one_sentence(tmp_path, capsys):
    msg = _cli_error(tmp_path, capsys, ["--model.backbone", "timm:vit_tiny_patch16_2244"])
    assert "no model named 'vit_tiny_patch16_2244'" in msg and "Did you mean vit_tiny_patch16_224" in msg


def test_no_embedding_found_is_one_sentence(tmp_path, capsys):
    msg = _cli_error(tmp_path, capsys, ["--model.backbone", "torchvision:mobilenet_v2", "--model.pretrained", "false",
                                        "--model.backbone_kwargs", "{}"])
    assert "Cannot find the embedding layer" in msg and "model.embed" in msg


def test_checkpoint_that_does_not_fit_is_one_sentence(tmp_path, capsys):
    msg = _cli_error(tmp_path, capsys, ["--model.backbone_kwargs", "{img_size: 32, patch_size: 4, depth: 2}"])
    assert "does not fit backbone 'timm:vit_tiny_patch16_224'" in msg


def test_two_process_ddp_on_cpu_with_freeze_embed(tmp_path):
    """gloo DDP: frozen parameters do not break it, and metrics count each example exactly once."""
    args = tiny_demo_args(tmp_path, extra=["--trainer.strategy", "ddp", "--trainer.devices", "2",
                                           "--trainer.accelerator", "cpu", "--data.init_args.eval_size", "33"])
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = results(tmp_path)
    # Re-evaluate the last checkpoint in one process: DDP's id_val accuracy must be the same exact fraction of 33.
    from freeze_embed.data import DemoShift
    from freeze_embed.module import FineTuner
    model = FineTuner.load_from_checkpoint(tmp_path / "run/checkpoints/last.ckpt", map_location="cpu").eval()
    dm = DemoShift(eval_size=33, backbone=model.hparams.backbone)
    x, y = zip(*[(s[0], s[1]) for s in dm.split("id_val")])
    with torch.no_grad():
        acc = (model(torch.stack(x)).argmax(-1) == torch.tensor(y)).float().mean().item()
    assert r["last"]["last/id_val/acc"] == pytest.approx(acc, abs=1e-6)
    assert round(acc * 33) == pytest.approx(acc * 33, abs=1e-4)
