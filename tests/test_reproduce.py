"""Issue "Reproduce the paper's runs exactly": each bug it names, with a test that failed before the fix."""
import math
import os
import subprocess
import sys

import lightning as L
import pandas as pd
import pytest
import torch
from torch import nn

from freeze_embed.anatomy import resolve_anatomy
from freeze_embed.backbones import Backbone, BackboneError, create_backbone
from freeze_embed.strategies import GradualUnfreeze

from helpers import ROOT, run_cli, tiny_demo_args

def _lr_per_step(tmp_path, extra):
    run_cli(tiny_demo_args(tmp_path, epochs=3, extra=["--data.init_args.train_size", "48", *extra]))
    df = pd.read_csv(tmp_path / "logs" / "demo" / "version_0" / "metrics.csv")
    col = next(c for c in df.columns if c.startswith("lr-"))
    return df.dropna(subset=[col])[["step", col]].rename(columns={col: "lr"})


@pytest.mark.slow
def test_gradual_unfreezing_lr_follows_the_epoch_clock(tmp_path):
    """3 batches per epoch, 8 steps in all: the LR factor of every step is its epoch's, as the freezing is."""
    df = _lr_per_step(tmp_path, ["--model.strategy", "freeze_embed.strategies.GradualUnfreeze",
                                 "--trainer.max_steps", "8", "--trainer.log_every_n_steps", "1"])
    assert len(df) == 8
    for step, lr in zip(df.step, df.lr):
        epoch = step // 3
        assert lr == pytest.approx(0.01 * math.exp(3.73 * (1 - epoch / 2))), step


@pytest.mark.slow
def test_cosine_per_epoch_is_the_authors_schedule(tmp_path):
    """lr_schedule cosine_per_epoch = CosineAnnealingLR(T_max=epochs) stepped once per epoch."""
    df = _lr_per_step(tmp_path, ["--model.lr_schedule", "cosine_per_epoch", "--trainer.log_every_n_steps", "1"])
    assert list(df.lr) == pytest.approx([0.01 * 0.5 * (1 + math.cos(math.pi * (s // 3) / 3)) for s in df.step])
    assert len(set(df.lr.round(12))) == 3


def test_cuda_rng_states_travel_with_the_checkpoint(monkeypatch):
    from freeze_embed import module as mod
    saved = [torch.ByteTensor([1, 2, 3])]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: saved)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    model = mod.FineTuner("timm:vit_tiny_patch16_224", backbone_kwargs=dict(img_size=16, patch_size=8, depth=1,
                                                                             embed_dim=16, num_heads=2))
    ckpt = {}
    model.on_save_checkpoint(ckpt)
    assert ckpt["rng_states"]["torch.cuda"] is saved
    model.on_load_checkpoint(ckpt)
    assert restored == [saved]


def test_zero_ood_shows_as_zero_percent(tmp_path, capsys, monkeypatch):
    """train.py's closing summary: a collapsed model's OOD 0 is 0.00%; only a metric not computed is n/a."""
    tests = iter([[{"test/paper/id": 0.5, "test/paper/ood": 0.0}], [{"test/paper/id": 0.25}]])  # best, then last
    monkeypatch.setattr(L.Trainer, "test", lambda self, *args, **kwargs: next(tests))
    run_cli(tiny_demo_args(tmp_path, epochs=1, extra=["--data.init_args.train_size", "16"]))
    summary = [line.split() for line in capsys.readouterr().err.splitlines() if line.startswith(("  best", "  last"))]
    assert [(row[0], row[3], row[-1]) for row in summary] == [("best", "50.00%", "0.00%"), ("last", "25.00%", "n/a")]


def test_data_root_is_checked_before_the_model_is_built(tmp_path, capsys, monkeypatch):
    built = []
    monkeypatch.setattr("freeze_embed.module.create_backbone", lambda *a, **k: built.append(a))
    with pytest.raises(SystemExit) as exc:
        run_cli(["fit", "--config", str(ROOT / "configs/data/waterbirds.yaml"), "--config",
                 str(ROOT / "configs/backbone/clip_vit_b16.yaml"), "--data.init_args.root", str(tmp_path / "nope")])
    assert exc.value.code == 2 and built == []
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: Waterbirds data not found at") and "download: true" in last


@pytest.mark.slow
def test_offline_download_is_one_sentence(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(tmp_path / "torch"))
    args = tiny_demo_args(tmp_path, epochs=1, extra=["--model.backbone", "timm:vit_tiny_patch16_224.augreg_in21k",
                                                    "--model.pretrained", "true", "--model.backbone_kwargs", "{}"])
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: The pretrained weights of 'timm:vit_tiny_patch16_224.augreg_in21k' could not be "
                           "fetched") and "--model.pretrained /path/to/weights" in last and "HF_HUB_OFFLINE=1" in last


def test_other_backbone_errors_pass_through_the_download_wrapper():
    """The download wrapper only speaks for downloads: an unknown model keeps its own sentence."""
    with pytest.raises(BackboneError, match="no model named"):
        create_backbone("timm:not_a_model")


def _tiny_open_clip():
    from open_clip.transformer import VisionTransformer
    torch.manual_seed(0)
    vt = VisionTransformer(image_size=16, patch_size=8, width=16, layers=4, heads=2, mlp_ratio=2.0, output_dim=8)
    return resolve_anatomy(Backbone(vt, 8, (0.5,) * 3, (0.5,) * 3, "open_clip", "tiny"), nn.Linear(8, 3))


def test_clip_gradual_unfreezing_trains_proj_with_the_head_and_ln_post_with_the_first_block():
    """As the authors' freeze_bottom_trans: proj from epoch 0, ln_post once a block unfreezes, tokens at the end."""
    a = _tiny_open_clip()
    assert a.proj == ["backbone.proj"]
    s, T = GradualUnfreeze(), 5  # L = 4 blocks: 0, 1, 2, 3, 4 unfrozen
    trained = [set(s.trained_in(a, t, T)) for t in range(T)]
    assert trained[0] == {"backbone.proj", "head.weight", "head.bias"}
    assert {"backbone.ln_post.weight", "backbone.ln_post.bias"} <= trained[1]
    assert "backbone.transformer.resblocks.3.attn.in_proj_weight" in trained[1]
    assert "backbone.transformer.resblocks.2.attn.in_proj_weight" not in trained[1]
    assert "backbone.class_embedding" not in trained[3] and "backbone.class_embedding" in trained[4]
    assert not set(a.embed) & trained[4]  # conv1 and ln_pre stay frozen


def test_selection_metric_is_the_datasets(tmp_path, monkeypatch):
    """Checkpointing selects on the datamodule's metric: Waterbirds on id_val/weighted_acc, or test as the authors."""
    sys.path.insert(0, str(ROOT / "tests" / "data"))
    from formats import TINY_MODEL, write_waterbirds
    write_waterbirds(tmp_path / "wb", wilds=False)
    from freeze_embed.run import config
    base = [str(ROOT / "configs/data/waterbirds.yaml")]
    over = ["--data.init_args.root", str(tmp_path / "wb"), *TINY_MODEL, "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path)]
    for select_on, metric in (("id_val", "id_val/weighted_acc"), ("test", "test/weighted_acc")):
        built = config.build(base, [*over, "--data.init_args.select_on", select_on])
        monitors = [c.monitor for c in built.trainer.checkpoint_callbacks]
        assert built.datamodule.selection_metric == metric and metric in monitors
    demo = config.build([config.DEMO_CONFIG], ["--trainer.logger", "false",
                                                 "--trainer.default_root_dir", str(tmp_path)])
    assert "id_val/acc" in [c.monitor for c in demo.trainer.checkpoint_callbacks]
