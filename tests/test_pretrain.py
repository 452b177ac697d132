"""Pretraining for Appendix E: the patchify stem, the recipes, the pretrain -> fine-tune hand-off, exact resume."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from freeze_embed.anatomy import resolve_anatomy
from freeze_embed.backbones import BackboneError, create_backbone
from freeze_embed.data.errors import DataRootError
from freeze_embed.pretraining import ImageFolderPretrain, Pretrainer, PretrainError, export_backbone
from freeze_embed.pretraining.cli import main as pretrain_main
from freeze_embed.pretraining.module import warmup_cosine
from helpers import ROOT

TINY = {"layers": [1, 1, 1, 1], "channels": [32, 64, 128, 256], "stem_chs": 32, "norm_layer": "groupnorm",
        "stem_type": "fixed"}
PRETRAIN = ROOT / "configs/pretrain"


def tiny_pretrain_args(tmp_path: Path, run: str, epochs: int, extra: list[str] = ()) -> list[str]:
    """The demo-scale AdamW + patchify config at test size: 48 training and 16 validation images."""
    return ["fit", "--config", str(PRETRAIN / "demo_resnet_patchify_adamw.yaml"),
            "--data.init_args.train_size", "48", "--data.init_args.val_size", "16",
            "--data.init_args.batch_size", "16", "--trainer.max_epochs", str(epochs),
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"), "--run_dir", str(tmp_path / run), *extra]


# --- the patchify stem ----------------------------------------------------------------------------------------
def test_patchify_stem_is_one_non_overlapping_4x4_stride_4_conv_named_stem():
    standard = create_backbone("timm:resnetv2_18", False, **TINY)
    patch = create_backbone("timm:resnetv2_18", False, stem="patchify", **TINY)
    conv = patch.model.stem.conv
    assert [n for n, _ in patch.model.stem.named_children()] == ["conv"]  # no pad, no max-pool
    assert (conv.kernel_size, conv.stride, conv.padding) == ((4, 4), (4, 4), (0, 0))
    assert conv.weight.shape == (32, 3, 4, 4) and conv.bias is None
    x = torch.randn(2, 3, 32, 32)
    # the same 4x downsampling as the 7x7/2 conv + 3x3/2 max-pool it replaces: every later layer is unchanged
    assert patch.model.stem(x).shape == standard.model.stem(x).shape == (2, 32, 8, 8)
    assert patch.num_features == standard.num_features == 256
    # a 4x4 patch of the input moves exactly one output position: non-overlapping
    bumped = x.clone()
    bumped[:, :, 4:8, 8:12] += 1.0
    changed = (patch.model.stem(bumped) != patch.model.stem(x)).any(dim=(0, 1)).nonzero().tolist()
    assert changed == [[1, 2]]


def test_patchify_stem_keeps_bits_weight_standardised_conv():
    from timm.layers import StdConv2d
    bit = create_backbone("timm:resnetv2_50x1_bit", False, stem="patchify")
    assert type(bit.model.stem.conv) is StdConv2d and bit.model.stem.conv.eps == 1e-8
    assert bit.model.stem.conv.weight.shape == (64, 3, 4, 4)


def test_patchify_anatomy_embed_is_stem_and_first_stage():
    b = create_backbone("timm:resnetv2_18", False, stem="patchify", **TINY)
    a = resolve_anatomy(b, nn.Linear(b.num_features, 3))
    assert a.embed_modules == ["stem", "stages.0"]
    assert a.embed == ["backbone.stem.conv.weight",
                       "backbone.stages.0.blocks.0.norm1.weight", "backbone.stages.0.blocks.0.norm1.bias",
                       "backbone.stages.0.blocks.0.conv1.weight",
                       "backbone.stages.0.blocks.0.norm2.weight", "backbone.stages.0.blocks.0.norm2.bias",
                       "backbone.stages.0.blocks.0.conv2.weight"]
    assert [sorted({".".join(n.split(".")[1:3]) for n in blk}) for blk in a.blocks] == [
        ["stages.1"], ["stages.2"], ["norm.bias", "norm.weight", "stages.3"]]  # the final norm trains with the top


@pytest.mark.parametrize("spec, kwargs, words", [
    ("timm:resnetv2_18", {"stem": "patch4"}, "the only choice is 'patchify'"),
    ("timm:vit_tiny_patch16_224", {"stem": "patchify", "depth": 1}, "needs a timm ResNetV2"),
])
def test_bad_stem_is_one_sentence(spec, kwargs, words):
    with pytest.raises(BackboneError, match=words):
        create_backbone(spec, False, **kwargs)


# --- recipes and configs --------------------------------------------------------------------------------------
def test_warmup_then_cosine_to_zero():
    assert [warmup_cosine(s, 4, 12) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert warmup_cosine(8, 4, 12) == pytest.approx(0.5)  # half-way through the cosine
    assert warmup_cosine(12, 4, 12) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(3, 0, 12) == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 12)))


def test_warmup_cosine_built_on_optims_cosine_is_the_old_formula_exactly():
    def old(step, warmup, total):  # pretraining's own cosine before it used optim.cosine_factor
        if step < warmup:
            return (step + 1) / warmup
        if total <= warmup:
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, total - warmup) / (total - warmup)))
    cases = [(s, w, t) for t in (0, 1, 5, 12, 97) for w in (0, 1, 4, 12, 20) for s in range(t + 25)]
    assert [warmup_cosine(*c) for c in cases] == [old(*c) for c in cases]


def _config(name: str) -> dict:
    return yaml.safe_load((PRETRAIN / name).read_text())


@pytest.mark.parametrize("scale", ["demo_resnet", "bit50"])
@pytest.mark.parametrize("opt", ["sgd", "adamw"])
def test_patchify_config_differs_from_standard_only_by_the_stem(scale, opt):
    standard, patch = _config(f"{scale}_{opt}.yaml"), _config(f"{scale}_patchify_{opt}.yaml")
    assert patch["model"]["backbone_kwargs"].pop("stem") == "patchify"
    assert "stem" not in (standard["model"].get("backbone_kwargs") or {})
    standard["trainer"]["logger"]["init_args"]["name"] = patch["trainer"]["logger"]["init_args"]["name"]
    patch["model"]["backbone_kwargs"] = patch["model"]["backbone_kwargs"] or None
    standard["model"]["backbone_kwargs"] = standard["model"].get("backbone_kwargs") or None
    assert patch == standard


@pytest.mark.parametrize("scale", ["demo_resnet", "bit50"])
def test_recipes_scale_lr_with_the_global_batch_and_differ_only_in_the_optimizer(scale):
    """SGD: torchvision's lr 0.1 per 256 images; AdamW: DeiT's 5e-4 per 512 (Goyal et al.'s linear scaling); at demo
    scale AdamW takes the demo ViT's pretraining LR instead (DeiT's scaled LR does not converge in 4 epochs)."""
    import inspect
    from freeze_embed.tools.demo_pretrain import pretrain
    sgd, adamw = _config(f"{scale}_sgd.yaml"), _config(f"{scale}_adamw.yaml")
    batch = sgd["data"]["init_args"]["batch_size"] * sgd["trainer"]["devices"] * sgd["trainer"].get("num_nodes", 1)
    assert sgd["model"]["optimizer"]["init_args"]["lr"] == pytest.approx(0.1 * batch / 256)
    demo_vit_lr = inspect.signature(pretrain).parameters["lr"].default
    assert adamw["model"]["optimizer"]["init_args"]["lr"] == pytest.approx(
        demo_vit_lr if scale == "demo_resnet" else 5e-4 * batch / 512)
    assert (sgd["model"]["optimizer"]["init_args"]["weight_decay"],
            adamw["model"]["optimizer"]["init_args"]["weight_decay"]) == (1e-4, 0.05)
    assert (sgd["model"].pop("decay_1d"), adamw["model"].pop("decay_1d")) == (True, False)  # as each recipe
    for cfg in (sgd, adamw):
        cfg["model"].pop("optimizer")
        cfg["trainer"]["logger"]["init_args"].pop("name")
    assert sgd == adamw


@pytest.mark.parametrize("name", sorted(p.name for p in PRETRAIN.glob("*.yaml")))
def test_weight_decay_follows_the_cited_recipe(name):
    """torchvision's reference (the SGD recipes) decays every parameter unless --norm-weight-decay or
    --bias-weight-decay is given; timm's train.py (DeiT's AdamW recipe) exempts 1-d tensors."""
    from freeze_embed.pretraining.module import decay_groups
    text = (PRETRAIN / name).read_text()
    cited = "torchvision" if "torchvision's ResNet reference" in text else "deit"
    assert cited == ("torchvision" if name.endswith("_sgd.yaml") else "deit")
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    decayed, exempt = decay_groups(model, _config(name)["model"]["decay_1d"])
    assert (len(decayed["params"]), len(exempt["params"])) == ((4, 0) if cited == "torchvision" else (1, 3))
    assert exempt["weight_decay"] == 0.0 and "weight_decay" not in decayed


@pytest.mark.parametrize("name", sorted(p.name for p in PRETRAIN.glob("*.yaml")))
def test_every_pretrain_config_parses(name, capsys):
    with pytest.raises(SystemExit) as done:
        pretrain_main(["fit", "--config", str(PRETRAIN / name), "--print_config"])
    assert done.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["optimizer"]["class_path"] in ("freeze_embed.optim.SGD", "torch.optim.AdamW")


# --- bad inputs -----------------------------------------------------------------------------------------------
def test_missing_imagenet_folders_is_one_sentence(tmp_path):
    with pytest.raises(DataRootError, match=r"No class folders in .*train/<class>/<image>"):
        ImageFolderPretrain(root=str(tmp_path)).check_root()


def test_wrong_class_count_is_one_sentence(tmp_path):
    from PIL import Image
    for c in ("a", "b"):
        (tmp_path / "train" / c).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "train" / c / "0.png")
    with pytest.raises(DataRootError, match="has 2 class folders, but data.num_classes is 1000"):
        ImageFolderPretrain(root=str(tmp_path)).check_root()


def test_open_clip_cannot_be_pretrained_here():
    with pytest.raises(PretrainError, match="timm or torchvision"):
        Pretrainer("open_clip:ViT-B-32")


# --- hand-off and resume --------------------------------------------------------------------------------------
def test_torchvision_export_loads_through_model_pretrained(tmp_path):
    """torchvision's loader is strict about the classifier: the export puts the head at ``fc`` and names its size."""
    module = Pretrainer("torchvision:resnet18", num_classes=5)
    pth, cfg = export_backbone(module, str(tmp_path))
    model = yaml.safe_load(Path(cfg).read_text())["model"]
    assert model["backbone_kwargs"] == {"num_classes": 5}
    loaded = create_backbone(model["backbone"], model["pretrained"], **model["backbone_kwargs"])
    for k, v in module.backbone.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k


@pytest.mark.slow
def test_pretrain_hands_its_backbone_to_train_py_exactly(tmp_path):
    from freeze_embed.run.config import DEMO_CONFIG, build
    pretrain_main(tiny_pretrain_args(tmp_path, "pt", epochs=1))
    run = tmp_path / "pt"
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "pretrain.json").is_file()
    state = torch.load(run / "backbone.pth", weights_only=True)
    assert state["head.fc.weight"].shape == (8, 256)  # the pretraining head, under timm's classifier name
    model = yaml.safe_load((run / "backbone.yaml").read_text())["model"]
    assert model == {"backbone": "timm:resnetv2_18", "pretrained": str(run / "backbone.pth"),
                     "backbone_kwargs": {**TINY, "stem": "patchify"}}
    cli = build([DEMO_CONFIG, ROOT / "configs/method/sgd_freeze_embed.yaml", run / "backbone.yaml"],
                ["--trainer.logger", "false"])
    tuned = cli.model
    for k, v in tuned.backbone.state_dict().items():
        assert torch.equal(v, state[k]), k  # every backbone tensor is the pretrained one
    assert tuned.backbone.stem.conv.weight.shape == (32, 3, 4, 4)
    assert tuned.anatomy.embed[0] == "backbone.stem.conv.weight"
    assert tuned.head.out_features == 4  # a fresh head for the demo's 4 orientations


@pytest.mark.slow
def test_pretraining_resumes_exactly(tmp_path):
    """2 epochs straight == a run that crashes at the start of epoch 2 and resumes from last.ckpt (shuffling, AdamW's
    moments, warmup and cosine all carried over)."""
    pretrain_main(tiny_pretrain_args(tmp_path, "straight", epochs=2))
    crash = tmp_path / "crash.yaml"
    crash.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "my_strategies.CrashAtEpoch", "init_args": {"epoch": 1}}]}}))
    with pytest.raises(RuntimeError, match="simulated crash"):
        pretrain_main(tiny_pretrain_args(tmp_path, "cut", 2, ["--config", str(crash)]))
    saved = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (0, 3)  # 48 images / 16 per batch: one epoch done
    assert not (tmp_path / "cut" / "backbone.pth").exists()  # a crashed run exports nothing
    pretrain_main(tiny_pretrain_args(tmp_path, "cut", 2, ["--ckpt_path", str(tmp_path / "cut/checkpoints/last.ckpt")]))
    one = torch.load(tmp_path / "straight" / "backbone.pth", weights_only=True)
    two = torch.load(tmp_path / "cut" / "backbone.pth", weights_only=True)
    assert one.keys() == two.keys()
    moved = [k for k in one if not torch.equal(one[k], saved["state_dict"]["backbone." + k]
                                               if "backbone." + k in saved["state_dict"] else one[k])]
    assert moved  # the second epoch changed the weights, so equality below is not vacuous
    for k in one:
        assert torch.equal(one[k], two[k]), k


# --- the small-scale study's bookkeeping ----------------------------------------------------------------------
def test_study_picks_the_lr_on_id_validation_and_reports_the_90_percent_ci(tmp_path):
    import json
    from freeze_embed.tools.analysis.pretrain_study import _pm, selected
    # lr 1e-4: better ID validation, worse OOD; it must be chosen (Section 4: selection never looks at OOD)
    for lr, val, ood in ((1e-4, [0.9, 0.8], [0.5, 0.6]), (3e-4, [0.7, 0.8], [0.9, 0.9])):
        for seed, (v, o) in enumerate(zip(val, ood)):
            run = tmp_path / "finetune" / "adamw" / "adamw" / f"lr{lr:g}_seed{seed}"
            run.mkdir(parents=True)
            (run / "results.json").write_text(json.dumps({"selection_metric": "id_val/acc", "best": {
                "best/id_val/acc": v, "best/paper/ood": o}}))
    lr, best = selected(tmp_path, "adamw", "adamw", [0, 1])
    assert lr == 1e-4 and [b.value("paper/ood") for b in best] == [0.5, 0.6]
    # mean 55.0, std 0.0707, 1.645 * 0.0707 / sqrt(2) = 0.0822 -> 8.2 points
    assert _pm([0.5, 0.6]) == "55.0 ± 8.2"
