"""Show a backbone's anatomy and, with a strategy, the optimizer's param groups in every epoch.

    python -m freeze_embed.inspect timm:vit_base_patch16_224 --strategy FreezeEmbed --epochs 3 [--json]

Random weights by default (``--pretrained false``), so it works offline. Frozen parameters are in no group.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Optional

import yaml
from torch import nn

from .anatomy import Anatomy, EmbedNotFound, resolve_anatomy
from .backbones import BackboneError, create_backbone
from .strategies import Strategy


def load_strategy(spec: Optional[str], init_args: Optional[dict] = None) -> Optional[Strategy]:
    """``FreezeEmbed``, ``freeze_embed.strategies.FreezeEmbed`` or ``my_module.MyStrategy``."""
    if not spec:
        return None
    module_name, _, cls_name = spec.rpartition(".")
    module = importlib.import_module(module_name or "freeze_embed.strategies")
    cls = getattr(module, cls_name, None)
    if cls is None or not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise ValueError(f"'{spec}' is not a Strategy class; try one of freeze_embed.strategies.__all__ "
                         "or a dotted path to your own subclass.")
    return cls(**(init_args or {}))


def _counter(named: dict[str, nn.Parameter]):
    return lambda names: sum(named[n].numel() for n in names)


def describe(anatomy: Anatomy, named: dict[str, nn.Parameter], strategy: Optional[Strategy], epochs: int) -> dict:
    count = _counter(named)
    total = count(anatomy.names)
    out = {"embed": anatomy.embed, "blocks": anatomy.blocks, "head": anatomy.head,
           "embed_fraction": count(anatomy.embed) / total, "num_params": total}
    if strategy is not None:
        out["epochs"] = [strategy.param_groups(anatomy, e, epochs) for e in range(epochs)]
    return out


def _print(info: dict, named: dict[str, nn.Parameter], embed_modules: list[str]) -> None:
    count = _counter(named)
    total = info["num_params"]
    print(f"{'part':<12}{'params':>14}{'share':>9}  modules")
    print(f"{'embed':<12}{count(info['embed']):>14,}{count(info['embed']) / total:>9.3%}  {', '.join(embed_modules)}")
    for i, block in enumerate(info["blocks"]):
        mods = sorted({n.split(".", 1)[1].rsplit(".", 1)[0] for n in block})
        shown = ", ".join(mods[:3]) + (f", ... ({len(mods)} modules)" if len(mods) > 3 else "")
        print(f"{f'blocks.{i}':<12}{count(block):>14,}{count(block) / total:>9.3%}  {shown}")
    print(f"{'head':<12}{count(info['head']):>14,}{count(info['head']) / total:>9.3%}  head")
    print(f"embed fraction: {info['embed_fraction']:.3%} of {total:,} parameters")
    for epoch, groups in enumerate(info.get("epochs", [])):
        trained = sum(count(g["names"]) for g in groups)
        print(f"\nepoch {epoch}: {trained:,} trainable, {total - trained:,} frozen")
        for g in groups:
            print(f"  lr_scale {g['lr_scale']:<10.4g} {len(g['names']):>4} tensors, {count(g['names']):>12,} params")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Show embed / blocks / head and per-epoch param groups.")
    parser.add_argument("backbone", help="spec, e.g. timm:vit_base_patch16_224 or open_clip:ViT-B-16:openai")
    parser.add_argument("--strategy", help="class name in freeze_embed.strategies or a dotted path to yours")
    parser.add_argument("--strategy-args", default="{}", help="YAML/JSON dict of init args, e.g. '{scale: 0.2}'")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--pretrained", default="false", help="false (default, offline), true, or a checkpoint path")
    parser.add_argument("--embed", nargs="*", help="override the embed parameter prefixes")
    parser.add_argument("--embed-tokens", action="store_true", help="count cls/pos tokens as embed")
    parser.add_argument("--backbone-kwargs", default="{}", help="YAML/JSON dict for the library constructor")
    parser.add_argument("--num-classes", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    pretrained = {"false": False, "true": True}.get(args.pretrained.lower(), args.pretrained)
    try:
        backbone = create_backbone(args.backbone, pretrained, **yaml.safe_load(args.backbone_kwargs))
        head = nn.Linear(backbone.num_features, args.num_classes)
        anatomy = resolve_anatomy(backbone, head, embed=args.embed, embed_tokens=args.embed_tokens)
        strategy = load_strategy(args.strategy, yaml.safe_load(args.strategy_args))
        named = {f"backbone.{n}": p for n, p in backbone.model.named_parameters()}
        named.update({f"head.{n}": p for n, p in head.named_parameters()})
        info = describe(anatomy, named, strategy, args.epochs)
    except (BackboneError, EmbedNotFound, ValueError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        info.pop("num_params")
        print(json.dumps(info))
    else:
        _print(info, named, anatomy.embed_modules)
    return 0


if __name__ == "__main__":
    sys.exit(main())
