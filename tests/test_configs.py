"""Composable configs: every method and backbone file parses with the demo through the real CLI parser, with the
paper's values (Appendix A-C); the W&B file logs offline."""
from __future__ import annotations

import pytest
import yaml

from freeze_embed.backbones import PAPER_BACKBONES
from freeze_embed.run.config import ConfigError, compose
from freeze_embed.tools.sweep import resolve_lrs

from helpers import ROOT, results, run_cli, tiny_demo_args

METHODS = sorted(p.stem for p in (ROOT / "configs/method").glob("*.yaml"))
# The authors' grids (scripts/run_adaptation_experiments.py in AnanyaKumar/transfer_learning): SGD and its variants,
# the AdamW family; after a linear probe every LR is divided by 10 (Appendix A).
GRIDS = {"sgd": [3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2], "adamw": [3e-7, 1e-6, 3e-6, 1e-5, 3e-5, 1e-4]}
OPTIMIZERS = ("sgd", "adamw", "lars", "lamb")  # a method file named after its optimizer uses that class


def method(stem: str) -> dict:
    return compose([ROOT / "configs/demo.yaml", ROOT / f"configs/method/{stem}.yaml"])


def strategies(node: dict) -> list[str]:
    """The class names of a strategy and every strategy nested in it (LPFT's, L2SP's)."""
    args = node.get("init_args") or {}
    return [node["class_path"].rpartition(".")[2],
            *[n for v in args.values() if isinstance(v, dict) and "class_path" in v for n in strategies(v)]]


@pytest.mark.slow
def test_every_method_file_is_named():
    names = [method(stem)["method"]["name"] for stem in METHODS]
    assert len(set(names)) == len(METHODS) and all(names)  # each has its own name for the tables


@pytest.mark.parametrize("stem", METHODS)
def test_method_file_replaces_the_demo_method_and_sweeps_its_own_lr(stem):
    """The demo sets FreezeEmbed + SGD(lr 0.01) itself: the method file must replace both cleanly (its optimizer as
    it states it, its strategy as its name says); its LR is the middle of its grid, the authors'."""
    cfg = method(stem)
    text = yaml.safe_load((ROOT / f"configs/method/{stem}.yaml").read_text())
    optimizer = cfg["model"]["optimizer"]
    stated = text["model"]["optimizer"]
    assert optimizer["class_path"] == stated["class_path"]
    assert {k: optimizer["init_args"][k] for k in stated["init_args"]} == stated["init_args"]  # none from the demo
    assert cfg["model"]["backbone"] == "timm:vit_tiny_patch16_224"  # the demo's, untouched
    token = next((t for t in stem.split("_") if t in OPTIMIZERS), None)
    if token:
        assert optimizer["class_path"].rpartition(".")[2].lower() == token
    names = strategies(cfg["model"]["strategy"])
    for word, strategy in (("freeze_", "FreezeEmbed"), ("lp_ft", "LPFT"), ("l2sp", "L2SP"),
                           ("layer_decay", "LayerDecay"), ("gradual", "GradualUnfreeze"), ("surgical", "TrainBlocks")):
        assert (word in stem) == (strategy in names), (word, names)  # what the name promises trains
    family, lrs = resolve_lrs(["paper"], cfg)
    assert lrs == cfg["method"]["lr_grid"]  # the sweep runs the grid the method file states
    lr = optimizer["init_args"]["lr"]
    if "LinearProbe" in names and "LPFT" not in names:  # the probe's head is fit by logistic regression: one LR
        assert lrs == [lr]
        return
    assert lrs[2] <= lr <= lrs[3]
    scale = 0.1 if "LPFT" in names else 1.0
    assert any(lrs == pytest.approx([g * scale for g in grid]) for grid in GRIDS.values()), lrs


@pytest.mark.parametrize("stem", [s for s in METHODS if s.startswith("lp_ft_")])
def test_lp_ft_grid_is_its_fine_tuning_grid_over_10(stem):
    """Appendix A: after a linear probe every LR is divided by 10."""
    assert method(stem)["method"]["lr_grid"] == pytest.approx(
        [lr / 10 for lr in method(stem[len("lp_ft_"):])["method"]["lr_grid"]])


def test_adamw_does_not_inherit_sgd_weight_decay():
    """jsonargparse keeps init_args shared by the old and new class: AdamW after SGD would get weight_decay 0."""
    cfg = compose([ROOT / "configs/demo.yaml", ROOT / "configs/method/adamw.yaml"])
    assert cfg["model"]["optimizer"]["init_args"]["weight_decay"] == 0.01
    cfg = compose([ROOT / "configs/demo.yaml", ROOT / "configs/method/adamw.yaml"],
                  ["--model.optimizer.init_args.lr", "3e-6"])
    assert cfg["model"]["optimizer"]["init_args"]["lr"] == 3e-6


@pytest.mark.parametrize("stem", sorted(PAPER_BACKBONES))
def test_backbone_file(stem):
    cfg = compose([ROOT / "configs/demo.yaml", ROOT / f"configs/backbone/{stem}.yaml",
                   ROOT / "configs/method/sgd_freeze_embed.yaml"])
    assert cfg["model"]["backbone"] == PAPER_BACKBONES[stem]
    assert cfg["model"]["pretrained"] is True
    assert cfg["model"]["backbone_kwargs"] is None  # the demo's tiny-ViT kwargs do not leak in


@pytest.mark.parametrize("data", sorted(p.name for p in (ROOT / "configs/data").glob("*.yaml")))
def test_data_backbone_method_compose(data):
    cfg = compose([ROOT / f"configs/data/{data}", ROOT / "configs/backbone/clip_vit_b16.yaml",
                   ROOT / "configs/method/lp_ft_sgd_freeze_embed.yaml"])
    assert cfg["model"]["backbone"] == "open_clip:ViT-B-16:openai"
    assert cfg["model"]["strategy"]["class_path"].endswith("LPFT")
    assert cfg["trainer"]["max_epochs"] in (3, 5, 20, 50)  # the paper's epochs (Appendix A)
    assert cfg["data"]["init_args"]["batch_size"] == 32  # the authors' batch (configs/adaptation/*.yaml)


def test_bad_override_is_a_clear_error():
    with pytest.raises(ConfigError, match="model.no_such_option"):
        compose([ROOT / "configs/demo.yaml"], ["--model.no_such_option", "1"])


@pytest.mark.slow
def test_wandb_file_logs_offline(tmp_path, monkeypatch):
    """configs/wandb.yaml on the demo for one tiny epoch (WANDB_MODE=offline from conftest): a local W&B run."""
    import wandb
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # wandb.yaml logs under ./runs
    args = tiny_demo_args(tmp_path, epochs=1, extra=[
        "--config", str(ROOT / "configs/wandb.yaml"),
        "--model.pretrained", str(ROOT / "freeze_embed/assets/demo_vit_tiny.pth")])
    i = args.index("--trainer.logger.init_args.save_dir")
    del args[i:i + 2]  # wandb.yaml replaces the demo's single logger with a list
    try:
        run_cli(args)
    finally:
        wandb.finish()
    assert "best/paper/ood" in results(tmp_path)["best"]
    assert list((tmp_path / "runs" / "wandb").glob("offline-run-*"))
    assert list((tmp_path / "runs" / "wandb_csv").glob("version_*/metrics.csv"))


def test_zeroshot_head_method_sets_head_init():
    cfg = compose([ROOT / "configs/demo.yaml", ROOT / "configs/method/sgd_freeze_embed_zeroshot_head.yaml"])
    assert cfg["model"]["head_init"] == "zeroshot"
    assert compose([ROOT / "configs/demo.yaml", ROOT / "configs/method/sgd_freeze_embed.yaml"])["model"]["head_init"] \
        == "random"
