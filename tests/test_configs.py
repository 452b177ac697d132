"""Composable configs: every method and backbone file parses with the demo through the real CLI parser, with the
paper's values (Appendix A-C); the W&B file logs offline."""
from __future__ import annotations

import pytest

from freeze_embed.backbones import PAPER_BACKBONES
from freeze_embed.run.config import ConfigError, compose
from freeze_embed.tools.sweep import resolve_lrs

from helpers import ROOT, results, run_cli, tiny_demo_args

S = "freeze_embed.strategies."
SGD = {"class_path": "freeze_embed.optim.SGD", "momentum": 0.9, "dampening": 0.0, "weight_decay": 0.0,
       "nesterov": False}
ADAMW = {"class_path": "freeze_embed.optim.AdamW", "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01}
NO_MOMENTUM = {**SGD, "momentum": 0.0}
FE = {"class_path": S + "FreezeEmbed", "freeze_norm": True, "parts": None}
PROBE = {"class_path": S + "LinearProbe", "logreg": True, "train_head": False, "Cs": None}
LP = 0.1  # grid factor after a linear probe
L2SP = S + "L2SP"

# stem -> (strategy, optimizer, LR grid) as the paper and, where it is silent, the authors' code has them
# (scripts/run_adaptation_experiments.py: SGD and variants, AdamW family, `--layer_wise_tune`, `--optimizer`).
EXPECTED = {
    "sgd": ({"class_path": S + "FullFineTune"}, SGD, "sgd"),
    "adamw": ({"class_path": S + "FullFineTune"}, ADAMW, "adamw"),
    "sgd_freeze_embed": (FE, SGD, "sgd"),
    "sgd_freeze_embed_no_momentum": (FE, NO_MOMENTUM, "sgd"),
    "adamw_freeze_embed": (FE, ADAMW, "adamw"),
    "sgd_freeze_embed_not_layer_norm": ({**FE, "freeze_norm": False}, SGD, "sgd"),
    "sgd_5x_lower_lr_embed": ({"class_path": S + "EmbedLRScale", "scale": 0.2}, SGD, "sgd"),
    "gradual_unfreezing": ({"class_path": S + "GradualUnfreeze", "decay_exp": 3.73, "freeze_embed": True}, SGD,
                           "adamw"),
    "linear_probing": (PROBE, SGD, "probe"),
    "lp_ft_sgd": ({"class_path": S + "LPFT", "finetune": {"class_path": S + "FullFineTune"}, "probe": PROBE},
                  SGD, "sgd/10"),
    "lp_ft_adamw": ({"class_path": S + "LPFT", "finetune": {"class_path": S + "FullFineTune"}, "probe": PROBE},
                    ADAMW, "adamw/10"),
    "lp_ft_sgd_freeze_embed": ({"class_path": S + "LPFT", "finetune": FE, "probe": PROBE}, SGD, "sgd/10"),
    "lars": ({"class_path": S + "FullFineTune"},
             {"class_path": "torch_optimizer.LARS", "momentum": 0.9, "weight_decay": 0.0}, "adamw"),
    "lamb": ({"class_path": S + "FullFineTune"},
             {"class_path": "torch_optimizer.Lamb", "weight_decay": 0.0, "debias": False}, "adamw"),
    "lars_timm": ({"class_path": S + "FullFineTune"},
                  {"class_path": "timm.optim.Lars", "momentum": 0.9, "dampening": 0.0, "weight_decay": 0.0,
                   "trust_coeff": 0.001, "always_adapt": True}, "sgd"),
    "lamb_timm": ({"class_path": S + "FullFineTune"},
                  {"class_path": "timm.optim.Lamb", "betas": [0.9, 0.999], "weight_decay": 0.01}, "sgd"),
    "sgd_no_momentum": ({"class_path": S + "FullFineTune"}, NO_MOMENTUM, "sgd"),
    "sgd_weight_decay": ({"class_path": S + "FullFineTune"}, {**SGD, "weight_decay": 0.01}, "sgd"),
    "sgd_freeze_stem": ({**FE, "parts": ["stem"]}, SGD, "sgd"),
    "l2sp": ({"class_path": L2SP, "alpha": 0.01, "beta": 0.01, "form": "paper",
              "strategy": {"class_path": S + "FullFineTune"}}, SGD, "sgd"),
    "l2sp_freeze_embed": ({"class_path": L2SP, "alpha": 0.01, "beta": 0.01, "form": "paper", "strategy": FE}, SGD,
                          "sgd"),
    "l2sp_authors": ({"class_path": L2SP, "alpha": 0.01, "beta": None, "form": "authors",  # l2sp_weight: 0.01
                      "strategy": {"class_path": S + "FullFineTune"}}, SGD, "sgd"),
    # which layers to tune: surgical fine-tuning, Auto-RGN (anniesch/surgical-finetuning), MAE's layer decay
    "sgd_surgical_last": ({"class_path": S + "TrainBlocks", "blocks": "last", "embed": False, "head": True}, SGD, "sgd"),
    "sgd_auto_rgn": ({"class_path": S + "AutoRGN", "num_batches": 5, "reset_state": True, "skip_norms": False}, SGD,
                     "sgd"),
    "sgd_layer_decay": ({"class_path": S + "LayerDecay", "decay": 0.65}, SGD, "sgd"),
    "adamw_layer_decay": ({"class_path": S + "LayerDecay", "decay": 0.65}, ADAMW, "adamw"),
    "sgd_freeze_embed_zeroshot_head": (FE, SGD, "sgd"),  # + model.head_init: zeroshot (checked below)
}
GRIDS = {"sgd": [3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2], "adamw": [3e-7, 1e-6, 3e-6, 1e-5, 3e-5, 1e-4]}


def flat(node: dict) -> dict:
    """``{class_path, init_args: {...}}`` -> ``{class_path, **init_args}``, nested ones too."""
    out = {"class_path": node["class_path"]}
    for k, v in (node.get("init_args") or {}).items():
        out[k] = flat(v) if isinstance(v, dict) and "class_path" in v else v
    return out


def subset(expected: dict, actual: dict) -> None:
    for key, value in expected.items():
        if isinstance(value, dict):
            subset(value, actual[key])
        else:
            assert actual[key] == value, f"{key}: {actual[key]!r} != {value!r}"


@pytest.mark.slow
def test_every_method_file_is_checked_and_named():
    files = {p.stem for p in (ROOT / "configs/method").glob("*.yaml")}
    assert files == set(EXPECTED)
    names = [compose([ROOT / "configs/demo.yaml", ROOT / f"configs/method/{f}.yaml"])["method"]["name"] for f in files]
    assert len(set(names)) == len(files) and all(names)  # each has its own name for the tables


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_method_composes_over_demo_with_paper_values(stem):
    """The demo sets FreezeEmbed + SGD(lr 0.01) itself: the method file must replace both cleanly."""
    cfg = compose([ROOT / "configs/demo.yaml", ROOT / f"configs/method/{stem}.yaml"])
    strategy, optimizer, grid = EXPECTED[stem]
    subset(strategy, flat(cfg["model"]["strategy"]))
    subset(optimizer, flat(cfg["model"]["optimizer"]))
    family, lrs = resolve_lrs(["paper"], cfg)
    assert lrs == cfg["method"]["lr_grid"]  # the sweep runs the grid the method file states
    if grid == "probe":
        assert lrs == [cfg["model"]["optimizer"]["init_args"]["lr"]]
        assert cfg["trainer"]["max_epochs"] == 1 and cfg["trainer"]["limit_train_batches"] == 1
    else:
        name, _, div = grid.partition("/")
        assert lrs == pytest.approx([lr / (10 if div else 1) for lr in GRIDS[name]])
        lr = cfg["model"]["optimizer"]["init_args"]["lr"]
        assert lrs[2] <= lr <= lrs[3]  # the file's own LR is the middle of its grid
    assert cfg["model"]["backbone"] == "timm:vit_tiny_patch16_224"  # the demo's, untouched


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
