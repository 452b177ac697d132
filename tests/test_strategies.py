"""Exact param groups and LR scales per epoch for every strategy, and what freezing does to a real step."""
import math

import lightning as L
import pytest
import torch
from torch import nn

from freeze_embed.anatomy import EmbedNotFound, resolve_anatomy
from freeze_embed.backbones import create_backbone
from freeze_embed.data import DemoShift
from freeze_embed.module import FineTuner
from freeze_embed.optim import SGD, AdamW, cosine_factor, group_names, optimizer_state_bytes
from freeze_embed.strategies import LPFT, EmbedLRScale, FreezeEmbed, FullFineTune, GradualUnfreeze, LinearProbe

TINY = dict(img_size=32, patch_size=8, depth=4, embed_dim=32, num_heads=2)


@pytest.fixture(scope="module")
def vit():
    b = create_backbone("timm:vit_base_patch16_clip_224", False, **TINY)  # CLIP-style: embed has norm_pre
    return resolve_anatomy(b, nn.Linear(b.num_features, 3))


def groups(strategy, anatomy, epoch=0, epochs=1):
    """What the optimizer gets in ``epoch``: the grouping training uses, with the strategy's epoch factor."""
    plan = strategy.trained_in(anatomy, epoch, epochs)
    return [(s, sorted(names)) for s, names, _ in group_names(plan, strategy.epoch_lr_factor(epoch, epochs))]


def test_full_fine_tune_trains_everything_at_scale_1(vit):
    assert groups(FullFineTune(), vit) == [(1.0, sorted(vit.names))]


def test_freeze_embed_freezes_exactly_the_embedding(vit):
    rest = sorted(n for n in vit.names if n not in vit.embed)
    assert groups(FreezeEmbed(), vit) == [(1.0, rest)]
    assert vit.embed == ["backbone.patch_embed.proj.weight", "backbone.norm_pre.weight", "backbone.norm_pre.bias"]


def test_freeze_embed_not_layer_norm_leaves_ln_pre_trainable(vit):
    trained = groups(FreezeEmbed(freeze_norm=False), vit)[0][1]
    assert "backbone.norm_pre.weight" in trained and "backbone.norm_pre.bias" in trained
    assert "backbone.patch_embed.proj.weight" not in trained


def test_freeze_stem_only_on_convnext():
    b = create_backbone("timm:convnext_atto")
    a = resolve_anatomy(b, nn.Linear(b.num_features, 2))
    assert FreezeEmbed(parts=["stem"]).frozen(a) == ["backbone.stem.0.weight", "backbone.stem.0.bias",
                                                     "backbone.stem.1.weight", "backbone.stem.1.bias"]
    with pytest.raises(EmbedNotFound, match=r"parts \['stages.1'\] are not in the embedding"):
        FreezeEmbed(parts=["stages.1"]).frozen(a)


def test_embed_lr_scale_is_5x_lower_on_embed(vit):
    rest = sorted(n for n in vit.names if n not in vit.embed)
    assert groups(EmbedLRScale(), vit) == [(1.0, rest), (0.2, sorted(vit.embed))]


def test_gradual_unfreeze_blocks_and_multipliers(vit):
    s, T = GradualUnfreeze(), 5
    blocks = vit.blocks  # L = 4: int(t / 4 * 4) = t blocks from the top
    for t in range(T):
        expected = sorted([n for b in blocks[len(blocks) - t:] for n in b] + vit.head)
        assert groups(s, vit, t, T) == [(pytest.approx(math.exp(3.73 * (1 - t / 4))), expected)]
    assert s.epoch_lr_factor(0, T) == pytest.approx(41.68, abs=0.01)
    assert s.epoch_lr_factor(T - 1, T) == 1.0
    # L = 12 blocks over T = 5 epochs: 0, 3, 6, 9, 12 blocks; embed never trains.
    assert [s.num_unfrozen_blocks(12, t, 5) for t in range(5)] == [0, 3, 6, 9, 12]
    assert [s.num_unfrozen_blocks(12, t, 4) for t in range(4)] == [0, 4, 8, 12]
    assert not set(vit.embed) & set(s.trained_in(vit, T - 1, T))


def test_linear_probe_and_lp_ft(vit):
    assert groups(LinearProbe(), vit) == [(1.0, sorted(vit.head))]
    assert groups(LPFT(finetune=FreezeEmbed()), vit) == groups(FreezeEmbed(), vit)
    assert LPFT(finetune=GradualUnfreeze()).epoch_lr_factor(0, 3) == pytest.approx(math.exp(3.73))


def test_paper_optimizer_defaults():
    p = [nn.Parameter(torch.zeros(1))]
    sgd = SGD(p).defaults
    assert (sgd["momentum"], sgd["dampening"], sgd["weight_decay"], sgd["nesterov"]) == (0.9, 0.0, 0.0, False)
    adamw = AdamW(p).defaults
    assert (adamw["weight_decay"], adamw["betas"], adamw["eps"]) == (0.01, (0.9, 0.999), 1e-8)


def test_cosine_goes_from_1_to_0_over_all_steps():
    assert [cosine_factor(s, 4) for s in range(5)] == pytest.approx([1.0, 0.853553, 0.5, 0.146447, 0.0], abs=1e-6)


class GradsAfterBackward(L.Callback):
    """Which parameters hold a gradient right after backward (Lightning frees them when fit ends)."""

    def __init__(self):
        self.has_grad = {}

    def on_after_backward(self, trainer, pl_module):
        self.has_grad = {n: p.grad is not None for n, p in pl_module.named_parameters()}


def _one_epoch(strategy, optimizer, steps=2, epochs=1, backbone="timm:vit_tiny_patch16_224", kw=TINY):
    L.seed_everything(0)
    grads = GradsAfterBackward()
    model = FineTuner(backbone=backbone, backbone_kwargs=dict(kw), num_classes=4, strategy=strategy,
                      optimizer=optimizer)
    dm = DemoShift(train_size=16 * steps, eval_size=16, batch_size=16)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[grads])
    trainer.fit(model, dm)
    model.has_grad = grads.has_grad
    return model, trainer


def test_frozen_params_have_no_grad_and_no_optimizer_state():
    model, trainer = _one_epoch(FreezeEmbed(), SGD)
    opt = trainer.optimizers[0]
    state_params = {id(p) for p in opt.state}
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        frozen = name in model.anatomy.embed
        assert p.requires_grad is not frozen, name
        assert model.has_grad[name] is not frozen, name
        assert (id(p) in held) is not frozen and (id(p) in state_params) is not frozen, name
    trainable = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if n not in model.anatomy.embed)
    assert optimizer_state_bytes(opt) == trainable  # one momentum buffer per trainable tensor


def test_frozen_embedding_does_not_move_and_lr_ends_at_zero():
    L.seed_everything(0)
    before = {n: p.detach().clone() for n, p in FineTuner(
        backbone="timm:vit_tiny_patch16_224", backbone_kwargs=dict(TINY), num_classes=4).named_parameters()}
    model, trainer = _one_epoch(FreezeEmbed(), SGD, steps=3)
    for name, p in model.named_parameters():
        moved = not torch.equal(before[name], p.detach())
        assert moved is (name not in model.anatomy.embed), name
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_embed_lr_scale_sets_group_lrs():
    model, trainer = _one_epoch(EmbedLRScale(0.2), lambda p: SGD(p, lr=0.1), steps=2, epochs=2)
    lrs = sorted(g["initial_lr"] for g in trainer.optimizers[0].param_groups)
    assert lrs == pytest.approx([0.02, 0.1])


def test_gradual_unfreeze_lr_per_epoch_and_no_grad_below():
    lrs = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, *_):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    L.seed_everything(0)
    model = FineTuner(backbone="timm:vit_tiny_patch16_224", backbone_kwargs=dict(TINY), num_classes=4,
                      strategy=GradualUnfreeze(), optimizer=lambda p: SGD(p, lr=0.01))
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False, callbacks=[Record()],
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, DemoShift(train_size=32, eval_size=16, batch_size=16))
    expected = [0.01 * math.exp(3.73 * (1 - t / 2)) for t in range(3) for _ in range(2)]
    assert lrs == pytest.approx(expected)
    # Last epoch trained all 4 blocks (int(2/2*4) = 4) and the head, never the embedding.
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == set(model.anatomy.names) - set(model.anatomy.embed)


def test_frozen_batchnorm_keeps_running_statistics():
    model, _ = _one_epoch(FreezeEmbed(), SGD, backbone="torchvision:resnet18", steps=1, kw={})
    fresh = FineTuner(backbone="torchvision:resnet18", num_classes=4)
    assert torch.equal(model.backbone.bn1.running_mean, fresh.backbone.bn1.running_mean)
    assert torch.equal(model.backbone.layer1[0].bn1.running_var, fresh.backbone.layer1[0].bn1.running_var)
    assert not torch.equal(model.backbone.layer4[1].bn2.running_mean, fresh.backbone.layer4[1].bn2.running_mean)
    model.train()
    assert not model.backbone.bn1.training and model.backbone.layer4[1].bn2.training


def test_embed_lr_scale_moves_the_embedding_exactly_a_fifth_as_far_as_sgd():
    """What training does, not what a strategy says: one step of each from the same start on the same batch."""
    L.seed_everything(0)
    start = {n: p.detach().clone() for n, p in FineTuner(
        backbone="timm:vit_tiny_patch16_224", backbone_kwargs=dict(TINY), num_classes=4).named_parameters()}
    sgd, _ = _one_epoch(FullFineTune(), lambda p: SGD(p, lr=0.1), steps=1)
    scaled, _ = _one_epoch(EmbedLRScale(0.2), lambda p: SGD(p, lr=0.1), steps=1)
    moved_sgd, moved_scaled = dict(sgd.named_parameters()), dict(scaled.named_parameters())
    for name in sgd.anatomy.names:
        a, b = moved_sgd[name].detach() - start[name], moved_scaled[name].detach() - start[name]
        if name in sgd.anatomy.embed:
            assert a.abs().sum() > 0 and torch.allclose(b, 0.2 * a, rtol=1e-5, atol=1e-8), name
        else:
            assert torch.allclose(b, a, rtol=1e-5, atol=1e-8), name


def test_strategies_and_epoch_rescale_never_import_the_fine_tuner():
    """Strategies see the FineTuner only through ``TunedModule``: no import circle module -> strategies -> module."""
    import ast
    from pathlib import Path

    import freeze_embed
    root = Path(freeze_embed.__file__).parent
    for path in [*sorted((root / "strategies").glob("*.py")), root / "epoch_rescale.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
                     if isinstance(node, ast.ImportFrom) else [])
            assert "freeze_embed.module" not in names, path.name


def test_the_fine_tuner_has_every_name_of_the_surface_strategies_see():
    from freeze_embed.strategies.base import TunedModule
    model = FineTuner(backbone="timm:vit_tiny_patch16_224", backbone_kwargs=dict(TINY), num_classes=4)
    surface = set(TunedModule.__annotations__) | {n for n in vars(TunedModule) if not n.startswith("_")}
    assert {"trained_now", "set_lr_scales", "first_batch_gradients"} <= surface
    assert all(callable(getattr(model, n)) for n in vars(TunedModule) if not n.startswith("_"))
    assert model.trained_now == frozenset(model.anatomy.names) and model.pretrained_head is False
    model.tuning = FreezeEmbed()  # the freezing strategy's attribute is not Lightning's trainer.strategy
    model.freeze_for(0)
    assert model.trained_now == frozenset(model.anatomy.names) - set(model.anatomy.embed)
