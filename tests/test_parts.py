import json

import pytest
import torch

from freeze_embed.errors import FreezeEmbedError, run_command
from freeze_embed.tools.parts import main


def test_json_lists_parts_and_groups_per_epoch(capsys):
    assert main(["timm:vit_tiny_patch16_224", "--strategy", "GradualUnfreeze", "--epochs", "3", "--json",
                 "--backbone-kwargs", "{img_size: 32, patch_size: 8, depth: 2, embed_dim: 32, num_heads: 2}"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert list(info) == ["embed", "blocks", "head", "embed_fraction", "epochs"]
    assert info["embed"] == ["backbone.patch_embed.proj.weight", "backbone.patch_embed.proj.bias"]
    assert len(info["blocks"]) == 2 and info["head"] == ["head.weight", "head.bias"]
    # epoch t trains the top int(t/2*2) = t blocks + head at exp(3.73 * (1 - t/2)) x the base LR: 41.68, 6.456, 1
    scales = [[g["lr_scale"] for g in epoch] for epoch in info["epochs"]]
    assert scales == [[pytest.approx(41.6791, abs=1e-4)], [pytest.approx(6.4559, abs=1e-4)], [1.0]]
    assert info["epochs"][0][0]["names"] == ["head.weight", "head.bias"]
    assert sorted(info["epochs"][1][0]["names"]) == sorted(info["blocks"][1] + info["head"])
    from freeze_embed.backbones import create_backbone
    model = create_backbone("timm:vit_tiny_patch16_224", False, img_size=32, patch_size=8, depth=2, embed_dim=32,
                            num_heads=2).model
    total = sum(p.numel() for p in model.parameters()) + 32 * 2 + 2  # + the 2-class head
    assert info["embed_fraction"] == pytest.approx((3 * 8 * 8 * 32 + 32) / total, rel=1e-12)


def test_text_shows_embed_fraction_of_vit_b16(capsys, monkeypatch):
    import freeze_embed.module as module
    real = module.create_backbone

    def on_meta(*args, **kwargs):  # counts need shapes, not the 86M weights (the data and head stay on the CPU)
        with torch.device("meta"):
            return real(*args, **kwargs)

    monkeypatch.setattr(module, "create_backbone", on_meta)
    assert main(["timm:vit_base_patch16_224", "--strategy", "FreezeEmbed"]) == 0
    out = capsys.readouterr().out
    assert "embed fraction: 0.688% of 85,800,194 parameters" in out
    assert "epoch 0: 85,209,602 trainable, 590,592 frozen" in out


def test_user_strategy_by_dotted_path(capsys):
    assert main(["timm:vit_tiny_patch16_224", "--strategy", "my_strategies.FreezeEmbedAndFirstBlock", "--json",
                 "--backbone-kwargs", "{img_size: 32, patch_size: 8, depth: 2, embed_dim: 32, num_heads: 2}"]) == 0
    info = json.loads(capsys.readouterr().out)
    trained = info["epochs"][0][0]["names"]
    assert not set(trained) & set(info["embed"] + info["blocks"][0])
    assert set(info["blocks"][1]) <= set(trained)


def test_bad_input_is_one_line(capsys):
    assert run_command(main, ["timm:no_such_model"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "error: Unknown backbone 'timm:no_such_model': the library has no model named 'no_such_model'."
    with pytest.raises(FreezeEmbedError, match="is not a Strategy class"):
        main(["timm:vit_tiny_patch16_224", "--strategy", "NotAStrategy"])


def test_groups_are_the_optimizers_own(capsys):
    """inspect shows what training builds: the optimizer's groups, names and LR multipliers (one group builder)."""
    kw = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}
    assert main(["timm:vit_tiny_patch16_224", "--strategy", "EmbedLRScale", "--strategy-args", "{scale: 0.25}",
                 "--json", "--backbone-kwargs", json.dumps(kw)]) == 0
    shown = [(g["lr_scale"], g["names"]) for g in json.loads(capsys.readouterr().out)["epochs"][0]]
    from freeze_embed.module import FineTuner
    from freeze_embed.optim import SGD
    from freeze_embed.strategies import EmbedLRScale
    module = FineTuner("timm:vit_tiny_patch16_224", strategy=EmbedLRScale(0.25), optimizer=SGD, backbone_kwargs=kw)
    opt = module.make_optimizer()
    built = [(g["lr"] / opt.defaults["lr"], g["names"]) for g in opt.param_groups]
    assert shown == built and [s for s, _ in shown] == [1.0, 0.25]
    named = dict(module.named_parameters())
    assert all(named[n] is p for g in opt.param_groups for n, p in zip(g["names"], g["params"]))
