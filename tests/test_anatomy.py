"""Exact embed / blocks / head for each of the paper's families (Appendix A), on small random models."""
import pytest
from torch import nn

from freeze_embed.anatomy import EmbedNotFound, resolve_anatomy
from freeze_embed.backbones import create_backbone

SMALL_VIT = dict(depth=2, embed_dim=64, num_heads=2)


def anatomy_of(spec, **kwargs):
    b = create_backbone(spec, False, **kwargs)
    return resolve_anatomy(b, nn.Linear(b.num_features, 3)), b


@pytest.mark.slow
def test_clip_vit_open_clip_embed_is_conv1_and_ln_pre():
    a, b = anatomy_of("open_clip:ViT-B-16")
    assert a.embed == ["backbone.conv1.weight", "backbone.ln_pre.weight", "backbone.ln_pre.bias"]
    assert len(a.blocks) == 12
    assert a.blocks[0][:2] == ["backbone.class_embedding", "backbone.positional_embedding"]
    # CLIP's final norm and projection train with the top block.
    assert {"backbone.proj", "backbone.ln_post.weight", "backbone.ln_post.bias"} <= set(a.blocks[-1])
    assert a.head == ["head.weight", "head.bias"]
    assert set(a.embed) & a.norms == {"backbone.ln_pre.weight", "backbone.ln_pre.bias"}
    # The paper: the embedding is 0.7% of a base ViT.
    embed = sum(dict(b.model.named_parameters())[n[9:]].numel() for n in a.embed)
    assert embed / sum(p.numel() for p in b.model.parameters()) == pytest.approx(0.00686, abs=5e-5)


def test_clip_vit_timm_embed_is_patch_embed_proj_and_norm_pre():
    a, _ = anatomy_of("timm:vit_base_patch16_clip_224", **SMALL_VIT)
    assert a.embed == ["backbone.patch_embed.proj.weight", "backbone.norm_pre.weight", "backbone.norm_pre.bias"]
    assert a.embed_modules == ["patch_embed.proj", "norm_pre"]


@pytest.mark.parametrize("spec", ["timm:vit_base_patch16_224.augreg_in21k", "timm:vit_base_patch16_224.dino"])
def test_supervised_and_dino_vit_embed_is_patch_embed_proj_only(spec):
    a, _ = anatomy_of(spec, **SMALL_VIT)
    assert a.embed == ["backbone.patch_embed.proj.weight", "backbone.patch_embed.proj.bias"]
    assert len(a.blocks) == 2
    assert a.blocks[0][:3] == ["backbone.cls_token", "backbone.pos_embed", "backbone.blocks.0.norm1.weight"]
    assert a.blocks[1][-2:] == ["backbone.norm.weight", "backbone.norm.bias"]


def test_tokens_are_embed_only_when_asked():
    b = create_backbone("timm:vit_base_patch16_224", False, **SMALL_VIT)
    a = resolve_anatomy(b, nn.Linear(64, 2), embed_tokens=True)
    assert a.embed == ["backbone.cls_token", "backbone.pos_embed",
                       "backbone.patch_embed.proj.weight", "backbone.patch_embed.proj.bias"]


def test_convnext_embed_is_stem_and_first_stage():
    a, b = anatomy_of("timm:convnext_atto")
    names = [n for n, _ in b.model.named_parameters()]
    assert a.embed == ["backbone." + n for n in names if n.startswith(("stem.", "stages.0."))]
    assert a.embed_modules == ["stem", "stages.0"]
    assert len(a.blocks) == 2 + 6 + 2  # stages 1-3 of convnext_atto, one block each
    assert a.blocks[0][0] == "backbone.stages.1.downsample.0.weight"  # downsampling trains with its stage
    assert a.blocks[-1][-2:] == ["backbone.head.norm.weight", "backbone.head.norm.bias"]


def test_bit_resnetv2_embed_is_stem_and_first_stage():
    a, b = anatomy_of("timm:resnetv2_50x1_bit")
    names = [n for n, _ in b.model.named_parameters()]
    assert a.embed == ["backbone." + n for n in names if n.startswith(("stem.", "stages.0."))]
    assert a.embed[0] == "backbone.stem.conv.weight"
    assert len(a.blocks) == 4 + 6 + 3
    assert a.blocks[-1][-2:] == ["backbone.norm.weight", "backbone.norm.bias"]
    assert [sorted({".".join(n.split(".")[1:5]) for n in blk}) for blk in a.embed_blocks] == [
        [f"stages.0.blocks.{i}"] for i in range(3)]


def test_torchvision_resnet_embed_is_conv1_bn1_layer1():
    a, b = anatomy_of("torchvision:resnet18")
    names = [n for n, _ in b.model.named_parameters()]
    assert a.embed == ["backbone." + n for n in names if n.startswith(("conv1.", "bn1.", "layer1."))]
    assert [blk[0] for blk in a.blocks] == [f"backbone.layer{s}.{i}.conv1.weight" for s in (2, 3, 4) for i in (0, 1)]
    # SubTuning's candidates include layer1's blocks: each of them, inside the embedding
    assert a.embed_blocks == [[n for n in a.embed if n.startswith(f"backbone.layer1.{i}.")] for i in (0, 1)]
    assert anatomy_of("timm:vit_tiny_patch16_224", **SMALL_VIT)[0].embed_blocks == []


def test_other_timm_model_uses_timm_metadata():
    a, _ = anatomy_of("timm:efficientnet_b0")
    assert a.embed == ["backbone.conv_stem.weight", "backbone.bn1.weight", "backbone.bn1.bias"]
    assert a.blocks[0][0].startswith("backbone.blocks.0.0.")


def test_every_parameter_is_in_exactly_one_part():
    for spec, kw in [("open_clip:ViT-B-16", {}), ("timm:convnext_atto", {}), ("timm:vit_base_patch16_224", SMALL_VIT)]:
        a, b = anatomy_of(spec, **kw)
        expected = ["backbone." + n for n, _ in b.model.named_parameters()] + ["head.weight", "head.bias"]
        assert sorted(a.names) == sorted(expected) and len(a.names) == len(set(a.names))


def test_unknown_family_asks_for_embed_prefixes_and_they_work():
    b = create_backbone("torchvision:mobilenet_v2")
    with pytest.raises(EmbedNotFound, match=r"list its parameter prefixes in the config.*model\.embed"):
        resolve_anatomy(b, nn.Linear(b.num_features, 2))
    a = resolve_anatomy(b, nn.Linear(b.num_features, 2), embed=["features.0"])
    assert a.embed == ["backbone.features.0.0.weight", "backbone.features.0.1.weight", "backbone.features.0.1.bias"]
    with pytest.raises(EmbedNotFound, match=r"match no parameter"):
        resolve_anatomy(b, nn.Linear(b.num_features, 2), embed=["stem"])
