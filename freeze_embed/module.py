"""FineTuner: backbone + fresh linear head + freezing strategy + optimizer, as one LightningModule.

It trains what the strategy says (the paper's whole method space: fine-tuning, freezing the embedding, linear
probing, ...). The concepts around it have their own files, mixed in: the evaluation sets and their metrics
(``evaluation.py``, ``TEST_PREFIX``), what a checkpoint holds besides the weights (``checkpoint_state.py``), and the
operations a strategy may use at an epoch's start (``epoch_rescale.py``). Strategies see the FineTuner through the
surface ``strategies.base.TunedModule`` names; their instance is ``tuning`` (``trainer.strategy`` is Lightning's).
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Sequence, Union

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from freeze_embed.anatomy import resolve_anatomy
from freeze_embed.backbones import create_backbone
from freeze_embed.checkpoint_state import CheckpointState
from freeze_embed.data.preprocess import resolve_preprocess
from freeze_embed import acceleration, in_backward, zeroshot
from freeze_embed.epoch_rescale import EpochRescale
from freeze_embed.evaluation import TEST_PREFIX, Evaluation
from freeze_embed.run.rng import ResumedRNG
from freeze_embed.optim import (SGD, Group, build_optimizer, cosine_factor, group_names, no_weight_decay_names,
                    optimizer_state_bytes, param_groups, tensor_bytes)
from freeze_embed.strategies import FullFineTune, Strategy

__all__ = ["TEST_PREFIX", "FineTuner"]


class FineTuner(Evaluation, CheckpointState, EpochRescale, L.LightningModule):
    """Fine-tune a pretrained backbone with a freezing strategy (the paper's whole method space).

    Args:
        backbone: spec string, e.g. ``open_clip:ViT-B-16:openai`` or ``timm:vit_base_patch16_224.augreg_in21k``.
        pretrained: ``false`` (random weights), ``true`` (download) or a local checkpoint path.
        num_classes: classes of the new head (linked from the datamodule by the CLI).
        strategy: which parameters train, at which LR scale, per epoch (held as ``tuning``).
        optimizer: any torch optimizer class; default SGD with momentum 0.9 (Appendix A).
        embed: parameter prefixes of the embedding, overriding the family rule (for backbones no rule knows).
        embed_tokens: count class/position tokens as embedding (the paper does not).
        backbone_kwargs: passed to the library's constructor (e.g. timm ``img_size``, ``depth``).
        grad_checkpointing: recompute activations in backward to save memory (timm and open_clip models).
        lr_schedule: ``cosine_per_step`` decays the LR to 0 over all steps (Appendix A's words, the default);
            ``cosine_per_epoch`` is what the authors ran: ``CosineAnnealingLR(T_max=epochs)`` stepped once per epoch
            (``configs/adaptation/*.yaml`` in AnanyaKumar/transfer_learning). A strategy with its own per-epoch
            factor (gradual unfreezing) replaces either.
        optimizer_in_backward: step each parameter inside backward as soon as its gradient is complete, then free
            the gradient (:mod:`freeze_embed.in_backward`: the same weights, less memory; no 16-mixed, gradient
            clipping or accumulation).
        head_init: ``random`` (a fresh linear head, the paper's) or ``zeroshot``: CLIP's zero-shot classifier from
            the dataset's class names and prompt templates, on L2-normalised features (:mod:`freeze_embed.zeroshot`;
            open_clip backbones only), as WiSE-FT starts.
        trust_pickle: read a local ``pretrained`` file with full pickle, which can run code: only for a file you
            trust that ``.safetensors`` or ``weights_only`` loading refuses (by default such a file is refused).
        no_weight_decay: parameters the optimizer's weight decay skips, by kind (``optim.NO_WEIGHT_DECAY``):
            ``norms_and_biases`` (every tensor of at most one dimension), ``tokens`` (class/position tokens). Empty
            (default): all decay, as the authors ran every method; MAE's recipe exempts both.
        compile: ``torch.compile`` the backbone and head (``true``, or a dict of its arguments), in place
            (:mod:`freeze_embed.acceleration` says what recompiles when).
        channels_last: convolutional backbones and their input batches in channels-last memory format.
    """

    def __init__(self, backbone: str = "timm:vit_base_patch16_224.augreg_in21k",
                 pretrained: Union[bool, str] = False, num_classes: int = 2, strategy: Optional[Strategy] = None,
                 optimizer: OptimizerCallable = SGD, embed: Optional[Sequence[str]] = None,
                 embed_tokens: bool = False, backbone_kwargs: Optional[dict[str, Any]] = None,
                 grad_checkpointing: bool = False,
                 lr_schedule: Literal["cosine_per_step", "cosine_per_epoch"] = "cosine_per_step",
                 optimizer_in_backward: bool = False, head_init: Literal["random", "zeroshot"] = "random",
                 trust_pickle: bool = False, no_weight_decay: Sequence[str] = (),
                 compile: Union[bool, dict] = False, channels_last: bool = False):
        super().__init__()
        self.save_hyperparameters(ignore=["strategy", "optimizer"])
        acceleration.compile_options(compile)  # a bad value fails before the backbone is built
        if head_init == "zeroshot":
            zeroshot.check_backbone(backbone)  # before any download
        built = create_backbone(backbone, pretrained, trust_pickle=trust_pickle, **(backbone_kwargs or {}))
        self.backbone = built.model
        self.preprocess = resolve_preprocess(built)  # the backbone's input size, crop and mean/std; in checkpoints
        head = zeroshot.NormalizedLinear if head_init == "zeroshot" else nn.Linear
        self.head = head(built.num_features, num_classes)  # fresh; a zero-shot head is filled in setup("fit")
        self.anatomy = resolve_anatomy(built, self.head, embed=embed, embed_tokens=embed_tokens)
        self.tuning = strategy if strategy is not None else FullFineTune()
        self.no_weight_decay = no_weight_decay_names(dict(self.named_parameters()), self.anatomy, no_weight_decay)
        self.optimizer_factory = optimizer
        self.lr_schedule = lr_schedule
        self.planned_epochs = 1
        if grad_checkpointing:
            setter = getattr(self.backbone, "set_grad_checkpointing", None)
            if setter is None:
                raise ValueError(f"Backbone '{backbone}' does not support gradient checkpointing.")
            setter(True)
        self.eval_names: list[str] = []
        self.eval_metrics = nn.ModuleDict()
        self.trained_now: frozenset[str] = frozenset(self.anatomy.names)  # this epoch's; set by freeze_for
        self._in_optimizer: set[str] = set()
        self._drop_grads: list[nn.Parameter] = []
        # In backward, the step happens in autograd hooks: Lightning only runs backward and counts the step.
        self.optimizer_in_backward = optimizer_in_backward
        self.automatic_optimization = not optimizer_in_backward
        self._in_backward: Optional[in_backward.InBackward] = None
        self._peak_grad_bytes = 0
        self._started_epoch = -1  # the last epoch whose strategy.on_train_epoch_start ran
        self._resumed_rng = ResumedRNG()

    @property
    def pretrained_head(self) -> bool:
        """A zero-shot head is CLIP's text tower's output, pretrained like the backbone (``head_init``)."""
        return self.hparams.head_init == "zeroshot"

    # --- forward ---------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    # --- which parameters train --------------------------------------------------------------------------------
    @property
    def max_epochs(self) -> int:
        """The trainer's, or ``planned_epochs`` before there is one (``parts``, the benchmarks)."""
        epochs = self.trainer.max_epochs if self._trainer is not None else self.planned_epochs
        return epochs if epochs and epochs > 0 else 1

    def trained_in(self, epoch: int) -> dict[str, float]:
        """``{name: LR scale}`` trained in ``epoch`` (the words are defined in ``strategies/base.py``)."""
        return self.tuning.trained_in(self.anatomy, epoch, self.max_epochs)

    def groups_in_epoch(self, epoch: int) -> list[Group]:
        """The optimizer's groups trained in ``epoch`` (multiplier of the base LR, names, whether weight decay skips
        them), the strategy's per-epoch factor applied, from the code training uses (``parts`` prints this)."""
        return group_names(self.trained_in(epoch), self.tuning.epoch_lr_factor(epoch, self.max_epochs),
                           no_weight_decay=self.no_weight_decay)

    def freeze_for(self, epoch: int) -> None:
        """Set ``requires_grad`` for ``epoch``: only the parameters trained in that epoch get gradients.

        Under DDP every parameter the optimizer holds keeps ``requires_grad=True`` (DDP fixes the set of
        synchronised parameters when it wraps the model); those frozen this epoch have their gradients dropped
        before the step instead.
        """
        self.trained_now = frozenset(self.trained_in(epoch))
        distributed = self._trainer is not None and self.trainer.world_size > 1
        self._drop_grads = []
        for name, p in self.named_parameters():
            p.requires_grad_(name in self.trained_now or (distributed and name in self._in_optimizer))
            if p.requires_grad and name not in self.trained_now:
                self._drop_grads.append(p)
        if self._in_backward is not None:
            self._in_backward.set_trained(self.trained_now)  # DDP steps every parameter it holds: gate the rest
        self.train(self.training)  # re-apply eval mode to frozen norm layers

    def train(self, mode: bool = True):
        """Frozen BatchNorm layers keep their pretrained running statistics (``eval`` mode) while training."""
        super().train(mode)
        if mode:
            for name, module in self.named_modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    params = {f"{name}.{p}" for p, _ in module.named_parameters(recurse=False)}
                    if params and not (params & self.trained_now):
                        module.eval()
        return self

    def setup(self, stage: str) -> None:
        acceleration.accelerate(self)  # under a trainer only: a checkpoint loaded for prediction is not compiled
        self.setup_metrics()
        dm = self.trainer.datamodule
        if stage == "fit":
            if self.pretrained_head and dm is not None:  # a resumed run's checkpoint replaces it
                zeroshot.fill_head(self.head, self.hparams, dm)
            self._in_optimizer = set(self.ever_trained())
            self._started_epoch = -1  # a resumed run's checkpoint sets it (on_load_checkpoint runs after setup)
            if self.optimizer_in_backward:
                self.make_optimizer()  # once per fit, before configure_optimizers, which DDP may need (use_ddp)
            self.freeze_for(0)

    def ever_trained(self) -> dict[str, float]:
        """``{name: lr_scale}`` of every parameter any epoch trains: the optimizer holds these from the start, so
        its groups (and a checkpoint's optimizer state) stay the same when gradual unfreezing adds blocks."""
        union: dict[str, float] = {}
        for epoch in range(self.max_epochs):
            for name, scale in self.trained_in(epoch).items():
                if union.setdefault(name, scale) != scale:
                    raise ValueError(f"{type(self.tuning).__name__} gives '{name}' LR scale {union[name]} and "
                                     f"{scale} in different epochs; use epoch_lr_factor for per-epoch LR changes.")
        if not union:
            raise ValueError(f"{type(self.tuning).__name__} trains no parameter.")
        return union

    def make_optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer_in_backward:
            if self._in_backward is not None:
                self._in_backward.detach()  # a second fit (or benchmark) attaches anew
            self._in_backward = in_backward.InBackward(dict(self.named_parameters()), self.ever_trained(),
                                                       self.optimizer_factory, self.tuning.per_tensor_groups,
                                                       self.no_weight_decay)
            return self._in_backward
        groups = param_groups(dict(self.named_parameters()), self.ever_trained(), self.tuning.per_tensor_groups,
                              self.no_weight_decay)
        return build_optimizer(self.optimizer_factory, groups)

    def lr_schedule_fn(self):
        """(multiplier of each group's LR as a function of the clock, ``"step"`` or ``"epoch"``): the one schedule,
        which ``LambdaLR`` runs in the standard step and :meth:`training_step` applies in backward. Per-epoch
        schedules run on the trainer's epoch clock (Lightning steps them once at the end of each epoch), so gradual
        unfreezing's LR factor and its freezing always agree on the epoch."""
        T = self.max_epochs
        own = self.tuning.epoch_lr_factor
        if not self.tuning.takes_steps:
            schedule, interval = (lambda epoch: 0.0), "epoch"
        elif own(0, T) is not None:
            schedule, interval = (lambda epoch: own(min(epoch, T - 1), T)), "epoch"
        elif self.lr_schedule == "cosine_per_epoch":
            schedule, interval = (lambda epoch: cosine_factor(epoch, T)), "epoch"
        else:
            total = max(int(self.trainer.estimated_stepping_batches), 1)
            schedule, interval = (lambda step: cosine_factor(step, total)), "step"
        return schedule, interval

    def lr_factor_now(self) -> float:
        """The schedule's multiplier of every group's LR at the current step (or epoch, for per-epoch schedules)."""
        schedule, interval = self._schedule
        return schedule(self.global_step if interval == "step" else self.current_epoch)

    def configure_optimizers(self):
        self._schedule = self.lr_schedule_fn()
        if self.optimizer_in_backward:
            model = self.trainer.strategy.model  # DDP wrapped it already and has not run a forward yet
            if isinstance(model, torch.nn.parallel.DistributedDataParallel):
                self._in_backward.use_ddp(model)
            return self._in_backward  # built in setup; its LR is set before each step (training_step)
        schedule, interval = self._schedule
        optimizer = self.make_optimizer()
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": LambdaLR(optimizer, schedule), "interval": interval}}

    # --- hooks ------------------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self.tuning.on_fit_start(self)

    def on_train_start(self) -> None:
        self._resumed_rng.on_train_start()

    def on_train_epoch_start(self) -> None:
        self.freeze_for(self.current_epoch)
        trainable = sum(p.numel() for n, p in self.named_parameters() if n in self.trained_now)
        total = sum(p.numel() for p in self.parameters())
        self.log_dict({"params/trainable": float(trainable), "params/frozen": float(total - trainable)},
                      on_step=False, on_epoch=True, sync_dist=False)
        new_epoch = self._started_epoch != self.current_epoch  # resumed mid-epoch: its start is in the checkpoint
        if new_epoch:
            self.tuning.on_train_epoch_start(self, self.current_epoch)
            self._started_epoch = self.current_epoch
        self._resumed_rng.after_epoch_start(self.trainer, new_epoch)

    def configure_callbacks(self):
        # The first hook of fit, before Lightning checks manual optimization with its own, less helpful, message.
        if self.optimizer_in_backward and self.trainer.state.fn == "fit":
            in_backward.check_trainer(self.trainer)
        return []

    def on_before_optimizer_step(self, optimizer) -> None:
        held = tensor_bytes(p.grad for p in self.parameters() if p.grad is not None)
        self._peak_grad_bytes = max(self._peak_grad_bytes, held)  # the standard step holds them all at once
        for p in self._drop_grads:
            p.grad = None

    def on_train_epoch_end(self) -> None:
        optimizer = self.optimizers()
        optimizer = getattr(optimizer, "optimizer", optimizer)
        self.log("optimizer/state_bytes", float(optimizer_state_bytes(optimizer)), on_epoch=True)
        peak = self._in_backward.grad_bytes.peak if self._in_backward is not None else self._peak_grad_bytes
        self.log("optimizer/peak_grad_bytes", float(peak), on_epoch=True)

    # --- steps ------------------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int):
        x, y = batch[0], batch[1]
        if not self.tuning.takes_steps:
            # A logistic-regression probe trains no step. DDP refuses a skipped step (None), so the step is a zero
            # loss at LR 0 (configure_optimizers): no parameter moves, and epochs, checkpoints and DDP run as usual.
            return self._in_backward_step(self(x).sum() * 0.0)
        logits = self(x)
        weight = getattr(self.trainer.datamodule, "class_weights", None)  # ImageFolders' balance: loss
        loss = F.cross_entropy(logits, y, weight=None if weight is None else weight.to(logits))
        acc = (logits.argmax(-1) == y).float().mean()
        self.log_dict({"train/loss": loss, "train/acc": acc}, on_step=True, on_epoch=True, prog_bar=True)
        penalty = self.tuning.penalty(self)
        if penalty is not None:
            self.log("train/penalty", penalty, on_step=True, on_epoch=True)
            loss = loss + penalty
        return self._in_backward_step(loss)

    def _in_backward_step(self, loss: torch.Tensor) -> torch.Tensor:
        """With ``optimizer_in_backward``: the schedule's LR now, then backward (which steps every parameter), then
        the aggregate's no-op step, which Lightning counts as the global step (checkpoints and the clock need it)."""
        if not self.optimizer_in_backward:
            return loss
        self._in_backward.set_lr_factor(self.lr_factor_now())
        self._in_backward.begin_backward()
        self.manual_backward(loss)
        self._in_backward.free_grads()
        self.optimizers().step()
        return loss
