"""Values checked where they enter, each refused in one sentence before anything is built.

Left alone, these fail deep inside a library (a negative LR: torch's optimizer, 20-odd frames in; a batch size of
0: the DataLoader) or, worse, do not fail at all (momentum 1 never forgets a gradient; ``max_epochs`` 0 trains
nothing and reports the pretrained model). The CLI checks the optimizer's and the trainer's values from the parsed
config (:func:`check_config`), the data modules check theirs in ``ShiftDataModule.__init__`` and a strategy checks
``max_epochs`` in :meth:`~freeze_embed.strategies.Strategy.check`.

A learning rate of 0 is refused too: it trains nothing, and the run would report the starting model as a result.
"""
from __future__ import annotations

from typing import Any, Optional

from freeze_embed.errors import FreezeEmbedError


class BadValueError(FreezeEmbedError, ValueError):
    """A setting outside the range it can work in."""


def at_least(name: str, value: Any, low: int, hint: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
        raise BadValueError(f"{name} must be an integer of at least {low}, not {value!r}; {hint}.")


def _in_range(name: str, value: Any, ok: bool, need: str, hint: str) -> None:
    if not ok:
        raise BadValueError(f"{name} must be {need}, not {value!r}; {hint}.")


def check_optimizer(init_args: Optional[dict], key: str = "model.optimizer.init_args") -> None:
    """The optimizer's LR, momentum, weight decay and betas, as the parsed config gives them (absent: the class's
    default)."""
    args = dict(init_args or {})
    lr, momentum, wd, betas = (args.get(k) for k in ("lr", "momentum", "weight_decay", "betas"))
    if lr is not None:
        _in_range(f"{key}.lr", lr, isinstance(lr, (int, float)) and lr > 0, "positive",
                  f"give the learning rate, e.g. --{key}.lr 1e-3 (an LR of 0 trains nothing)")
    if momentum is not None:
        _in_range(f"{key}.momentum", momentum, 0 <= momentum < 1, "in [0, 1)",
                  f"e.g. --{key}.momentum 0.9 (the paper's), or 0 for none")
    if wd is not None:
        _in_range(f"{key}.weight_decay", wd, wd >= 0, "0 or more", f"e.g. --{key}.weight_decay 0")
    if betas is not None:
        _in_range(f"{key}.betas", betas, all(0 <= b < 1 for b in betas), "two numbers in [0, 1)",
                  f"e.g. --{key}.betas [0.9,0.999]")


def check_trainer(trainer: Optional[dict]) -> None:
    """``max_epochs``: 0 trains nothing, below -1 means nothing, -1 (forever) needs ``max_steps``."""
    trainer = dict(trainer or {})
    epochs, steps = trainer.get("max_epochs"), trainer.get("max_steps")
    if epochs is None or epochs >= 1 or (epochs == -1 and steps is not None and steps > 0):
        return
    raise BadValueError(f"trainer.max_epochs must be at least 1, not {epochs!r}"
                        + (" without trainer.max_steps (-1 trains forever)" if epochs == -1 else "")
                        + "; e.g. --trainer.max_epochs 10.")


def check_config(config) -> None:
    """Every value :mod:`freeze_embed.run.values` knows, from the CLI's parsed config, before any class is built."""
    model = config.get("model") or {}
    optimizer = model.get("optimizer")
    if optimizer is not None and not isinstance(optimizer, type) and hasattr(optimizer, "get"):
        check_optimizer(_plain(optimizer.get("init_args")))
    trainer = _plain(config.get("trainer"))
    check_trainer(trainer)
    strategy = model.get("strategy")
    epochs = (trainer or {}).get("max_epochs")
    if strategy is not None and epochs is not None and epochs >= 1:
        built_strategy(strategy).check(epochs)


def built_strategy(strategy_config):
    """The strategy the config names (strategies are cheap to build; the model is not)."""
    from jsonargparse import ArgumentParser

    from freeze_embed.strategies import Strategy
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--strategy", type=Strategy)
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # jsonargparse >= 4.49, or older
    return instantiate(parser.parse_object({"strategy": _plain(strategy_config)})).strategy


def _plain(value):
    """A jsonargparse Namespace as a dict (anything else as it is)."""
    return value.as_dict() if hasattr(value, "as_dict") else value
