import pytest
import torch

from freeze_embed.backbones import PAPER_BACKBONES, BackboneError, Spec, create_backbone, normalization, parse_spec

TINY_VIT = dict(img_size=32, patch_size=8, depth=1, embed_dim=32, num_heads=2)


def test_parse_spec_for_each_library():
    assert parse_spec("timm:vit_base_patch16_224.augreg_in21k") == Spec("timm", "vit_base_patch16_224", "augreg_in21k")
    assert parse_spec("open_clip:ViT-B-16:openai") == Spec("open_clip", "ViT-B-16", "openai")
    assert parse_spec("torchvision:resnet50") == Spec("torchvision", "resnet50")
    assert str(parse_spec("open_clip:ViT-L-14:openai")) == "open_clip:ViT-L-14:openai"


@pytest.mark.parametrize("spec", ["vit_base_patch16_224", "keras:resnet", "timm:"])
def test_malformed_spec_says_how_to_write_one(spec):
    with pytest.raises(BackboneError, match=r"timm:<model>.*open_clip:<arch>.*torchvision:<name>"):
        parse_spec(spec)


@pytest.mark.parametrize("spec,name", [("timm:vit_bse_patch16_224", "vit_bse_patch16_224"),
                                       ("open_clip:ViT-B-61", "ViT-B-61"), ("torchvision:resnet51", "resnet51")])
def test_unknown_model_names_the_model_and_suggests(spec, name):
    with pytest.raises(BackboneError, match=f"no model named '{name}'"):
        create_backbone(spec)


def test_paper_models_are_known_to_their_libraries():
    import open_clip
    import timm
    for key, spec in PAPER_BACKBONES.items():
        s = parse_spec(spec)
        if s.library == "timm":
            assert f"{s.name}.{s.tag}" in timm.list_pretrained(f"{s.name}.*"), key
        else:
            assert (s.name, s.tag) in open_clip.list_pretrained(), key


def test_fresh_feature_dim_and_forward():
    b = create_backbone("timm:vit_tiny_patch16_224", False, **TINY_VIT)
    assert b.num_features == 32
    assert b.model(torch.zeros(2, 3, 32, 32)).shape == (2, 32)
    r = create_backbone("torchvision:resnet18")
    assert r.num_features == 512 and r.model(torch.zeros(1, 3, 64, 64)).shape == (1, 512)


def test_clip_normalisation_differs_from_imagenet():
    clip_mean, _ = normalization("open_clip:ViT-B-16:openai")
    assert clip_mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert normalization("timm:vit_base_patch16_clip_224.openai")[0] == pytest.approx(clip_mean)
    assert normalization("torchvision:resnet50")[0] == (0.485, 0.456, 0.406)
    assert normalization("timm:vit_base_patch16_224.augreg_in21k")[0] == (0.5, 0.5, 0.5)


def test_local_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    src = create_backbone("timm:vit_tiny_patch16_224", False, **TINY_VIT)
    path = tmp_path / "vit.pth"
    torch.save(src.model.state_dict(), path)
    torch.manual_seed(1)
    loaded = create_backbone("timm:vit_tiny_patch16_224", str(path), **TINY_VIT)
    for (n, a), (_, b) in zip(src.model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), n


def test_checkpoint_that_does_not_fit_is_one_clear_error(tmp_path):
    other = create_backbone("timm:vit_tiny_patch16_224", False, **{**TINY_VIT, "embed_dim": 64})
    path = tmp_path / "wide.pth"
    torch.save(other.model.state_dict(), path)
    with pytest.raises(BackboneError, match="does not fit backbone 'timm:vit_tiny_patch16_224'"):
        create_backbone("timm:vit_tiny_patch16_224", str(path), **TINY_VIT)
    deeper = create_backbone("timm:vit_tiny_patch16_224", False, **{**TINY_VIT, "depth": 2})
    torch.save(deeper.model.state_dict(), path)
    with pytest.raises(BackboneError, match=r"Unexpected key\(s\) in state_dict: \"blocks\.1\."):
        create_backbone("timm:vit_tiny_patch16_224", str(path), **TINY_VIT)
    torch.save(create_backbone("torchvision:resnet18").model.state_dict(), path)
    with pytest.raises(BackboneError, match="does not fit backbone 'torchvision:resnet34'"):
        create_backbone("torchvision:resnet34", str(path))


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(BackboneError, match="does not exist"):
        create_backbone("timm:vit_tiny_patch16_224", str(tmp_path / "nope.pth"))
