"""Options every run can use to go faster: ``model.compile`` (``torch.compile``) and ``model.channels_last``.

Both change how the same computation runs, not what it computes: logits and weights equal the default run's within
float tolerance (``tests/test_compile.py``, ``tests/test_channels_last.py``). The fused/foreach optimizer kernels
need no option: :func:`freeze_embed.optim.build_optimizer` picks them on CUDA.

Compiling is in place (``nn.Module.compile``): parameter names, checkpoints and the probe's feature extraction
(which calls ``module.backbone``) are the same as uncompiled, and a checkpoint loaded for prediction or export is
not compiled (this runs in ``FineTuner.setup``, under a trainer). What recompiles when (dynamo guards on each
parameter's ``requires_grad``, the grad mode and the batch shape):

- once for training and once for evaluation (no grad), per set of trained parameters;
- once more when a second batch size appears (the last, smaller batch): from then on the batch size is dynamic;
- gradual unfreezing: at the start of each epoch whose set of trained parameters is new (never per step). The
  recompile limit is raised to fit every epoch's set, so no epoch silently falls back to eager.

``optimizer_in_backward`` works compiled: its hooks run when autograd accumulates each parameter's gradient, outside
the compiled graph.

Channels-last helps convolutions (ConvNeXt, BiT/ResNetV2, torchvision ResNets). For a ViT it is harmless: only the
patch embedding is a convolution; the input is converted and the rest runs as before.
"""
from __future__ import annotations

import inspect
from typing import Optional, Union

import torch
from torch import nn

from freeze_embed.errors import FreezeEmbedError


class AccelerationError(FreezeEmbedError, ValueError):
    """A ``model.compile`` value torch.compile cannot take."""


def compile_options(compile: Union[bool, dict, None]) -> Optional[dict]:
    """``torch.compile`` keyword arguments for ``model.compile`` (``true``: its defaults), or None (off); a bad value
    is one sentence, checked before the backbone is built."""
    if compile is None or compile is False:
        return None
    if compile is True:
        return {}
    if not isinstance(compile, dict):
        raise AccelerationError(f"model.compile must be true, false or a dict of torch.compile arguments (e.g. "
                                f"{{mode: max-autotune}}), not {compile!r}.")
    known = [name for name in inspect.signature(torch.compile).parameters if name != "model"]
    unknown = sorted(set(compile) - set(known))
    if unknown:
        raise AccelerationError(f"model.compile {unknown} {'is' if len(unknown) == 1 else 'are'} not torch.compile "
                                f"argument{'' if len(unknown) == 1 else 's'}; choose from {', '.join(known)}.")
    return dict(compile)


def _to_channels_last(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: an image batch in the module's layout (training, evaluation and the probe's features).
    A module-level function, so the module still pickles (DDP spawn)."""
    x = args[0] if args else None
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return (x.contiguous(memory_format=torch.channels_last), *args[1:])
    return args


def _raise_recompile_limit(needed: int) -> None:
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), needed))


def accelerate(module) -> None:
    """Apply ``module.hparams.channels_last`` and ``compile`` to a FineTuner's backbone and head, once."""
    if getattr(module, "_accelerated", False):
        return
    module._accelerated = True
    if module.hparams.get("channels_last", False):
        module.backbone.to(memory_format=torch.channels_last)
        module.backbone.register_forward_pre_hook(_to_channels_last)
    options = compile_options(module.hparams.get("compile", False))
    if options is None:
        return
    # One graph per trained set and grad mode, two batch sizes (static, then dynamic): no epoch falls back to eager.
    sets = {frozenset(module.trained_in(epoch)) for epoch in range(module.max_epochs)}
    needed = 2 * len(sets) + 4
    if "recompile_limit" in inspect.signature(torch.compile).parameters:  # this compile's own limit
        options = {"recompile_limit": needed, **options}
    else:
        _raise_recompile_limit(needed)
    module.backbone.compile(**options)
    module.head.compile(**options)
