"""Checkpoints as train.py writes them (FineTuner hyper-parameters, state dict, class names, test-time transform),
built directly from random tiny models, for the predict and export tests; the tiny models themselves."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import torch

from freeze_embed.module import FineTuner

TINY_VIT = ("timm:vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4, "depth": 1, "embed_dim": 32, "num_heads": 1})
TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
CLASSES = ["cat", "dog", "fox"]
SPEC = "open_clip:ViT-B-32"  # the architecture TINY_CLIP shrinks


def tiny_clip_file(tmp_path: Path):
    """A random tiny CLIP with OpenAI's trained logit scale (100), saved as a local checkpoint."""
    import open_clip
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", **TINY_CLIP).eval()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100.0))
    path = tmp_path / "tiny_clip.pt"
    torch.save(model.state_dict(), path)
    return model, str(path)


def preprocess(size: int) -> dict:
    """A test-time transform with a resize and a center crop, as timm's pretrained_cfg names it."""
    return {"input_size": [3, size, size], "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center",
            "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}


def checkpoint(path: Path, spec: str = TINY_VIT[0], kwargs: Optional[dict] = None, size: int = 32,
               head_init: str = "random", classes: tuple = tuple(CLASSES), seed: int = 0,
               centre: Optional[torch.Tensor] = None, **finetuner: Any) -> FineTuner:
    """Save a random model's checkpoint at ``path`` and return the model (eval mode).

    Its head has large random weights so the classes differ; with ``centre`` (images) the head reads the features'
    deviations from their mean: a random tiny ViT maps all images to almost the same feature.
    """
    torch.manual_seed(seed)
    kwargs = TINY_VIT[1] if kwargs is None and spec == TINY_VIT[0] else (kwargs or {})
    model = FineTuner(backbone=spec, num_classes=len(classes), backbone_kwargs=kwargs, head_init=head_init,
                      **finetuner).eval()
    w = torch.randn(model.head.weight.shape) * (100 if centre is not None else 1)
    with torch.no_grad():
        mean = model.backbone(centre).mean(0) if centre is not None else torch.zeros(w.shape[1])
        model.head.weight.copy_(w)
        model.head.bias.copy_(-w @ mean + torch.randn(len(classes)))
    torch.save({"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict(), "epoch": 1,
                "class_names": list(classes), "preprocess": preprocess(size)}, path)
    return model
