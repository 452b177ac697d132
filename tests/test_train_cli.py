"""End-to-end ``train.py`` runs on the demo: every strategy, a user's strategy, resume, bf16, clear errors."""
import json
import subprocess
import sys

import lightning as L
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


# The parts of the backbone each run must leave at their pretrained values; every other part must move. The demo
# config's strategy is FreezeEmbed, which the optimizer runs keep; gradual unfreezing never unfreezes the embedding.
FROZEN = {"full": (), "embed_lr": (), "freeze_embed": ("embed",), "gradual": ("embed",), "lp_ft": ("embed",),
          "linear_probe": ("embed", "blocks"), "adamw": ("embed",), "lars": ("embed",), "lamb": ("embed",)}


def reevaluate(ckpt) -> dict[str, float]:
    """Every evaluation set's metrics for a checkpoint, computed here in one process from the demo's own data."""
    from freeze_embed.data import DemoShift
    from freeze_embed.metrics import metrics_for
    from freeze_embed.module import FineTuner
    model = FineTuner.load_from_checkpoint(ckpt, map_location="cpu").eval()
    dm = DemoShift(train_size=64, eval_size=32, batch_size=16, backbone=model.hparams.backbone)
    out = {}
    with torch.no_grad():
        for name in dm.eval_names:
            metric = metrics_for(dm, name)
            for x, y, g in dm.loader(dm.split(name), shuffle=False):  # the batches trainer.test saw
                metric.update(model(x), y, g)
            out.update({f"{name}/{k}": float(v) for k, v in metric.compute().items()})
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_fit_then_test_best_and_last(tmp_path, name):
    run_cli(tiny_demo_args(tmp_path, extra=STRATEGIES[name]))
    r = results(tmp_path)
    assert r["best_epoch"] in (0, 1) and r["selection_metric"] == "id_val/acc"
    assert r["best_checkpoint"].endswith(f"best-epoch{r['best_epoch']:02d}.ckpt")
    assert r["last_checkpoint"].endswith("last.ckpt")
    for tag in ("best", "last"):
        assert all(k.startswith(f"{tag}/") for k in r[tag])
        assert r[tag][f"{tag}/paper/id"] == r[tag][f"{tag}/id_test/acc"]  # the demo reports ID on id_test
        assert r[tag][f"{tag}/paper/ood"] == r[tag][f"{tag}/ood_test/acc"]
    # best/... is the best checkpoint's own numbers, exactly: metric by metric, recomputed outside Lightning
    scored = {k: v for k, v in r["best"].items() if not k.endswith("/loss") and not k.startswith("best/paper/")}
    assert scored == {f"best/{k}": v for k, v in reevaluate(r["best_checkpoint"]).items()}
    assert {"best/ood_test/worst_group_acc", "best/ood_test/acc_conflicting", "best/id_val/acc"} <= set(scored)
    # what the strategy froze stayed at its pretrained values; what it trains moved
    from freeze_embed.module import FineTuner
    model = FineTuner.load_from_checkpoint(r["last_checkpoint"], map_location="cpu")
    pretrained = torch.load(ROOT / "freeze_embed/assets/demo_vit_tiny.pth")
    parts = {"embed": model.anatomy.embed, "blocks": [n for b in model.anatomy.blocks for n in b]}
    for part, names in parts.items():
        same = [torch.equal(model.state_dict()[n], pretrained[n[len("backbone."):]]) for n in names]
        assert all(same) if part in FROZEN[name] else not all(same), part
    metrics = (tmp_path / "logs" / "demo" / "version_0" / "metrics.csv").read_text()
    assert "optimizer/state_bytes" in metrics and "params/trainable" in metrics


@pytest.mark.slow
def test_linear_probe_fits_the_head_by_logistic_regression(tmp_path):
    run_cli(tiny_demo_args(tmp_path, epochs=1, extra=STRATEGIES["linear_probe"]))
    ckpt = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=False)
    pretrained = torch.load(ROOT / "freeze_embed/assets/demo_vit_tiny.pth")
    for name, value in pretrained.items():  # the backbone is untouched
        assert torch.equal(ckpt["state_dict"][f"backbone.{name}"], value), name
    assert results(tmp_path)["best"]["best/id_val/acc"] > 0.5  # a probe on orientation features beats chance (0.25)


@pytest.mark.slow
def test_test_subcommand_on_a_checkpoint(tmp_path):
    """``train.py test`` logs test/... (no best/ or last/ left over) and exactly the numbers fit reported."""
    from freeze_embed.run.cli import FreezeEmbedCLI
    run_cli(tiny_demo_args(tmp_path, epochs=1))
    args = tiny_demo_args(tmp_path)[1:]
    cli = FreezeEmbedCLI(args=["test", *[a for a in args if a not in ("--run_dir", str(tmp_path / "run"))],
                               "--ckpt_path", str(tmp_path / "run/checkpoints/last.ckpt")])
    logged = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    assert logged and all(k.startswith("test/") for k in logged)
    assert {f"last/{k[len('test/'):]}": v for k, v in logged.items()} == results(tmp_path)["last"]


@pytest.mark.slow
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
    "train_blocks": ["--model.strategy", "freeze_embed.strategies.TrainBlocks",
                     "--model.strategy.init_args.blocks", "[0, -1]"],
    "layer_decay": ["--model.strategy", "freeze_embed.strategies.LayerDecay"],
    # per-tensor LRs from the first batches' gradients, optimizer state reset every epoch
    "auto_rgn": ["--model.strategy", "freeze_embed.strategies.AutoRGN"],
    # theta_0 travels in the checkpoint: the resumed run pulls towards the pretrained weights, not the epoch-1 ones
    "l2sp_freeze_embed": ["--config", str(ROOT / "configs/method/l2sp_freeze_embed.yaml"),
                          "--model.strategy.init_args.alpha", "1.0"],
}


@pytest.mark.slow
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


@pytest.mark.slow
def test_resume_restores_the_global_rng_where_the_uninterrupted_run_had_it(tmp_path):
    """The restore path creates the training iterator (drawing its seeds from the global RNG) before the first
    resumed epoch starts, the uninterrupted run after: the global RNG at each epoch start and first batch, the
    shuffle, and the weights must still be the uninterrupted run's, also when the epoch start draws."""
    base = ["--model.strategy", "my_strategies.DrawsAtEpochStart", "--data.init_args.train_size", "48"]
    whole, crashed = tmp_path / "whole", tmp_path / "crashed"

    def callbacks(run_dir, *more):
        path = run_dir / f"callbacks{len(more)}.yaml"
        path.write_text(yaml.safe_dump({"trainer": {"callbacks": [
            {"class_path": "my_strategies.RecordRNG", "init_args": {"out": str(run_dir / "rng.jsonl")}}, *more]}}))
        return ["--config", str(path)]
    whole.mkdir(), crashed.mkdir()
    run_cli(tiny_demo_args(whole, epochs=3, extra=[*base, *callbacks(whole)]))
    crash = {"class_path": "my_strategies.CrashAtEpoch", "init_args": {"epoch": 2}}
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_cli(tiny_demo_args(crashed, epochs=3, extra=[*base, *callbacks(crashed, crash)]))
    run_cli(tiny_demo_args(crashed, epochs=3, extra=[*base, *callbacks(crashed),
                                                      "--ckpt_path", str(crashed / "run/checkpoints/last.ckpt")]))
    expected = [json.loads(line) for line in (whole / "rng.jsonl").read_text().splitlines()]
    seen = [json.loads(line) for line in (crashed / "rng.jsonl").read_text().splitlines()]
    assert seen[4] == expected[4] == {**seen[4], "epoch": 2, "at": "epoch_start"}  # before the crash
    assert seen[:4] + seen[5:] == expected  # the resumed run's epoch 2: its start and its first batch
    sa = torch.load(whole / "run/checkpoints/last.ckpt", weights_only=False)["state_dict"]
    sb = torch.load(crashed / "run/checkpoints/last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


class RecordPrecision(L.Callback):
    """The head's output dtype and autocast's state in each training step, and the weights before and after."""

    def on_train_start(self, trainer, pl_module):
        self.before = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        self.steps = []

        def record(module, args, out):
            if trainer.training:  # not fit's validation batch
                self.steps.append((out.dtype, torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        pl_module.head.register_forward_hook(record)

    def on_train_end(self, trainer, pl_module):
        self.after = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


@pytest.mark.slow
def test_bf16_mixed_step_on_cpu(tmp_path):
    """bf16-mixed really runs the step in bfloat16 (CPU autocast), keeps float32 weights, and updates them."""
    from freeze_embed.run.cli import FreezeEmbedCLI
    callbacks = tmp_path / "callbacks.yaml"
    callbacks.write_text(yaml.safe_dump({"trainer": {"callbacks": [{"class_path": "test_train_cli.RecordPrecision"}]}}))
    extra = ["--trainer.precision", "bf16-mixed", "--trainer.fast_dev_run", "1", "--config", str(callbacks)]
    cli = FreezeEmbedCLI(args=tiny_demo_args(tmp_path, extra=extra))
    record = next(c for c in cli.trainer.callbacks if type(c).__name__ == "RecordPrecision")
    assert record.steps == [(torch.bfloat16, True, torch.bfloat16)]  # fast_dev_run: one training step
    assert all(v.dtype == torch.float32 for k, v in record.after.items() if v.is_floating_point())
    moved = [k for k in record.before if not torch.equal(record.before[k], record.after[k])]
    assert "head.weight" in moved and "backbone.blocks.3.attn.qkv.weight" in moved
    assert "backbone.patch_embed.proj.weight" not in moved  # the demo's FreezeEmbed


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


@pytest.mark.slow
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
