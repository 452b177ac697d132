"""Benchmarks of the paper's methods: peak training memory (``memory``, Section 5 Table 4) and speed (``speed``).

A method is a (strategy, optimizer) pair, built through the FineTuner's own ``make_optimizer``, so the
benchmarks measure what training does.
"""
from __future__ import annotations

import functools
from typing import Any, Optional

METHODS = {  # name: (label in the paper, strategy class name, optimizer, optimizer kwargs)
    "sgd": ("SGD", "FullFineTune", "SGD", {}),
    "sgd_fe": ("SGD (freeze-embed)", "FreezeEmbed", "SGD", {}),
    "sgd_fe_nomom": ("SGD (freeze-embed, no momentum)", "FreezeEmbed", "SGD", {"momentum": 0.0}),
    "adamw": ("AdamW", "FullFineTune", "AdamW", {}),
    "adamw_fe": ("AdamW (freeze-embed)", "FreezeEmbed", "AdamW", {}),
    "lars": ("LARS", "FullFineTune", "timm.optim.Lars", {"lr": 1e-3, "momentum": 0.9}),
    "lamb": ("LAMB", "FullFineTune", "timm.optim.Lamb", {}),
}
PAPER_METHODS = ("sgd", "sgd_fe", "sgd_fe_nomom", "adamw")


def method_parts(name: str):
    """(strategy instance, optimizer factory) of method ``name``."""
    if name not in METHODS:
        raise ValueError(f"Unknown method '{name}'; choose from {', '.join(METHODS)}.")
    from .. import optim, strategies
    _, strategy, opt, kwargs = METHODS[name]
    if opt.startswith("timm.optim."):
        import timm.optim
        cls = getattr(timm.optim, opt.rsplit(".", 1)[1])
    else:
        cls = getattr(optim, opt)
    return getattr(strategies, strategy)(), functools.partial(cls, **kwargs)


def build(name: str, backbone: str, backbone_kwargs: Optional[dict[str, Any]] = None, num_classes: int = 10,
          grad_checkpointing: bool = False, pretrained=False):
    """(FineTuner in train mode with the method's ``requires_grad`` flags, its optimizer), as ``fit`` sets them up."""
    from ..module import FineTuner
    strategy, factory = method_parts(name)
    module = FineTuner(backbone=backbone, pretrained=pretrained, num_classes=num_classes, strategy=strategy,
                       optimizer=factory, backbone_kwargs=backbone_kwargs, grad_checkpointing=grad_checkpointing)
    module.apply_plan(0)
    return module.train(), module.make_optimizer()
