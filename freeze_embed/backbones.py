"""Backbone spec strings -> feature extractors.

One string names any backbone: ``timm:<model>[.<tag>]``, ``open_clip:<arch>[:<tag>]`` or
``torchvision:<name>``. ``pretrained`` is ``False`` (random weights), ``True`` (download through the library)
or a local checkpoint path, so clusters without internet work. The original classifier is removed: the
FineTuner puts a fresh linear head on top of ``Backbone.num_features``.

Weights come from anywhere, so reading them never runs code: a local file is ``.safetensors`` or read with
``torch.load(weights_only=True)`` (timm's, open_clip's and our own reader all do), and one that needs arbitrary pickle
is refused in one sentence unless ``trust_pickle`` (the user trusts the file). OpenAI's original CLIP archives
(TorchScript) are read without running them (:mod:`freeze_embed.torchscript`).
"""
from __future__ import annotations

import contextlib
import difflib
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional, Union

from torch import nn

from freeze_embed import files, torchscript
from freeze_embed.errors import FreezeEmbedError, one_line

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LIBRARIES = ("timm", "open_clip", "torchvision")

Pretrained = Union[bool, str]


class BackboneError(FreezeEmbedError, ValueError):
    """A backbone spec or checkpoint the user must fix; the message says how."""


@dataclass
class Backbone:
    model: nn.Module  # images (B, 3, H, W) -> features (B, num_features)
    num_features: int
    mean: tuple
    std: tuple
    library: str
    name: str


@dataclass(frozen=True)
class Spec:
    library: str
    name: str
    tag: Optional[str] = None

    def __str__(self) -> str:
        sep = ":" if self.library == "open_clip" else "."
        return f"{self.library}:{self.name}" + (f"{sep}{self.tag}" if self.tag else "")


def parse_spec(spec: str) -> Spec:
    library, sep, rest = str(spec).partition(":")
    if not sep or library not in LIBRARIES or not rest:
        raise BackboneError(
            f"Unknown backbone '{spec}': write timm:<model>[.<tag>], open_clip:<arch>[:<tag>] or torchvision:<name>, "
            "e.g. timm:vit_base_patch16_224.augreg_in21k or open_clip:ViT-B-16:openai.")
    if library == "open_clip":
        name, _, tag = rest.partition(":")
        return Spec(library, name, tag or None)
    if library == "timm":
        name, _, tag = rest.partition(".")
        return Spec(library, name, tag or None)
    return Spec(library, rest)


def _unknown(spec: str, name: str, known: list[str]) -> BackboneError:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return BackboneError(f"Unknown backbone '{spec}': the library has no model named '{name}'.{hint}")


def _checkpoint_path(pretrained: Pretrained) -> Optional[str]:
    if isinstance(pretrained, str) and pretrained.lower() not in ("true", "false"):
        path = os.path.expanduser(pretrained)
        if not os.path.isfile(path):
            raise BackboneError(f"Checkpoint '{pretrained}' does not exist: give a local file path, "
                                "true to download the library's weights, or false for random weights.")
        return path
    return None


def _wants_download(pretrained: Pretrained) -> bool:
    return pretrained is True or (isinstance(pretrained, str) and pretrained.lower() == "true")


def _unfetchable(spec: str, err: Exception) -> BackboneError:
    """Offline, or a cold cache: one sentence with the two ways out, instead of a hub library's traceback."""
    detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    return BackboneError(
        f"The pretrained weights of '{spec}' could not be fetched ({type(err).__name__}: {detail}). Either give a "
        "local file with --model.pretrained /path/to/weights, or fill the Hugging Face cache on a machine with "
        "internet (run once with the same backbone) and run here with HF_HUB_OFFLINE=1.")


@contextlib.contextmanager
def _fetching(spec: str, wanted: bool):
    """Turn a failed download into :func:`_unfetchable`; our own errors and anything else pass through."""
    try:
        yield
    except BackboneError:
        raise
    except (OSError, RuntimeError, ConnectionError) as err:  # hub errors are OSErrors; open_clip raises RuntimeError
        if not wanted:
            raise
        raise _unfetchable(spec, err) from err


def _misfit(path: str, spec: str, detail: str) -> BackboneError:
    """Weights of another architecture (``detail``: the library's message on one line, as ``files.load_strict``)."""
    return BackboneError(f"Checkpoint '{path}' does not fit backbone '{spec}' ({detail}). "
                         "Check that the file was saved from this architecture.")


WHAT = "pretrained weights"  # how the refusal sentences name a local weights file


def _timm(spec: Spec, pretrained: Pretrained, kwargs: dict, trust_pickle: bool = False) -> Backbone:
    import timm
    if not timm.is_model(spec.name):
        raise _unknown(str(spec), spec.name, timm.list_models())
    name = f"{spec.name}.{spec.tag}" if spec.tag else spec.name
    path = _checkpoint_path(pretrained)
    download = _wants_download(pretrained) and not path
    stem = kwargs.pop("stem", None)
    if stem is not None and (stem != "patchify" or download):
        raise BackboneError(f"Backbone kwarg stem: {stem!r} is not possible here: the only choice is 'patchify' "
                            "(a BiT ResNet's 4x4 stride-4 stem), with random weights or a local checkpoint.")
    with _fetching(str(spec), download):
        model = timm.create_model(name, pretrained=download, num_classes=0, **kwargs)
    if stem:
        patchify_stem(model, str(spec))
    if path:
        _load_timm_file(model, path, str(spec), trust_pickle)
    cfg = model.pretrained_cfg
    return Backbone(model, model.num_features, tuple(cfg.get("mean", IMAGENET_MEAN)),
                    tuple(cfg.get("std", IMAGENET_STD)), "timm", name)


def patchify_stem(model: nn.Module, spec: str) -> None:
    """Swap a timm ResNetV2's stem (7x7 stride-2 conv + 3x3 max-pool) for ConvNeXt's "patchify" stem, a
    non-overlapping 4x4 stride-4 convolution (Appendix E; Liu et al. 2022, ConvNeXt Section 2.3): the same 4x
    downsampling, same conv class (BiT's weight-standardised conv) and width. It stays ``stem.conv``, so the anatomy's
    ResNetV2 rule (``stem`` + ``stages.0``) is still the embedding."""
    if type(model).__name__ != "ResNetV2":
        raise BackboneError(f"Backbone kwarg stem: patchify needs a timm ResNetV2 (e.g. timm:resnetv2_50x1_bit), "
                            f"not '{spec}' ({type(model).__name__}).")
    old = model.stem.conv
    extra = {"eps": old.eps} if hasattr(old, "eps") else {}
    layers = {"conv": type(old)(old.in_channels, old.out_channels, kernel_size=4, stride=4, padding=0,
                                bias=old.bias is not None, **extra)}
    if hasattr(model.stem, "norm"):  # non-pre-activation ResNetV2s normalise in the stem
        layers["norm"] = model.stem.norm
    model.stem = nn.Sequential(OrderedDict(layers))


def _load_timm_file(model: nn.Module, path: str, spec: str, trust_pickle: bool = False) -> None:
    """Load a local checkpoint strictly (the old classifier dropped): a wrong architecture fails loudly. timm reads
    it (its EMA and ``module.`` handling) with ``weights_only`` unless the user trusts the file."""
    from timm.models import load_state_dict
    if path.endswith(".npz") and hasattr(model, "load_pretrained"):  # original JAX ViT / BiT weights: numpy only
        model.load_pretrained(path)
        return
    try:
        with files.refusing_pickle(path, WHAT):
            state = load_state_dict(path, weights_only=not trust_pickle)
    except files.UnsafeFileError:
        raise
    except Exception as err:  # truncated files, safetensors' and torch's own errors: one sentence
        raise BackboneError(f"Cannot read checkpoint '{path}' ({type(err).__name__}: {one_line(err, 200)}).") from err
    classifier = model.pretrained_cfg.get("classifier") or "head"
    classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    state = {k: v for k, v in state.items() if not any(k.startswith(c + ".") for c in classifier)}
    files.load_strict(model, state, lambda detail: _misfit(path, spec, detail))


def open_clip_model(spec: Spec, pretrained: Pretrained, kwargs: dict, trust_pickle: bool = False) -> nn.Module:
    """The whole open_clip model (image and text towers) with the weights ``pretrained`` names: the image tower is
    the backbone; the zero-shot head (``freeze_embed.zeroshot``) needs the text tower from the same weights."""
    import open_clip
    if spec.name not in open_clip.list_models():
        raise _unknown(str(spec), spec.name, open_clip.list_models())
    path = _checkpoint_path(pretrained)
    weights = path or (spec.tag if _wants_download(pretrained) else None)
    if _wants_download(pretrained) and not spec.tag:
        raise BackboneError(f"Backbone '{spec}' needs a pretrained tag to download, e.g. open_clip:{spec.name}:openai "
                            f"(choices: {[t for a, t in open_clip.list_pretrained() if a == spec.name]}).")
    # OpenAI's CLIP was trained with QuickGELU; open_clip only switches to it for the 'openai' tag.
    quick_gelu = spec.tag == "openai"
    if path and torchscript.is_torchscript(path):  # OpenAI's original archives; QuickGELU, as load_openai_model has
        model = open_clip.create_model(spec.name, pretrained=None, force_quick_gelu=True, **kwargs)
        state = torchscript.openai_clip_state(path, model, WHAT)
        files.load_strict(model, state, lambda detail: _misfit(path, str(spec), detail))
        return model
    try:
        with _fetching(str(spec), not path and weights is not None), files.refusing_pickle(path or str(spec), WHAT):
            return open_clip.create_model(spec.name, pretrained=weights, force_quick_gelu=quick_gelu,
                                          weights_only=not trust_pickle, **kwargs)
    except RuntimeError as err:
        if path:
            raise _misfit(path, str(spec), one_line(err)) from err
        raise


def _open_clip(spec: Spec, pretrained: Pretrained, kwargs: dict, trust_pickle: bool = False) -> Backbone:
    import open_clip
    model = open_clip_model(spec, pretrained, kwargs, trust_pickle)
    visual = model.visual  # the paper fine-tunes CLIP's image tower only
    mean = tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    return Backbone(visual, visual.output_dim, mean, std, "open_clip", str(spec))


def _torchvision(spec: Spec, pretrained: Pretrained, kwargs: dict, trust_pickle: bool = False) -> Backbone:
    import torchvision
    known = torchvision.models.list_models()
    if spec.name not in known:
        raise _unknown(str(spec), spec.name, known)
    path = _checkpoint_path(pretrained)
    with _fetching(str(spec), _wants_download(pretrained)):
        if _wants_download(pretrained) and not trust_pickle:
            _check_torchvision_download(spec.name)
        model = torchvision.models.get_model(spec.name, weights="DEFAULT" if _wants_download(pretrained) else None,
                                             **kwargs)
    if path:
        state = files.load_state_dict(path, WHAT, trust_pickle)
        files.load_strict(model, state, lambda detail: _misfit(path, str(spec), detail))
    # The classifier is the last Linear layer in every torchvision classification model (fc, heads, classifier[-1]).
    last = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    parent_name, _, child = last[0].rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, nn.Identity())
    return Backbone(model, last[1].in_features, IMAGENET_MEAN, IMAGENET_STD, "torchvision", spec.name)


def _check_torchvision_download(name: str) -> None:
    """torchvision reads its downloaded weights with full pickle (``torch.hub.load_state_dict_from_url``'s default),
    and checks their hash only when it downloads them, not when a cached file is there: read the file with
    ``weights_only`` first (downloading it if needed), so that a file that needs more than tensors is refused before
    torchvision reads it. A file that passes holds nothing else for torchvision's full unpickling to run."""
    import torch.hub
    import torchvision
    from urllib.parse import urlparse
    weights = torchvision.models.get_model_weights(name).DEFAULT
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(weights.url).path))
    with files.refusing_pickle(cached, WHAT):
        weights.get_state_dict(progress=True, check_hash=True, weights_only=True)


def create_backbone(spec: str, pretrained: Pretrained = False, *, trust_pickle: bool = False,
                    **kwargs: Any) -> Backbone:
    """Build the feature extractor named by ``spec``; ``kwargs`` go to the library (e.g. timm's img_size).
    ``trust_pickle``: read a local ``pretrained`` file with full pickle (only for files the user trusts)."""
    parsed = parse_spec(spec)
    build = {"timm": _timm, "open_clip": _open_clip, "torchvision": _torchvision}[parsed.library]
    return build(parsed, pretrained, dict(kwargs), trust_pickle)


def normalization(spec: Optional[str]) -> tuple[tuple, tuple]:
    """The backbone's own input mean/std, without building it (CLIP's differ from ImageNet's)."""
    if not spec:
        return IMAGENET_MEAN, IMAGENET_STD
    parsed = parse_spec(spec)
    if parsed.library == "timm":
        import timm
        name = f"{parsed.name}.{parsed.tag}" if parsed.tag else parsed.name
        try:
            cfg = timm.models.get_pretrained_cfg(name)
        except Exception:  # noqa: BLE001 - any failed lookup (an unknown tag) falls through to ImageNet
            cfg = None
        if cfg is not None:
            return tuple(cfg.mean), tuple(cfg.std)
        return IMAGENET_MEAN, IMAGENET_STD
    if parsed.library == "open_clip":
        import open_clip
        cfg = open_clip.get_pretrained_cfg(parsed.name, parsed.tag) if parsed.tag else {}
        return (tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
                tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD)))
    return IMAGENET_MEAN, IMAGENET_STD


# The paper's seven models (Section 2.2), as ready spec strings.
PAPER_BACKBONES = {
    "clip_vit_b16": "open_clip:ViT-B-16:openai",
    "clip_vit_l14": "open_clip:ViT-L-14:openai",
    "vit_b16_in21k": "timm:vit_base_patch16_224.augreg_in21k",
    "dino_vit_b16": "timm:vit_base_patch16_224.dino",
    "convnext_b_in22k": "timm:convnext_base.fb_in22k",
    "bit_resnet50_in21k": "timm:resnetv2_50x1_bit.goog_in21k",
    "bit_resnet101_in21k": "timm:resnetv2_101x1_bit.goog_in21k",
}
