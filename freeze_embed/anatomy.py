"""Anatomy: the paper's three ordered parts of a backbone, ``embed``, ``blocks`` (bottom to top) and ``head``.

This is the only module that knows model families. Appendix A defines the embedding that SGD (freeze-embed)
freezes:
  * CLIP ViTs: the patch-to-token embedding and the layer norm after it (open_clip ``conv1`` + ``ln_pre``;
    timm ``patch_embed.proj`` + ``norm_pre``);
  * supervised and DINO ViTs: the patch-to-token embedding only (``patch_embed.proj``);
  * BiT ResNets and ConvNeXt: the stem and the first stage (``stem`` + ``stages.0``);
  * torchvision ResNets, by analogy: ``conv1``, ``bn1``, ``layer1``.
Class and position tokens are not embed unless ``embed_tokens=True`` (the paper leaves them trainable).

Every parameter lands in exactly one part. Parameters that are neither embed nor a block (tokens, the final norm,
CLIP's projection) are attached to the first or the last block, so gradual unfreezing trains them with their
neighbours; ``proj`` also names the projection the head reads through (open_clip's ``proj``), which the authors'
gradual unfreezing trains with the head from the start. Any other timm model falls back on timm's own metadata
(``group_matcher`` / ``first_conv``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

from torch import nn

from freeze_embed.backbones import Backbone
from freeze_embed.errors import FreezeEmbedError

NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.LocalResponseNorm)


class EmbedNotFound(FreezeEmbedError, ValueError):
    """No rule knows this backbone's embedding layer."""


@dataclass(frozen=True)
class Anatomy:
    embed: list[str]            # parameter names, e.g. backbone.patch_embed.proj.weight
    blocks: list[list[str]]     # bottom -> top
    head: list[str]
    norms: frozenset = field(default_factory=frozenset)   # names of parameters that belong to norm layers
    embed_modules: list[str] = field(default_factory=list)  # the embed prefixes, for display and variants
    proj: list[str] = field(default_factory=list)  # the projection into the head's input (also in blocks[-1])
    tokens: list[str] = field(default_factory=list)  # class/position tokens (in blocks[0], or embed if embed_tokens)
    top: list[str] = field(default_factory=list)  # after the last block: final norm, projection (also in blocks[-1])
    # the blocks inside the embedding's first stage (ResNets' layer1), bottom to top (also in embed); ViTs have none
    embed_blocks: list[list[str]] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return self.embed + [n for b in self.blocks for n in b] + self.head


def _matches(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _rule(model: nn.Module, library: str) -> Optional[tuple[list[str], list[str], list[list[str]]]]:
    """(embed prefixes, token parameter names, blocks as prefix lists, bottom to top) for families known by name."""
    cls = type(model).__name__
    n = lambda path: len(model.get_submodule(path))  # noqa: E731 - a one-line helper for the rules below
    if library == "timm" and cls in ("VisionTransformer", "Eva", "VisionTransformerDistilled"):
        embed = ["patch_embed.proj"] + (["norm_pre"] if any(True for _ in model.norm_pre.parameters()) else [])
        tokens = [t for t in ("cls_token", "reg_token", "pos_embed", "dist_token")
                  if getattr(model, t, None) is not None]
        return embed, tokens, [[f"blocks.{i}"] for i in range(n("blocks"))]
    if library == "timm" and cls in ("ConvNeXt", "ResNetV2"):
        # A stage's downsampling layer trains with that stage's first block.
        blocks = [[f"stages.{s}.blocks.{b}"] + ([f"stages.{s}.downsample"] if b == 0 else [])
                  for s in range(1, n("stages")) for b in range(n(f"stages.{s}.blocks"))]
        return ["stem", "stages.0"], [], blocks
    if library == "open_clip" and cls == "VisionTransformer":
        tokens = ["class_embedding", "positional_embedding"]
        return ["conv1", "ln_pre"], tokens, [[f"transformer.resblocks.{i}"] for i in range(n("transformer.resblocks"))]
    if library == "open_clip" and cls == "ModifiedResNet":
        stem = ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "layer1"]
        return stem, [], [[f"layer{s}.{b}"] for s in (2, 3, 4) for b in range(n(f"layer{s}"))]
    if library == "torchvision" and cls == "ResNet":
        return ["conv1", "bn1", "layer1"], [], [[f"layer{s}.{b}"] for s in (2, 3, 4) for b in range(n(f"layer{s}"))]
    if library == "torchvision" and cls == "VisionTransformer":
        return (["conv_proj"], ["class_token", "encoder.pos_embedding"],
                [[f"encoder.layers.{c}"] for c, _ in model.encoder.layers.named_children()])
    if library == "torchvision" and cls == "ConvNeXt":
        # features: 0 stem, odd = stages, even >= 2 = downsampling before the next stage.
        return (["features.0", "features.1"], [],
                [[f"features.{s}.{b}"] + ([f"features.{s - 1}"] if b == 0 else [])
                 for s in range(3, n("features"), 2) for b in range(n(f"features.{s}"))])
    return None


# The stage inside a family's embedding whose children are blocks (SubTuning's ResNet candidates include them).
_EMBED_STAGE = {("timm", "ConvNeXt"): "stages.0.blocks", ("timm", "ResNetV2"): "stages.0.blocks",
                ("open_clip", "ModifiedResNet"): "layer1", ("torchvision", "ResNet"): "layer1",
                ("torchvision", "ConvNeXt"): "features.1"}


def _embed_blocks(model: nn.Module, library: str, embed_names: list[str]) -> list[list[str]]:
    stage = _EMBED_STAGE.get((library, type(model).__name__))
    if stage is None:
        return []
    blocks = [[n for n in embed_names if _matches(n, [f"{stage}.{c}"])] for c, _ in
              model.get_submodule(stage).named_children()]
    return [b for b in blocks if b]


def _timm_metadata_rule(model: nn.Module) -> Optional[tuple[list[str], list[str], list[list[str]]]]:
    """Fallback for any other timm model: timm's group_matcher gives the stem and the block order."""
    from timm.models import group_parameters
    names = [n for n, _ in model.named_parameters()]
    if hasattr(model, "group_matcher"):
        matcher = model.group_matcher(coarse=False)
        stem_re = matcher.get("stem") if isinstance(matcher, dict) else None
        groups = [list(g) for _, g in sorted(group_parameters(model, matcher).items())]
        if stem_re and groups and all(re.match(stem_re, n) for n in groups[0]):
            stem = groups.pop(0)
            # Top-level tensors in the stem (class/position tokens) are not the embedding layer.
            embed_names = [n for n in stem if "." in n]
            tokens = [n for n in stem if "." not in n]
            return embed_names, tokens, groups
    first_conv = getattr(model, "pretrained_cfg", {}).get("first_conv")
    if first_conv:
        first = first_conv if isinstance(first_conv, str) else first_conv[0]
        module = first.rsplit(".", 1)[0] if first.endswith((".weight", ".bias")) else first
        embed_names = [n for n in names if _matches(n, [module])]
        if embed_names:
            rest = [n for n in names if n not in embed_names]
            return embed_names, [], [rest]
    return None


def resolve_anatomy(backbone: Backbone, head: nn.Module, *, embed: Optional[Sequence[str]] = None,
                    embed_tokens: bool = False, prefix: str = "backbone.", head_prefix: str = "head.") -> Anatomy:
    """Split ``backbone`` + ``head`` parameters into embed / blocks / head.

    ``embed`` (parameter-name prefixes inside the backbone) overrides the family rule and always works.
    """
    model = backbone.model
    names = [n for n, p in model.named_parameters()]
    rule = _rule(model, backbone.library)
    if rule is not None:
        embed_prefixes, tokens, block_prefixes = rule
        blocks = [[n for n in names if _matches(n, b)] for b in block_prefixes]
        embed_names = [n for n in names if _matches(n, embed_prefixes)]
    else:
        meta = _timm_metadata_rule(model) if backbone.library == "timm" else None
        if meta is None and not embed:
            raise EmbedNotFound(
                f"Cannot find the embedding layer of backbone '{backbone.name}' ({type(model).__name__}): list its "
                "parameter prefixes in the config, e.g. `model.embed: [conv1, bn1]` "
                "(see `python -m freeze_embed.tools.parts <backbone>` for the names).")
        if meta is not None:
            embed_names, tokens, blocks = meta
        else:
            embed_names, tokens = [], []
            blocks = [[n for n in names if _matches(n, [c])] for c, _ in model.named_children()]
        embed_prefixes = list(dict.fromkeys(n.rsplit(".", 1)[0] for n in sorted(embed_names, key=names.index)))
    if embed:
        unknown = [p for p in embed if not any(_matches(n, [p]) for n in names)]
        if unknown:
            raise EmbedNotFound(f"Embed prefixes {unknown} match no parameter of backbone '{backbone.name}'; "
                                f"top-level modules are {[c for c, _ in model.named_children()]}.")
        embed_prefixes = list(embed)
        embed_names = [n for n in names if _matches(n, embed_prefixes)]
    if embed_tokens:
        embed_names = embed_names + [t for t in tokens if t in names and t not in embed_names]
    taken = set(embed_names)
    blocks = [[n for n in b if n not in taken] for b in blocks]
    blocks = [b for b in blocks if b]
    taken |= {n for b in blocks for n in b}
    if not blocks:
        blocks = [[]]
    # Leftovers go to the nearest block: tokens to the bottom one, the rest (final norm, CLIP's projection,
    # pooling) to the top one.
    top = []
    for n in names:
        if n not in taken:
            if n not in tokens:
                top.append(n)
            (blocks[0] if n in tokens else blocks[-1]).append(n)
    order = {n: i for i, n in enumerate(names)}
    blocks = [sorted(b, key=order.__getitem__) for b in blocks if b]
    embed_names = sorted(embed_names, key=order.__getitem__)
    norms = {f"{m}.{p}" if m else p for m, mod in model.named_modules() if isinstance(mod, NORM_TYPES)
             for p, _ in mod.named_parameters(recurse=False)}
    # timm's LayerNorm2d / open_clip's LayerNorm subclass nn.LayerNorm, so isinstance catches them.
    return Anatomy(
        embed=[prefix + n for n in embed_names],
        blocks=[[prefix + n for n in b] for b in blocks],
        head=[head_prefix + n for n, _ in head.named_parameters()],
        norms=frozenset(prefix + n for n in norms),
        embed_modules=list(embed_prefixes),
        proj=[prefix + n for n in names if backbone.library == "open_clip" and n == "proj"],
        tokens=[prefix + n for n in names if n in tokens],
        top=[prefix + n for n in top],
        embed_blocks=[[prefix + n for n in b] for b in _embed_blocks(model, backbone.library, embed_names)],
    )
