"""The optimizer step inside backward: each parameter steps as soon as its gradient is complete, then drops it.

The paper's case for SGD is memory. Bytes per trained parameter in fp32 (weights + gradients + optimizer state):

    ============================  standard step  in backward
    AdamW                         16             12 + one gradient at a time
    SGD (momentum 0.9)            12              8 + one gradient at a time
    SGD (no momentum)              8              4 + one gradient at a time
    ============================  =============  ===========

Gradients are 4 of those bytes; stepping in backward frees each as soon as its parameter has stepped, so at most
one parameter's gradient is alive at a time (on one process). This is the PyTorch tutorial "How to save memory by
fusing the optimizer step into the backward pass" (``Tensor.register_post_accumulate_grad_hook``) and torchtune's
``OptimizerInBackwardWrapper``. Under DDP a gradient must be all-reduced before its step: :meth:`InBackward.use_ddp`
swaps the hooks for a DDP communication hook that all-reduces each bucket, then steps its parameters. (This is what
``torch.distributed.optim._apply_optimizer_in_backward`` asks DDP to do, but DDP's own hook for it opens a device
stream, ``torch.Stream()``, and fails on a CPU-only gloo run; DDP keeps its gradient buckets, so under DDP the saving
is the optimizer's, not the gradients'.)

When to use it: a model that only just does not fit, above all with SGD without momentum, where gradients are half
of what training holds. Limits (refused by :func:`check_trainer` before training starts): one device or DDP (FSDP,
DeepSpeed and the other distributed strategies shard or wrap parameters their own way), no loss scaling (16-mixed:
the step would run before the scaler sees an inf), no clipping by global norm (it needs every gradient before any
step), no gradient accumulation (the step happens at every backward). Every parameter gets its own optimizer, so an
optimizer whose step couples parameters (a global norm, a shared trust ratio over groups) would not be the same
method; LARS and LAMB compute their ratios per parameter, so they are.

Exactness: every per-parameter optimizer is the configured class with the group's ``lr_scale`` (the same call as
``optim.build_optimizer``), and reads its LR at each step from :class:`InBackward`'s param groups, which the same
``LambdaLR`` as the standard step drives; so the weights equal the standard step's (fp32, CPU).
"""
from __future__ import annotations

import functools
import warnings
from typing import Callable, Collection, Iterable

import torch
import torch.distributed as dist
from torch import nn

from freeze_embed.errors import FreezeEmbedError
from freeze_embed.optim import build_optimizer, param_groups, tensor_bytes

__all__ = ["InBackward", "InBackwardUnsupported", "check_precision", "check_trainer"]


_GROUP_KEYS = ("lr", "initial_lr", "lr_scale", "base_lr")


class InBackwardUnsupported(FreezeEmbedError):
    """A trainer setting that needs every gradient before any step."""


def check_precision(precision) -> None:
    """Loss scaling must see every gradient for an inf before any step. The CLI checks the precision asked for
    too: on CPU Lightning silently runs 16-mixed as bf16-mixed, and a config refused on a GPU must fail anywhere."""
    if str(precision) in ("16-mixed", "16"):
        raise InBackwardUnsupported(
            "model.optimizer_in_backward cannot run with precision 16-mixed: the loss scaler must see every gradient "
            "for an inf before any step, but each parameter steps inside backward; use precision bf16-mixed.")


def check_trainer(trainer) -> None:
    """One sentence per setting that cannot work when each parameter steps inside backward."""
    from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, SingleDeviceStrategy, XLAStrategy
    strategy = trainer.strategy
    if not (isinstance(strategy, SingleDeviceStrategy) or (isinstance(strategy, DDPStrategy) and not isinstance(
            strategy, (DeepSpeedStrategy, XLAStrategy)))):
        raise InBackwardUnsupported(
            f"model.optimizer_in_backward cannot run under {type(strategy).__name__}: only DDP is taught to step "
            "after each bucket's all-reduce; use trainer.strategy ddp (or one device) or turn optimizer_in_backward "
            "off.")
    check_precision("16-mixed" if getattr(trainer.precision_plugin, "scaler", None) is not None else trainer.precision)
    if trainer.gradient_clip_val:
        raise InBackwardUnsupported(
            "model.optimizer_in_backward cannot clip gradients by global norm (trainer.gradient_clip_val): the norm "
            "needs every gradient before any step; remove gradient_clip_val or turn optimizer_in_backward off.")
    if trainer.accumulate_grad_batches != 1:
        raise InBackwardUnsupported(
            "model.optimizer_in_backward cannot accumulate gradients (trainer.accumulate_grad_batches > 1): each "
            "parameter steps in every backward; use a larger data.batch_size or turn optimizer_in_backward off.")


class _GradBytes:
    """Bytes of gradients alive now and the most alive at once (``optimizer/peak_grad_bytes``)."""

    def __init__(self):
        self.alive = self.peak = 0

    def add(self, grad: torch.Tensor) -> None:
        self.alive += tensor_bytes([grad])
        self.peak = max(self.peak, self.alive)


@functools.lru_cache(maxsize=None)
def _gated(cls: type) -> type:
    """``cls`` whose ``step`` reads the LR of its :class:`InBackward` group and does nothing (no update, no state
    change) for a parameter not trained this epoch: under DDP those keep ``requires_grad`` and DDP's hook steps them
    anyway (the standard path drops their gradients instead, ``FineTuner.on_before_optimizer_step``)."""

    class Gated(cls):
        trained = True
        source: dict = {}  # the InBackward param group this parameter belongs to
        counter: _GradBytes
        owner: "InBackward"
        name: str

        @torch.no_grad()
        def step(self, closure=None):
            grad = self.param_groups[0]["params"][0].grad
            if grad is not None:
                self.counter.add(grad)
                self.owner.grad_sums[self.name] = grad.sum()  # read once backward ends (divergence), no sync here
            if not self.trained or self.owner.skip_steps:
                return None
            self.param_groups[0]["lr"] = self.source["lr"]
            return super().step(closure)

    Gated.__name__ = Gated.__qualname__ = f"InBackward{cls.__name__}"
    return Gated


class InBackward(torch.optim.Optimizer):
    """One optimizer per trained parameter, stepped inside backward; this object is what Lightning holds.

    Its param groups are the standard optimizer's (``optim.param_groups``: one per LR scale, ``lr`` = base LR x
    ``lr_scale``), so ``LambdaLR`` and the LR monitor drive and read it as they would the standard optimizer; its
    ``step`` does nothing (the parameters stepped in backward) but lets Lightning count the step. Its state dict is
    the per-parameter optimizers' state dicts by parameter name, so a checkpoint resumes exactly.
    """

    def __init__(self, named_params: dict[str, nn.Parameter], plan: dict[str, float],
                 factory: Callable[[Iterable], torch.optim.Optimizer], per_tensor: bool = False,
                 no_weight_decay: Collection[str] = frozenset()):
        groups = param_groups(named_params, plan, per_tensor, no_weight_decay)
        super().__init__(groups, {"lr": 0.0})
        self.grad_bytes = _GradBytes()
        self.grad_sums: dict[str, torch.Tensor] = {}  # this backward's, for freeze_embed.run.divergence
        self.skip_steps = False  # set by divergence.StopOnDivergence before a backward whose loss is not finite
        self.per_param: dict[str, torch.optim.Optimizer] = {}
        self._handles: list = []
        flags = {name: p.requires_grad for name, p in named_params.items()}
        # the standard step's groups: their LRs and weight decays
        reference = build_optimizer(factory, param_groups(named_params, plan, per_tensor, no_weight_decay))
        if reference.defaults.get("max_grad_norm") is not None:  # timm's Lamb clips by the norm of all gradients
            warnings.warn(f"{type(reference).__name__}(max_grad_norm={reference.defaults['max_grad_norm']}) in "
                          "backward clips each parameter by its own gradient norm, not by the global norm; set "
                          "max_grad_norm to null for the same method as the standard step.", stacklevel=2)
        for group, built in zip(self.param_groups, reference.param_groups):
            group["lr"] = group["initial_lr"] = built["lr"]  # base LR x lr_scale, as build_optimizer sets it
            if "weight_decay" in built:
                group["weight_decay"] = built["weight_decay"]
            for name, p in zip(group["names"], group["params"]):
                p.requires_grad_(True)  # a hook needs it; parameters frozen this epoch (gradual) get it back below
                self._attach(name, p, group, factory)
        for name, p in named_params.items():
            p.requires_grad_(flags[name])

    def _attach(self, name: str, p: nn.Parameter, group: dict, factory) -> None:
        def make(params, **_):
            own = {k: group[k] for k in ("lr_scale", "weight_decay") if k in group}  # as optim.param_groups
            opt = build_optimizer(factory, [{"params": list(params), "names": [name], **own}])
            opt.__class__ = _gated(type(opt))  # same object and state, a step that can be switched off
            opt.source, opt.counter, opt.owner, opt.name = group, self.grad_bytes, self, name
            self.per_param[name] = opt
            return opt

        opt = make([p])
        counter = self.grad_bytes

        def step_then_free(param: torch.Tensor) -> None:
            # The tutorial's hook: the gradient is complete here; step, then free it at once.
            opt.step()
            if param.grad is not None:
                counter.alive -= tensor_bytes([param.grad])
                param.grad = None

        self._handles.append(p.register_post_accumulate_grad_hook(step_then_free))

    def use_ddp(self, ddp) -> None:
        """Step after DDP's all-reduce: call once DDP wraps the model, before its first forward."""
        for handle in self._handles:  # they would step before the all-reduce
            handle.remove()
        self._handles = []
        by_param = {id(opt.param_groups[0]["params"][0]): opt for opt in self.per_param.values()}
        used: set[int] = set()  # parameters that got a gradient on this rank in this backward
        if ddp.find_unused_parameters:
            for opt in self.per_param.values():
                self._handles.append(opt.param_groups[0]["params"][0].register_post_accumulate_grad_hook(
                    lambda p: used.add(id(p))))

        def allreduce_then_step(process_group, bucket):
            # The mean gradient, as DDP's default allreduce_hook. With find_unused_parameters, a parameter no rank
            # used holds zeros in the bucket: the standard step skips it (its .grad stays None), so it must not
            # step here (weight decay and momentum would move it). Whether any rank used it rides the same
            # all-reduce, one flag per parameter.
            params, buffer = bucket.parameters(), bucket.buffer()
            flags = [id(p) in used or not ddp.find_unused_parameters for p in params]
            used.difference_update(id(p) for p in params)
            world = dist.get_world_size(process_group)
            flat = torch.cat([buffer / world, torch.tensor(flags, dtype=buffer.dtype, device=buffer.device)])

            def step(fut):
                reduced = fut.value()[0]
                buffer.copy_(reduced[:buffer.numel()])
                for p, g, any_rank in zip(params, bucket.gradients(), reduced[buffer.numel():].tolist()):
                    if id(p) in by_param and any_rank > 0:
                        p.grad = g
                        by_param[id(p)].step()
                return buffer
            return dist.all_reduce(flat, group=process_group, async_op=True).get_future().then(step)

        ddp.register_comm_hook(ddp.process_group, allreduce_then_step)

    def free_grads(self) -> None:
        """After backward: DDP writes the reduced gradients back to ``.grad``; they are no longer needed."""
        for opt in self.per_param.values():
            opt.param_groups[0]["params"][0].grad = None

    def set_trained(self, names: Iterable[str]) -> None:
        """Only parameters trained this epoch step (``FineTuner.freeze_for``)."""
        names = set(names)
        for name, opt in self.per_param.items():
            opt.trained = name in names

    def set_lr_factor(self, factor: float) -> None:
        """The schedule's multiplier now; the same product as ``LambdaLR`` (``initial_lr * factor``)."""
        for group in self.param_groups:
            group["lr"] = group["initial_lr"] * factor

    def begin_backward(self) -> None:
        self.grad_bytes.alive = 0  # DDP frees its gradients after backward, outside the hook's count
        self.grad_sums = {}

    def gradient_flags(self) -> tuple[list[str], torch.Tensor]:
        """The names of the parameters that got a gradient in the last backward, in the optimizer's order, and one bool
        per name: its gradient's sum was not finite (``freeze_embed.run.divergence``; no host sync)."""
        names = [n for n in self.per_param if n in self.grad_sums]
        if not names:
            return [], torch.zeros(0, dtype=torch.bool)
        return names, ~torch.isfinite(torch.stack([self.grad_sums[n].float() for n in names]))

    @torch.no_grad()
    def step(self, closure=None):
        """Nothing to do: every parameter stepped in backward. Lightning counts this call as the global step."""
        return closure() if closure is not None else None

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass  # gradients were freed in backward

    def state_bytes(self) -> int:
        from freeze_embed.optim import optimizer_state_bytes
        return sum(optimizer_state_bytes(opt) for opt in self.per_param.values())

    def state_dict(self) -> dict:
        """Each group's LR and what :mod:`~freeze_embed.epoch_rescale` wrote (its ``lr_scale``, ``initial_lr``,
        ``base_lr``): a run resumed mid-epoch continues at this epoch's scales, not at the ones it was built with."""
        return {"in_backward": {name: opt.state_dict() for name, opt in self.per_param.items()},
                "groups": [{k: g[k] for k in _GROUP_KEYS if k in g} for g in self.param_groups]}

    def load_state_dict(self, state_dict: dict) -> None:
        saved = state_dict.get("in_backward")
        if saved is None or set(saved) != set(self.per_param):
            raise FreezeEmbedError("The checkpoint's optimizer state is not an optimizer_in_backward run's with the "
                                   "same trained parameters; resume with the model.optimizer_in_backward it was "
                                   "saved with.")
        for name, opt in self.per_param.items():
            opt.load_state_dict(saved[name])
        for group, saved_group in zip(self.param_groups, state_dict.get("groups", [])):
            group.update(saved_group)
        for group, lr in zip(self.param_groups, state_dict.get("lrs", [])):  # checkpoints written before "groups"
            group["lr"] = lr

    def detach(self) -> None:
        """Remove the hooks (before attaching anew: a second fit, a benchmark's second build)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
