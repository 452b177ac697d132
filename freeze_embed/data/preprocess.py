"""A backbone's own input preprocessing, as one plain dict with timm's ``pretrained_cfg`` keys.

``{"input_size": (3, H, W), "interpolation", "crop_pct", "crop_mode", "mean", "std"}``: the model's input size,
resize interpolation, crop fraction and normalisation. ``timm.data.create_transform(**cfg)`` on exactly these keys
is the evaluation transform (resize the shorter side to ``H / crop_pct``, centre-crop ``H x W``), so a checkpoint
that stores the dict (``FineTuner.on_save_checkpoint``) carries everything predict and export need to read images.
Training is ``RandomResizedCrop`` at the same size plus a horizontal flip, and no other augmentation.

The paper's six datasets keep their own transforms (``data/transforms.py``); a user's folders get these.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from freeze_embed.backbones import IMAGENET_MEAN, IMAGENET_STD, Backbone, create_backbone, parse_spec

KEYS = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")
# open_clip's resize_mode -> timm's eval crop_mode (both with crop_pct 1.0): "shortest" resizes the shorter side to
# the size and centre-crops, "squash" resizes both sides, "longest" fits the longer side and pads.
_CLIP_CROP_MODE = {"shortest": "center", "squash": "squash", "longest": "border"}


def _plain(cfg: dict) -> dict:
    """Only the known keys, as tuples/str/float (lists once in a checkpoint; both rebuild the same transform)."""
    return {"input_size": tuple(int(v) for v in cfg["input_size"]), "interpolation": str(cfg["interpolation"]),
            "crop_pct": float(cfg["crop_pct"]), "crop_mode": str(cfg["crop_mode"]),
            "mean": tuple(float(v) for v in cfg["mean"]), "std": tuple(float(v) for v in cfg["std"])}


def _timm(model: torch.nn.Module) -> dict:
    from timm.data import resolve_data_config
    cfg = dict(resolve_data_config({}, model=model))
    # A size given to the constructor (e.g. the demo ViT's img_size 32) is not in the pretrained_cfg timm reads.
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img_size is not None:
        h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        cfg["input_size"] = (3, int(h), int(w))
    cfg.setdefault("crop_mode", "center")
    return cfg


def _open_clip(visual: torch.nn.Module, name: str) -> dict:
    import open_clip
    cfg = dict(getattr(visual, "preprocess_cfg", None) or {})
    spec = parse_spec(name)
    if spec.tag:  # what a pretrained tag sets (e.g. other mean/std), also when the weights were not loaded
        cfg.update({k: v for k, v in open_clip.get_pretrained_cfg(spec.name, spec.tag).items()
                    if k in ("mean", "std", "interpolation", "resize_mode")})
    size = cfg.get("size", getattr(visual, "image_size", 224))
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return {"input_size": (3, h, w), "interpolation": cfg.get("interpolation", "bicubic"), "crop_pct": 1.0,
            "crop_mode": _CLIP_CROP_MODE.get(cfg.get("resize_mode", "shortest"), "center"),
            "mean": cfg.get("mean", open_clip.OPENAI_DATASET_MEAN), "std": cfg.get("std", open_clip.OPENAI_DATASET_STD)}


def _torchvision(name: str) -> dict:
    """The default weights' own transforms where torchvision knows them, else ImageNet's 224 / bilinear / 0.875."""
    import torchvision
    cfg = {"input_size": (3, 224, 224), "interpolation": "bilinear", "crop_pct": 0.875, "crop_mode": "center",
           "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    try:
        tf = torchvision.models.get_model_weights(name).DEFAULT.transforms()
    except Exception:  # noqa: BLE001 - a model without registered weights keeps the ImageNet defaults
        return cfg
    crop, resize = tf.crop_size[0], tf.resize_size[0]
    cfg.update(input_size=(3, crop, crop), interpolation=tf.interpolation.value, crop_pct=crop / resize,
               mean=tuple(tf.mean), std=tuple(tf.std))
    return cfg


def resolve_preprocess(backbone: Backbone) -> dict:
    """The preprocessing ``backbone`` was trained with (keys :data:`KEYS`)."""
    if backbone.library == "timm":
        return _plain(_timm(backbone.model))
    if backbone.library == "open_clip":
        return _plain(_open_clip(backbone.model, backbone.name))
    return _plain(_torchvision(backbone.name))


def preprocess_for(spec: str, backbone_kwargs: Optional[dict[str, Any]] = None) -> dict:
    """:func:`resolve_preprocess` from a spec string, before the model exists: the backbone is built on the meta
    device (no weights downloaded, no memory), so the datamodule gets the very dict the checkpoint will store."""
    kwargs = dict(backbone_kwargs or {})
    library = parse_spec(spec).library
    if library == "torchvision":  # the name alone decides
        return _plain(_torchvision(parse_spec(spec).name))
    if library == "open_clip":
        kwargs["device"] = "meta"  # open_clip moves the model to its device argument after building it
    with torch.device("meta"):
        return resolve_preprocess(create_backbone(spec, False, **kwargs))


def eval_transform(cfg: dict) -> Callable:
    """Resize by the crop fraction, centre crop, tensor, normalise: ``timm.data.create_transform(**cfg)``."""
    from timm.data import create_transform
    return create_transform(**{k: cfg[k] for k in KEYS}, is_training=False)


def train_transform(cfg: dict) -> Callable:
    """``RandomResizedCrop`` (scale 0.08-1, ImageNet's) at the model's size and a horizontal flip; none of timm's
    other augmentations (colour jitter, AutoAugment, random erasing are off)."""
    from timm.data import create_transform
    return create_transform(input_size=cfg["input_size"], interpolation=cfg["interpolation"], mean=cfg["mean"],
                            std=cfg["std"], is_training=True, scale=(0.08, 1.0), hflip=0.5, vflip=0.0,
                            color_jitter=None, auto_augment=None, re_prob=0.0)
