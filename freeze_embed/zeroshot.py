"""CLIP's zero-shot classifier as the initial head (``model.head_init: zeroshot``), as WiSE-FT builds it.

The head is ``ClassificationHead(normalize=True)`` of mlfoundations/wise-ft (``src/models/modeling.py``): L2-normalise
the image features, then a linear map whose rows are the classes' text embeddings times CLIP's logit scale
(``get_zeroshot_classifier`` in wise-ft ``src/models/zeroshot.py``; here ``open_clip.build_zero_shot_classifier``).
With bias 0 it gives CLIP's zero-shot logits ``exp(logit_scale) * <image, text>`` exactly; fine-tuning then starts
from zero-shot CLIP, which WiSE-FT's weight interpolation (``freeze_embed.tools.wise_ft``) needs.

The contract with the FineTuner: ``check_backbone(spec)`` when the model is built (before any download);
``head = NormalizedLinear(num_features, num_classes)``; in ``setup('fit')``
``head.weight.copy_(zeroshot_weights(spec, pretrained, *prompts(datamodule), backbone_kwargs))``, bias zero. A linear
probe (LP, LP-FT) replaces these weights by a classifier fitted on the normalised features (``probe.head_inputs``);
L2-SP counts the zero-shot head as pretrained (in theta_0).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import nn

from freeze_embed.backbones import Pretrained, _fetching, _unknown, open_clip_model, parse_spec
from freeze_embed.data.prompts import TEMPLATES
from freeze_embed.errors import FreezeEmbedError


class ZeroShotError(FreezeEmbedError, ValueError):
    """A zero-shot head that cannot be built (no text tower, no class names); the message says what to use."""


class NormalizedLinear(nn.Linear):
    """A linear head on L2-normalised features: wise-ft's ``ClassificationHead(normalize=True)``."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return super().forward(features / features.norm(dim=-1, keepdim=True))


def check_backbone(spec: str) -> None:
    """Raise one sentence unless ``spec`` is an open_clip CLIP model, the only family here with a text tower."""
    parsed = parse_spec(spec)
    if parsed.library != "open_clip":
        raise ZeroShotError(f"model.head_init: zeroshot needs an open_clip CLIP backbone (open_clip:<arch>:<tag>, "
                            f"e.g. open_clip:ViT-B-16:openai) with a text tower; '{spec}' has none; use "
                            "head_init: random.")
    import open_clip
    if parsed.name not in open_clip.list_models():
        raise _unknown(spec, parsed.name, open_clip.list_models())


def clip_model(spec: str, pretrained: Pretrained = False, *, trust_pickle: bool = False, **kwargs: Any) -> nn.Module:
    """The whole CLIP model (image and text towers) with the weights ``backbones.create_backbone`` gives the image
    tower: the same local file, download or random init, and QuickGELU for the 'openai' tag."""
    check_backbone(spec)
    return open_clip_model(parse_spec(spec), pretrained, kwargs, trust_pickle)


def zeroshot_weights(backbone: str, pretrained: Pretrained, class_names: Sequence[str], templates: Sequence,
                     backbone_kwargs: Optional[dict] = None, device: str = "cpu",
                     trust_pickle: bool = False) -> torch.Tensor:
    """``(num_classes, embed_dim)`` float32 weights of the zero-shot head: each class's mean normalised text
    embedding over ``templates``, renormalised, times ``exp(logit_scale)``. A SigLIP model's ``logit_bias`` is left
    out: a constant added to every class changes neither the argmax nor the cross-entropy."""
    import open_clip
    model = clip_model(backbone, pretrained, trust_pickle=trust_pickle, **(backbone_kwargs or {})).to(device).eval()
    with _fetching(backbone, True):  # a model with a Hugging Face tokenizer needs the hub (or its cache)
        tokenizer = open_clip.get_tokenizer(parse_spec(backbone).name, context_length=model.context_length)
    classifier = open_clip.build_zero_shot_classifier(model, tokenizer, list(class_names), list(templates),
                                                      device=device, use_tqdm=len(class_names) > 10)
    with torch.no_grad():
        return (classifier.T * model.logit_scale.exp()).float().cpu()


def prompts(datamodule) -> tuple[list[str], list]:
    """(class names in label order, prompt templates) that the datamodule declares (``class_names``,
    ``prompt_templates``; the templates live in ``freeze_embed.data.prompts``)."""
    name = type(datamodule).__name__
    names = getattr(datamodule, "class_names", None)
    if not names:
        raise ZeroShotError(f"{name} declares no class_names, which a zero-shot head needs (one name per label); "
                            "add class_names to the datamodule or use head_init: random.")
    if len(names) != datamodule.num_classes:
        raise ZeroShotError(f"{name} has {datamodule.num_classes} classes but {len(names)} class_names; give one "
                            "name per label.")
    key = getattr(datamodule, "prompt_templates", "simple")
    if key not in TEMPLATES:
        raise ZeroShotError(f"{name}.prompt_templates is '{key}'; choose one of {', '.join(TEMPLATES)} "
                            "(freeze_embed/data/prompts.py).")
    return list(names), list(TEMPLATES[key])


@torch.no_grad()
def fill_head(head: nn.Linear, hparams, datamodule) -> None:
    """The FineTuner's ``setup('fit')``: the head becomes the zero-shot classifier of the datamodule's classes."""
    weights = zeroshot_weights(hparams.backbone, hparams.pretrained, *prompts(datamodule), hparams.backbone_kwargs,
                               trust_pickle=hparams.get("trust_pickle", False))
    head.weight.copy_(weights)
    head.bias.zero_()
