"""Pretrainer: supervised pretraining of any timm or torchvision backbone, from random weights (Appendix E).

Appendix E pretrains the same BiT ResNet-50 with SGD and with AdamW, then fine-tunes each; the paper gives no
pretraining recipe, so ``configs/pretrain/`` uses a standard one for each optimizer (the sources are cited there).
The schedule is a linear warmup then a cosine to 0, stepped per batch. Weight decay skips biases and norm
parameters (1-d tensors) by default, as timm's ``param_groups_weight_decay`` does (DeiT's AdamW recipe);
``decay_1d: true`` decays every parameter, as torchvision's reference does unless ``--norm-weight-decay`` /
``--bias-weight-decay`` are given (the SGD recipes).

:func:`export_backbone` writes what ``train.py``'s ``model.pretrained`` loads as it is: the backbone's state dict
(plus the pretraining head under the library's classifier name, which the loader drops), and a YAML naming the same
backbone, so ``train.py fit --config <data> --config <method> --config <run>/backbone.yaml`` fine-tunes it.
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional

import lightning as L
import torch
import torch.nn.functional as F
import yaml
from lightning.pytorch.cli import OptimizerCallable
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from freeze_embed.backbones import create_backbone, parse_spec
from freeze_embed.errors import FreezeEmbedError
from freeze_embed.files import atomic_write
from freeze_embed.optim import SGD, cosine_factor
from freeze_embed.run.rng import rng_states, set_rng_states


class PretrainError(FreezeEmbedError, ValueError):
    """A pretraining setting that cannot work; the message says which and what to give instead."""


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR factor: linear from 1/warmup to 1 over ``warmup`` steps (Goyal et al. 2017), then fine-tuning's cosine to
    0 (:func:`freeze_embed.optim.cosine_factor`) over the remaining steps."""
    if step < warmup:
        return (step + 1) / warmup
    return cosine_factor(step - warmup, total - warmup)


def decay_groups(model: nn.Module, decay_1d: bool) -> list[dict]:
    """The optimizer's groups: 1-d tensors (biases, norm parameters) without weight decay unless ``decay_1d``."""
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if decay_1d or p.ndim > 1 else no_decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


class Pretrainer(L.LightningModule):
    """Backbone + linear head trained with cross-entropy on a classification set.

    Args:
        backbone: spec string (``timm:...`` or ``torchvision:...``); random initial weights.
        backbone_kwargs: passed to the library (e.g. timm ``layers``; ``stem: patchify`` for a BiT ResNet).
        num_classes: the pretraining classes (linked from the data by the CLI).
        optimizer: the recipe's optimizer (``configs/pretrain/bit50_sgd.yaml``, ``bit50_adamw.yaml``).
        warmup_epochs: linear warmup length (may be fractional); the cosine runs over the remaining steps.
        decay_1d: also apply weight decay to biases and norm parameters (off by default, as timm and DeiT do; on
            in the SGD recipes, as torchvision's reference).
        label_smoothing: of the cross-entropy.
    """

    def __init__(self, backbone: str = "timm:resnetv2_50x1_bit", backbone_kwargs: Optional[dict[str, Any]] = None,
                 num_classes: int = 1000, optimizer: OptimizerCallable = SGD, warmup_epochs: float = 0.0,
                 decay_1d: bool = False, label_smoothing: float = 0.0):
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer"])
        if parse_spec(backbone).library == "open_clip":
            raise PretrainError(f"Cannot pretrain '{backbone}' here: supervised pretraining takes a timm or "
                                "torchvision backbone (open_clip models are pretrained contrastively).")
        built = create_backbone(backbone, False, **(backbone_kwargs or {}))
        self.library = built.library
        self.backbone = built.model
        self.head = nn.Linear(built.num_features, num_classes)
        self.optimizer_factory = optimizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def training_step(self, batch, batch_idx: int):
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        self.log_dict({"train/loss": loss, "train/acc": (logits.argmax(-1) == y).float().mean()},
                      on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        logits = self(x)
        self.log_dict({"val/loss": F.cross_entropy(logits, y), "val/acc": (logits.argmax(-1) == y).float().mean()},
                      on_epoch=True, prog_bar=True)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(decay_groups(self, self.hparams.decay_1d))
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = total / max(1, self.trainer.max_epochs or 1)
        warmup = int(round(self.hparams.warmup_epochs * per_epoch))
        schedule = LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # --- exact resume: the RNG states travel with the checkpoint (shuffling, dropout) --------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "rng_states" in checkpoint:
            set_rng_states(checkpoint["rng_states"])


def classifier_name(model: nn.Module, library: str) -> str:
    """Where the library's own classifier sits (``create_backbone`` replaced it): its checkpoint key prefix."""
    if library == "timm":
        name = model.pretrained_cfg.get("classifier") or "head"
        return name if isinstance(name, str) else name[0]
    # torchvision: create_backbone swapped the last Linear (fc, heads.head, classifier.N) for an Identity
    return [n for n, m in model.named_modules() if isinstance(m, nn.Identity)][-1]


def export_backbone(module: Pretrainer, out_dir: str) -> tuple[str, str]:
    """Write ``backbone.pth`` (what ``model.pretrained`` loads) and ``backbone.yaml`` (the matching ``model``
    section) into ``out_dir``; returns both paths."""
    os.makedirs(out_dir, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in module.backbone.state_dict().items()}
    prefix = classifier_name(module.backbone, module.library)
    state.update({f"{prefix}.{k}": v.detach().cpu().clone() for k, v in module.head.state_dict().items()})
    pth, cfg = os.path.join(out_dir, "backbone.pth"), os.path.join(out_dir, "backbone.yaml")
    with atomic_write(pth) as f:
        torch.save(state, f)
    model = {"backbone": module.hparams.backbone, "pretrained": os.path.abspath(pth),
             "backbone_kwargs": json.loads(json.dumps(dict(module.hparams.backbone_kwargs or {})))}
    if module.library == "torchvision":  # its loader is strict about the classifier's size
        model["backbone_kwargs"].setdefault("num_classes", module.hparams.num_classes)
    with atomic_write(cfg, "w") as f:
        f.write("# Written by python -m freeze_embed.tools.pretrain: fine-tune this backbone with\n"
                f"#   python train.py fit --config <data> --config <method> --config {cfg}\n")
        yaml.safe_dump({"model": model}, f, sort_keys=False)
    return pth, cfg
