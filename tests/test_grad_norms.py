"""Layer-wise gradient norms (eq. 3.1): exact values against a hand loop, layer assignment, CSV and PNG output."""
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from freeze_embed.tools.analysis import grad_norms as gn
from freeze_embed.tools.analysis.plots import plot_grad_norms
from freeze_embed.module import FineTuner
from freeze_embed.strategies import FreezeEmbed

TINY = dict(img_size=16, patch_size=8, depth=2, embed_dim=16, num_heads=2)


def tiny_vit(**kw):
    torch.manual_seed(0)
    return FineTuner(backbone="timm:vit_base_patch16_clip_224", num_classes=3, backbone_kwargs=TINY, **kw)


def batches(n=3, size=16, b=4, classes=3):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(b, 3, size, size, generator=g), torch.randint(classes, (b,), generator=g),
             torch.zeros(b, dtype=torch.long)) for _ in range(n)]


def by_name(df):
    return df.set_index("layer")


def test_values_equal_a_hand_computed_loop():
    module = tiny_vit()
    data = batches()
    df = gn.grad_norms(module, data, device="cpu", progress=False)
    # By hand: the paper's layers named explicitly, gradients by autograd.grad, norms averaged over the m batches.
    names = dict(module.named_parameters())

    def block(i, parts):
        return [n for n in names if any(n.startswith(f"backbone.blocks.{i}.{p}.") for p in parts)]

    layers = {"embed": [n for n in names if n.startswith(("backbone.patch_embed.proj.", "backbone.norm_pre."))],
              "blocks.0.attn": block(0, ["norm1", "attn"]), "blocks.0.mlp": block(0, ["norm2", "mlp"]),
              "blocks.1.attn": block(1, ["norm1", "attn"]), "blocks.1.mlp": block(1, ["norm2", "mlp"]),
              "head": ["head.weight", "head.bias"]}
    params = list(names.values())
    sums = dict.fromkeys(layers, 0.0)
    for x, y, _ in data:
        grads = dict(zip(names, torch.autograd.grad(F.cross_entropy(module(x), y), params)))
        for layer, ns in layers.items():
            sums[layer] += math.sqrt(sum(grads[n].double().pow(2).sum().item() for n in ns))
    got = by_name(df)
    assert list(got.index) == list(layers)
    for layer, ns in layers.items():
        G = sums[layer] / len(data)
        theta = math.sqrt(sum(names[n].double().pow(2).sum().item() for n in ns))
        numel = sum(names[n].numel() for n in ns)
        assert got.loc[layer, "G"] == pytest.approx(G, rel=1e-5)
        assert got.loc[layer, "G_over_param_norm"] == pytest.approx(G / theta, rel=1e-5)
        assert got.loc[layer, "G_over_sqrt_numel"] == pytest.approx(G / math.sqrt(numel), rel=1e-5)
        assert got.loc[layer, "numel"] == numel


def test_no_update_and_flags_restored():
    module = tiny_vit(strategy=FreezeEmbed())
    module.freeze_for(0)  # embed frozen, as training sets it
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    flags = {n: p.requires_grad for n, p in module.named_parameters()}
    df = gn.grad_norms(module, batches(1), device="cpu", progress=False)
    assert by_name(df).loc["embed", "G"] > 0  # measured although the strategy freezes it
    for n, p in module.named_parameters():
        assert torch.equal(p, before[n]) and p.grad is None and p.requires_grad == flags[n]


def test_transformer_layers_attn_mlp_and_omissions():
    module = tiny_vit()
    layers = gn.layers(module)
    assert [(layer.name, layer.kind, layer.index) for layer in layers] == [
        ("embed", "embed", 0), ("blocks.0.attn", "attn", 1), ("blocks.0.mlp", "mlp", 1),
        ("blocks.1.attn", "attn", 2), ("blocks.1.mlp", "mlp", 2), ("head", "head", 3)]
    # CLIP: the embed point is the patch projection and the norm after it together (conv1 + ln_pre = timm's
    # patch_embed.proj + norm_pre), as the authors measured it.
    assert layers[0].params == ("backbone.patch_embed.proj.weight", "backbone.norm_pre.weight",
                                "backbone.norm_pre.bias")  # CLIP-style: no bias on the projection
    assert {p.split(".")[3] for p in layers[1].params} == {"norm1", "attn"}
    assert {p.split(".")[3] for p in layers[2].params} == {"norm2", "mlp"}
    assert gn.omitted(module, layers) == ["backbone.cls_token", "backbone.pos_embed", "backbone.norm.weight",
                                          "backbone.norm.bias"]


@pytest.mark.parametrize("name,half", [
    ("backbone.transformer.resblocks.0.ln_1.weight", "attn"), ("backbone.transformer.resblocks.0.ls_2.gamma", "mlp"),
    ("backbone.transformer.resblocks.3.attn.in_proj_weight", "attn"),
    ("backbone.transformer.resblocks.3.mlp.c_fc.weight", "mlp"),
    ("backbone.encoder.layers.encoder_layer_0.self_attention.in_proj_weight", "attn"),
    ("backbone.encoder.layers.encoder_layer_0.mlp.0.weight", "mlp"), ("backbone.blocks.1.gamma_1", "attn"),
    ("backbone.class_embedding", None), ("backbone.ln_post.weight", None), ("backbone.proj", None)])
def test_open_clip_and_torchvision_names(name, half):
    assert gn._half(name) == half


def test_convnet_layers_are_blocks_and_bn_mode_matters():
    torch.manual_seed(0)
    module = FineTuner(backbone="torchvision:resnet18", num_classes=3)
    layers = gn.layers(module)
    assert [(layer.name, layer.kind, layer.index) for layer in layers] == (
        [("embed", "embed", 0)] + [(f"blocks.{i}", "block", i + 1) for i in range(6)] + [("head", "head", 7)])
    assert layers[0].params[:3] == ("backbone.conv1.weight", "backbone.bn1.weight", "backbone.bn1.bias")
    assert all(p.startswith("backbone.layer2.0.") for p in layers[1].params)
    assert gn.omitted(module, layers) == []
    data = batches(1, size=32)
    train = gn.grad_norms(module, data, device="cpu", progress=False)
    evald = gn.grad_norms(module, data, device="cpu", train_mode=False, progress=False)
    assert not train.G.equals(evald.G)  # batch statistics vs running statistics


def test_cli_batch_is_32_unless_given(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(gn, "grad_norms", lambda module, loader, *a, **k: seen.append(loader.batch_size) or
                        pd.DataFrame({c: [1.0] for c in gn.COLUMNS}).assign(kind="embed"))
    monkeypatch.setattr("freeze_embed.tools.analysis.plots.plot_grad_norms", lambda *a, **k: None)
    base = ["--config", "configs/demo.yaml", "--model.pretrained", "false", "--out", str(tmp_path)]
    gn.main(base)
    gn.main(base + ["--data.init_args.batch_size", "8"])
    assert seen == [32, 8]  # the demo config says 64: the analysis default (the authors' 32) wins, a given one more


def test_cli_writes_csv_and_png(tmp_path):
    assert gn.main(["--config", "configs/demo.yaml", "--model.pretrained", "false", "--data.init_args.train_size", "32",
                  "--data.init_args.batch_size", "16", "--batches", "2", "--out", str(tmp_path)]) == 0
    csv = pd.read_csv(tmp_path / "grad_norms.csv")
    assert list(csv.columns) == gn.COLUMNS
    assert list(csv.kind) == ["embed"] + ["attn", "mlp"] * 4 + ["head"]
    assert list(csv.index) == list(range(10)) and list(csv["index"]) == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5]
    assert (csv.G > 0).all()
    assert (tmp_path / "grad_norms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_several_backbones(tmp_path):
    a = gn.grad_norms(tiny_vit(), batches(1), device="cpu", progress=False)
    a.to_csv(tmp_path / "a.csv", index=False)
    fig = plot_grad_norms({"a": str(tmp_path / "a.csv"), "b": a}, out=str(tmp_path / "both.png"))
    assert len(fig.axes) == 6 and all(ax.get_yscale() == "log" for ax in fig.axes)
    # The normalised panels omit the head (Appendix F): red embed, black middle layers only.
    assert len(fig.axes[0].collections) == 3 and len(fig.axes[1].collections) == 2
    assert (tmp_path / "both.png").stat().st_size > 0
