"""Show a backbone's parts (embed, blocks, head) and, with a strategy, the optimizer's param groups in every epoch.

    python -m freeze_embed.tools.parts timm:vit_base_patch16_224 --strategy FreezeEmbed --epochs 3 [--json]

Random weights by default (``--pretrained false``), so it works offline. Frozen parameters are in no group. The
groups are the FineTuner's own (:meth:`~freeze_embed.module.FineTuner.groups_in_epoch`, the code that builds the
optimizer); ``lr_scale`` is the multiplier of the base LR those parameters get in that epoch (group scale x the
strategy's per-epoch factor, e.g. 41.7 in gradual unfreezing's first epoch); ``--no-weight-decay`` splits off the
groups weight decay skips (``model.no_weight_decay``).
"""
from __future__ import annotations

import argparse
import json
from typing import Optional, Sequence

import yaml
from torch import nn

from freeze_embed.anatomy import Anatomy
from freeze_embed.errors import one_line, run_command
from freeze_embed.run.methods import ConfigError, build_module


def _module(backbone: str, strategy: Optional[str], strategy_args: dict, **model_args):
    """The FineTuner as ``train.py`` builds it (:func:`~freeze_embed.run.methods.build_module`), its strategy named
    as in YAML (``FreezeEmbed`` or a dotted path to a user's subclass)."""
    if strategy:
        model_args["strategy"] = {"class_path": strategy, "init_args": strategy_args}
    try:
        return build_module(None, backbone, **model_args)[0]
    except ConfigError as err:
        if not strategy:
            raise
        raise ConfigError(f"'{strategy}' is not a Strategy class with those arguments; try one of "
                          "freeze_embed.strategies.__all__ or a dotted path to your own subclass "
                          f"({one_line(err.__cause__ or err)}).") from err


def _counter(named: dict[str, nn.Parameter]):
    return lambda names: sum(named[n].numel() for n in names)


def describe(module, with_groups: bool, epochs: int) -> dict:
    """Anatomy and parameter counts of a FineTuner; with ``with_groups``, its optimizer groups in every epoch."""
    anatomy: Anatomy = module.anatomy
    count = _counter(dict(module.named_parameters()))
    total = count(anatomy.names)
    out = {"embed": anatomy.embed, "blocks": anatomy.blocks, "head": anatomy.head,
           "embed_fraction": count(anatomy.embed) / total, "num_params": total}
    if with_groups:
        module.planned_epochs = epochs
        out["epochs"] = [[{"lr_scale": g.lr_scale, "names": g.names, "no_weight_decay": g.no_weight_decay}
                          for g in module.groups_in_epoch(e)] for e in range(epochs)]
        if module.tuning.per_tensor_groups:
            out["note"] = (f"{type(module.tuning).__name__} gives each tensor its own group and sets its LR scale "
                           "at the start of every epoch from the training data (shown: the scales before that).")
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
            exempt = "  no weight decay" if g["no_weight_decay"] else ""
            print(f"  lr_scale {g['lr_scale']:<10.4g} {len(g['names']):>4} tensors, {count(g['names']):>12,} params"
                  f"{exempt}")
    if info.get("note"):
        print(f"\n{info['note']}")


def main(argv: Optional[Sequence[str]] = None) -> int:
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
    parser.add_argument("--no-weight-decay", nargs="*", default=[], metavar="KIND",
                        help="parameters weight decay skips: norms_and_biases, tokens (model.no_weight_decay)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    pretrained = {"false": False, "true": True}.get(args.pretrained.lower(), args.pretrained)
    module = _module(args.backbone, args.strategy, yaml.safe_load(args.strategy_args), pretrained=pretrained,
                     num_classes=args.num_classes, embed=args.embed, embed_tokens=args.embed_tokens,
                     backbone_kwargs=yaml.safe_load(args.backbone_kwargs), no_weight_decay=args.no_weight_decay)
    named = dict(module.named_parameters())
    anatomy = module.anatomy
    info = describe(module, args.strategy is not None, args.epochs)
    if args.json:
        info.pop("num_params")
        print(json.dumps(info))
    else:
        _print(info, named, anatomy.embed_modules)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command(main))
