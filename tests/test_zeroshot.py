"""The zero-shot CLIP head: exact zero-shot logits on a random-weight tiny CLIP, and the prompts of every dataset."""
from __future__ import annotations

import open_clip
import pytest
import torch

from freeze_embed.backbones import create_backbone
from freeze_embed.data import CIFAR10, Camelyon17, DemoShift, DomainNet, FMoW, Living17, Waterbirds
from freeze_embed.zeroshot import NormalizedLinear, ZeroShotError, check_backbone, prompts, zeroshot_weights
from model_files import SPEC, TINY_CLIP, tiny_clip_file


def test_zeroshot_head_on_the_backbone_gives_clips_zero_shot_logits(tmp_path):
    model, path = tiny_clip_file(tmp_path)
    names = ["cat", "dog", "apple"]
    templates = [lambda c: f"a photo of a {c}.", lambda c: f"a sketch of the {c}."]
    weights = zeroshot_weights(SPEC, path, names, templates, TINY_CLIP)
    assert weights.shape == (3, 16) and weights.dtype == torch.float32
    head = NormalizedLinear(16, 3)
    with torch.no_grad():
        head.weight.copy_(weights)
        head.bias.zero_()
    backbone = create_backbone(SPEC, path, **TINY_CLIP).model.eval()  # the image tower only, as FineTuner holds it
    x = torch.randn(5, 3, 32, 32)

    # CLIP's zero-shot logits by hand (Radford et al., 2021): 100 * cos(image, mean normalised prompt embedding)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    with torch.no_grad():
        columns = []
        for c in names:
            text = model.encode_text(tokenizer([t(c) for t in templates]))
            mean = (text / text.norm(dim=-1, keepdim=True)).mean(0)
            columns.append(mean / mean.norm())
        image = model.encode_image(x)
        expected = 100.0 * (image / image.norm(dim=-1, keepdim=True)) @ torch.stack(columns).T
        got = head(backbone(x))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))
    torch.testing.assert_close(weights.norm(dim=-1), torch.full((3,), 100.0))  # rows: unit vectors x logit scale


def test_normalized_linear_ignores_the_feature_norm():
    head = NormalizedLinear(2, 1)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[3.0, 4.0]]))
        head.bias.fill_(0.5)
    assert head(torch.tensor([[6.0, 8.0], [0.3, 0.4]])).flatten().tolist() == [5.5, 5.5]


@pytest.mark.parametrize("spec", ["timm:vit_base_patch16_224", "torchvision:resnet50"])
def test_zeroshot_needs_a_clip_backbone(spec):
    with pytest.raises(ZeroShotError, match=rf"needs an open_clip CLIP backbone .* '{spec}' has none; use "
                                            r"head_init: random\.$"):
        check_backbone(spec)
    check_backbone("open_clip:ViT-B-16:openai")  # builds nothing, downloads nothing


@pytest.mark.parametrize("cls,n,templates,first", [
    (DemoShift, 4, 1, "a photo of a stripes at 0 degrees."),
    (CIFAR10, 10, 18, "a photo of a airplane."),
    (Living17, 17, 80, "a bad photo of a salamander."),
    (Waterbirds, 2, 1, "a photo of a landbird."),
    (DomainNet, 40, 80, "a bad photo of a airplane."),
    (FMoW, 62, 16, "satellite photo of a airport."),
    (Camelyon17, 2, 1, "this is a photo of lymph node"),
])
def test_every_dataset_has_prompts_in_label_order(cls, n, templates, first):
    names, temps = prompts(cls())
    assert len(names) == n and len(temps) == templates and temps[0](names[0]) == first


def test_fmow_prompts_are_wise_fts():
    names, temps = prompts(FMoW())
    assert names[1] == "airport_hangar"  # WILDS' label 1
    assert [t(names[1]) for t in temps[2:4] + temps[6:8]] == [
        "satellite photo of an airport hangar.", "aerial photo of an airport hangar.",
        "satellite photo of a airport_hangar in africa.", "aerial photo of a airport_hangar in africa."]


def test_a_datamodule_without_class_names_is_refused():
    dm = DemoShift()
    dm.num_classes = 3
    assert len(prompts(dm)[0]) == 3
    from freeze_embed.data import ShiftDataModule
    with pytest.raises(ZeroShotError, match="ShiftDataModule declares no class_names"):
        prompts(ShiftDataModule())
