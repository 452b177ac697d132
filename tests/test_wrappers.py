"""Strategies that wrap another (LPFT, L2SP) forward every hook of ``Strategy`` to it: checked hook by hook against
a spy that answers each hook with a value of its own, for every wrapper ``freeze_embed.strategies`` exports, alone
and nested; then end to end, a wrapped L2-SP still adds its penalty and a wrapped Auto-RGN still rescales."""
from __future__ import annotations

import copy
import functools
import inspect
import typing
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from freeze_embed import strategies
from freeze_embed.module import FineTuner
from freeze_embed.optim import SGD
from freeze_embed.strategies import L2SP, LPFT, AutoRGN, FullFineTune, LinearProbe, Strategy

TINY = dict(img_size=16, patch_size=8, depth=2, embed_dim=8, num_heads=2)
ANATOMY, MODULE = object(), SimpleNamespace(  # what a wrapper may read of a module when its inner does the work
    named_parameters=lambda: iter(()), ever_trained=dict, anatomy=SimpleNamespace(head=[], names=[]),
    pretrained_head=False, head=None)


class Spy(Strategy):
    """Every hook answers with a value of its own (none the default) and records its arguments."""

    def __init__(self):
        self.calls: dict[str, tuple] = {}
        self.loaded = None

    def frozen(self, anatomy):
        self.calls["frozen"] = (anatomy,)
        return ["spy.frozen"]

    def lr_scales(self, anatomy):
        self.calls["lr_scales"] = (anatomy,)
        return {"spy.scaled": 0.5}

    def trained_in(self, anatomy, epoch, max_epochs):
        self.calls["trained_in"] = (anatomy, epoch, max_epochs)
        return {"spy.trained": 0.25}

    def epoch_lr_factor(self, epoch, max_epochs):
        self.calls["epoch_lr_factor"] = (epoch, max_epochs)
        return 7.0

    def check(self, max_epochs):
        self.calls["check"] = (max_epochs,)

    def on_fit_start(self, module):
        self.calls["on_fit_start"] = (module,)

    def on_train_epoch_start(self, module, epoch):
        self.calls["on_train_epoch_start"] = (module, epoch)

    def penalty(self, module):
        self.calls["penalty"] = (module,)
        return torch.tensor(3.0)

    def state_dict(self):
        return {"spy": 42}

    def load_state_dict(self, state):
        self.loaded = state

    per_tensor_groups = True

    @property
    def takes_steps(self):
        return False


def _check_state(wrapper, spy):
    fresh = copy.deepcopy(wrapper)
    fresh_spy = inner_of(fresh)
    fresh.load_state_dict(wrapper.state_dict())
    assert fresh_spy.loaded == {"spy": 42}


# Every hook of Strategy: how to call it, and what the wrapper must do with its inner strategy.
CHECKS = {
    "frozen": lambda w, s: w.frozen(ANATOMY) == ["spy.frozen"] and s.calls["frozen"] == (ANATOMY,),
    "lr_scales": lambda w, s: w.lr_scales(ANATOMY) == {"spy.scaled": 0.5} and s.calls["lr_scales"] == (ANATOMY,),
    "trained_in": lambda w, s: (w.trained_in(ANATOMY, 2, 5) == {"spy.trained": 0.25}
                                and s.calls["trained_in"] == (ANATOMY, 2, 5)),
    "epoch_lr_factor": lambda w, s: w.epoch_lr_factor(2, 5) == 7.0 and s.calls["epoch_lr_factor"] == (2, 5),
    "check": lambda w, s: w.check(4) is None and s.calls["check"] == (4,),
    "on_fit_start": lambda w, s: w.on_fit_start(MODULE) is None and s.calls["on_fit_start"] == (MODULE,),
    "on_train_epoch_start": lambda w, s: (w.on_train_epoch_start(MODULE, 3) is None
                                          and s.calls["on_train_epoch_start"] == (MODULE, 3)),
    "penalty": lambda w, s: float(w.penalty(MODULE)) == 3.0 and s.calls["penalty"] == (MODULE,),
    "state_dict": lambda w, s: _check_state(w, s) is None,
    "load_state_dict": lambda w, s: _check_state(w, s) is None,
    "per_tensor_groups": lambda w, s: w.per_tensor_groups is True,
    "takes_steps": lambda w, s: w.takes_steps is False,
}


def hooks() -> set[str]:
    return {n for n in vars(Strategy) if not n.startswith("_")}


def inner_arg(cls) -> typing.Optional[str]:
    """The ``__init__`` argument typed ``Strategy`` (any strategy): the one a wrapper trains as."""
    hints = typing.get_type_hints(cls.__init__)
    for name in inspect.signature(cls.__init__).parameters:
        if hints.get(name) in (Strategy, typing.Optional[Strategy]):
            return name
    return None


BASE = getattr(strategies, "Wrapper", ())  # () on a branch without it: no class is a subclass
EXPORTED = [getattr(strategies, n) for n in strategies.__all__ if getattr(strategies, n) is not BASE]
WRAPPERS = [c for c in EXPORTED if inner_arg(c) or issubclass(c, BASE)]  # typed to take a strategy, or declared
QUIET = {LPFT: {"probe": LinearProbe(logreg=False)}, L2SP: {"alpha": 0.0, "beta": 0.0}}  # no work of their own


def wrap(cls, inner):
    return cls(**{inner_arg(cls): inner}, **copy.deepcopy(QUIET.get(cls, {})))


def inner_of(wrapper):
    while not isinstance(wrapper, Spy):
        wrapper = getattr(wrapper, inner_arg(type(wrapper)))
    return wrapper


def test_every_hook_of_strategy_has_a_check_and_the_spy_overrides_it():
    """A hook added to Strategy later fails here until it has a check below (and every wrapper forwards it)."""
    assert hooks() == set(CHECKS)
    assert all(n in vars(Spy) for n in hooks())
    assert {c.__name__ for c in WRAPPERS} >= {"LPFT", "L2SP"}
    for cls in WRAPPERS:  # one base forwards every hook; the inner strategy is the argument typed Strategy
        assert issubclass(cls, strategies.Wrapper) and cls.inner_arg == inner_arg(cls), cls


@pytest.mark.parametrize("hook", sorted(CHECKS))
@pytest.mark.parametrize("chain", [[c] for c in WRAPPERS] + [[a, b] for a in WRAPPERS for b in WRAPPERS],
                         ids=lambda chain: "(".join(c.__name__ for c in chain) + ")" * (len(chain) - 1))
def test_every_wrapper_forwards_every_hook(chain, hook):
    spy = Spy()
    wrapper = spy
    for cls in reversed(chain):
        wrapper = wrap(cls, wrapper)
    assert CHECKS[hook](wrapper, spy), f"{wrapper!r} does not forward {hook}"


# --- end to end: one real step of SGD -----------------------------------------------------------------------------
def _step(strategy, steps=1):
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 3, (8,))
    model = FineTuner(backbone="timm:vit_tiny_patch16_224", backbone_kwargs=dict(TINY), num_classes=3,
                      strategy=strategy, optimizer=lambda p: SGD(p, lr=0.5, momentum=0.0))
    with torch.no_grad():  # every tensor with a norm, as pretrained weights have (AutoRGN divides by it)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    trainer = L.Trainer(max_epochs=1, max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, train_dataloaders=DataLoader(TensorDataset(x, y), batch_size=8))
    return model, {k: float(v) for k, v in trainer.callback_metrics.items()}


@functools.cache
def _reference(name):
    """The strategies alone, fitted once for every comparison."""
    return _step({"plain": FullFineTune, "l2sp": lambda: L2SP(alpha=0.0, beta=5.0),
                  "rgn": lambda: AutoRGN(num_batches=1)}[name]())


def _head(model):
    return model.head.weight.detach().clone()


NO_PROBE = dict(probe=LinearProbe(logreg=False))


@pytest.mark.parametrize("make", [lambda: LPFT(finetune=L2SP(alpha=0.0, beta=5.0), **copy.deepcopy(NO_PROBE)),
                                  lambda: L2SP(alpha=0.0, beta=5.0, strategy=LPFT(**copy.deepcopy(NO_PROBE)))],
                         ids=["LPFT(L2SP)", "L2SP(LPFT)"])
def test_lpft_and_l2sp_in_either_order_add_the_penalty(make):
    plain, _ = _reference("plain")
    alone, alone_logged = _reference("l2sp")
    wrapped, logged = _step(make())
    assert logged["train/penalty_step"] == pytest.approx(alone_logged["train/penalty_step"])
    assert alone_logged["train/penalty_step"] > 0
    assert torch.allclose(_head(wrapped), _head(alone), atol=1e-6)  # the same step as L2SP alone
    assert not torch.allclose(_head(wrapped), _head(plain), atol=1e-3)  # beta pulled the head towards 0


@pytest.mark.parametrize("make", [lambda: LPFT(finetune=AutoRGN(num_batches=1), **copy.deepcopy(NO_PROBE)),
                                  lambda: L2SP(alpha=0.0, beta=0.0,
                                               strategy=LPFT(finetune=AutoRGN(num_batches=1),
                                                             **copy.deepcopy(NO_PROBE)))],
                         ids=["LPFT(AutoRGN)", "L2SP(LPFT(AutoRGN))"])
def test_a_wrapped_auto_rgn_rescales(make):
    alone, _ = _reference("rgn")
    wrapped, _ = _step(make())
    rgn = inner_of_type(wrapped.tuning, AutoRGN)
    assert rgn.scales and rgn.scales == pytest.approx(alone.tuning.scales)
    lrs = {g["names"][0]: g["initial_lr"] for g in wrapped.optimizers().optimizer.param_groups}
    assert len(lrs) == len(rgn.scales) and min(lrs.values()) < 0.5 * max(lrs.values())  # one group per tensor
    for (n, p), (_, q) in zip(wrapped.named_parameters(), alone.named_parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), n


def inner_of_type(strategy, cls):
    while not isinstance(strategy, cls):
        strategy = strategy.inner
    return strategy
