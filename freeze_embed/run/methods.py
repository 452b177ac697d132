"""The registry of methods: ``configs/method/*.yaml``, each defining one of the paper's rows once.

A method file holds the strategy, the optimizer with every argument, ``method.name`` (its row in the paper's tables)
and ``method.lr_grid`` (the LRs the authors swept). Everything that needs a method (the sweep, the benchmarks, the
results tables) reads it through ``train.py``'s parser (:mod:`freeze_embed.run.config`); this module has no parser
of its own: it names the files and builds one method's FineTuner through that one.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from freeze_embed.run.config import CONFIGS, DEMO_CONFIG, ConfigError, build

__all__ = ["ConfigError", "path", "keys", "build_module", "split_key", "IN_BACKWARD"]
METHOD_DIR = CONFIGS / "method"
# A benchmark key ``<key>_in_backward`` is method ``<key>`` with ``--model.optimizer_in_backward true``.
IN_BACKWARD = "_in_backward"


def split_key(key: str) -> tuple[str, bool]:
    """(method file key, whether the optimizer steps in backward) of a benchmark key."""
    if key.endswith(IN_BACKWARD) and key not in keys():
        return key[: -len(IN_BACKWARD)], True
    return key, False


def path(key: str) -> Path:
    """``configs/method/<key>.yaml``, or one sentence naming the methods there are."""
    file = METHOD_DIR / f"{key}.yaml"
    if not file.is_file():
        raise ConfigError(f"Unknown method '{key}': choose from {', '.join(keys())} (files in {METHOD_DIR}).")
    return file


def keys() -> list[str]:
    return sorted(p.stem for p in METHOD_DIR.glob("*.yaml"))


def build_module(key: Optional[str], backbone: str, backbone_kwargs: Optional[dict] = None,
                 grad_checkpointing: bool = False, pretrained=False, num_classes: int = 10, in_backward: bool = False,
                 **model: Any):
    """(FineTuner of method ``key`` in train mode with epoch 0's ``requires_grad`` flags, its optimizer, the method's
    name), as ``fit`` sets them up: for the benchmarks, which measure exactly what training does, and for ``parts``.
    Built by ``train.py``'s parser from the demo config, the method file (none for ``key=None``), then ``model``
    (more ``--model.<key>`` values, e.g. ``strategy``); the demo's data, shrunk to nothing, sizes the head as a
    dataset with ``num_classes`` classes would. ``in_backward`` (or a key ending in ``_in_backward``) steps in
    backward: the optimizer is then the aggregate whose ``step`` does nothing (:mod:`freeze_embed.in_backward`), and
    the name gets " (in backward)"."""
    key, suffixed = split_key(key) if key else (None, False)
    in_backward = in_backward or suffixed
    model = {"backbone": backbone, "pretrained": pretrained, "backbone_kwargs": backbone_kwargs or {},
             "grad_checkpointing": grad_checkpointing, "optimizer_in_backward": in_backward, **model}
    overrides = [*[a for k, v in model.items() for a in (f"--model.{k}", v if isinstance(v, str) else json.dumps(v))],
                 "--data.init_args.num_classes", str(num_classes),  # the demo data, shrunk to nothing: the
                 "--data.init_args.train_size", "1", "--data.init_args.eval_size", "1"]  # benchmarks bring their own
    cli = build([DEMO_CONFIG, *([path(key)] if key else [])], overrides)
    module = cli.model
    optimizer = module.make_optimizer()  # in backward: attached to the parameters, and gated from freeze_for on
    module.freeze_for(0)
    name = cli.config.method.name or ""
    return module.train(), optimizer, name + (" (in backward)" if in_backward else "")
