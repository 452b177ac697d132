"""Which layers to tune: TrainBlocks (surgical fine-tuning, SubTuning's subsets), LayerDecay (MAE) and AutoRGN,
each against the definition it comes from."""
import copy

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from freeze_embed.anatomy import resolve_anatomy
from freeze_embed.backbones import create_backbone
from freeze_embed.module import FineTuner
from freeze_embed.optim import SGD, cosine_factor
from freeze_embed.strategies import AutoRGN, FreezeEmbed, LayerDecay, TrainBlocks
from freeze_embed.strategies.train_blocks import BlockSpecError, select_blocks
from helpers import mae_get_layer_id_for_vit

TINY = dict(img_size=16, patch_size=8, depth=4, embed_dim=16, num_heads=2)


@pytest.fixture(scope="module")
def vit_b16():
    """ViT-B/16's names and shapes without its 86M weights: the meta device allocates nothing."""
    with torch.device("meta"):
        b = create_backbone("timm:vit_base_patch16_224", False)
        return resolve_anatomy(b, nn.Linear(b.num_features, 5))


@pytest.fixture(scope="module")
def tiny():
    b = create_backbone("timm:vit_tiny_patch16_224", False, **TINY)
    return resolve_anatomy(b, nn.Linear(b.num_features, 3))


# --- TrainBlocks ----------------------------------------------------------------------------------------------
def test_presets_are_thirds_of_the_blocks():
    assert select_blocks("first", 12) == [0, 1, 2, 3]
    assert select_blocks("middle", 12) == [4, 5, 6, 7]
    assert select_blocks("last", 12) == [8, 9, 10, 11]
    assert select_blocks("first", 4) == [0, 1] and select_blocks("middle", 4) == [2] and select_blocks("last", 4) == [3]


def test_indices_negative_indices_and_ranges():
    assert select_blocks([-1], 12) == [11]
    assert select_blocks([0, -2, "3:5"], 12) == [0, 3, 4, 10]
    assert select_blocks("-3:", 12) == [9, 10, 11]
    assert select_blocks([], 12) == []
    with pytest.raises(BlockSpecError, match="block 12 does not exist: this backbone has 12 blocks"):
        select_blocks([12], 12)
    with pytest.raises(BlockSpecError, match="'top' is not a block index"):
        select_blocks(["top"], 12)


def test_train_blocks_freezes_exactly_the_rest(tiny):
    trained = set(tiny.names) - set(TrainBlocks(blocks=[-1]).frozen(tiny))
    assert trained == set(tiny.blocks[3]) | set(tiny.head)
    assert "backbone.norm.weight" in trained  # the final norm is part of the top block
    trained = set(tiny.names) - set(TrainBlocks(blocks="first", embed=True, head=False).frozen(tiny))
    assert trained == set(tiny.embed) | set(tiny.blocks[0]) | set(tiny.blocks[1])
    assert set(tiny.names) - set(TrainBlocks(blocks=[]).frozen(tiny)) == set(tiny.head)  # SGD linear probe


# --- LayerDecay: MAE's util/lr_decay.py, verbatim, on ViT-B/16's names ----------------------------------------
def test_layer_decay_equals_maes_formula_on_vit_b16(vit_b16):
    num_layers = len(vit_b16.blocks) + 1  # MAE: len(model.blocks) + 1
    layer_scales = [0.65 ** (num_layers - i) for i in range(num_layers + 1)]
    scales = LayerDecay(0.65).lr_scales(vit_b16)
    for name in vit_b16.names:
        mae_name = name[len("backbone."):] if name.startswith("backbone.") else name
        expected = layer_scales[mae_get_layer_id_for_vit(mae_name, num_layers)]
        assert scales.get(name, 1.0) == pytest.approx(expected, rel=1e-12), name
    assert scales["backbone.patch_embed.proj.weight"] == pytest.approx(0.65 ** 13)
    assert scales["backbone.blocks.11.mlp.fc2.weight"] == pytest.approx(0.65)
    assert "backbone.norm.weight" not in scales and "head.weight" not in scales  # layer L+1: scale 1


def test_layer_decay_on_a_resnet_puts_the_stem_at_layer_0():
    b = create_backbone("torchvision:resnet18", False)
    a = resolve_anatomy(b, nn.Linear(b.num_features, 2))
    scales = LayerDecay(0.5).lr_scales(a)
    assert scales["backbone.conv1.weight"] == 0.5 ** 7  # 6 blocks (layer2..4 x 2): embed is 7 layers below the head
    assert scales["backbone.layer2.0.conv1.weight"] == 0.5 ** 6
    assert scales["backbone.layer4.1.conv2.weight"] == 0.5


# --- AutoRGN against a hand-computed loop ----------------------------------------------------------------------
class FirstStepLRs(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.lrs = {g["names"][0]: g["lr"] for g in pl_module.optimizers().optimizer.param_groups}


def test_auto_rgn_scales_equal_a_hand_computed_loop():
    torch.manual_seed(0)
    x, y = torch.randn(24, 3, 16, 16), torch.randint(0, 3, (24,))
    loader = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=False)
    model = FineTuner(backbone="timm:vit_tiny_patch16_224", backbone_kwargs=TINY, num_classes=3,
                      strategy=AutoRGN(num_batches=3), optimizer=lambda p: SGD(p, lr=0.1))
    with torch.no_grad():  # timm zero-initialises biases; give every tensor a norm, as pretrained weights have
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    reference = copy.deepcopy(model).train()
    ratios = {n: [] for n, _ in reference.named_parameters()}
    for i, (xb, yb) in enumerate(loader):
        if i == 3:
            break
        loss = F.cross_entropy(reference(xb), yb)
        grads = torch.autograd.grad(loss, list(reference.parameters()))
        for (n, p), g in zip(reference.named_parameters(), grads):
            ratios[n].append(g.norm().item() / p.norm().item())
    mean = {n: sum(r) / len(r) for n, r in ratios.items()}
    expected = {n: v / max(mean.values()) for n, v in mean.items()}

    stop = FirstStepLRs()
    trainer = L.Trainer(max_epochs=1, max_steps=1, callbacks=[stop], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, train_dataloaders=loader)
    assert model.tuning.scales.keys() == expected.keys()
    for n, v in expected.items():
        assert model.tuning.scales[n] == pytest.approx(v, rel=1e-5), n
        assert stop.lrs[n] == pytest.approx(0.1 * v * cosine_factor(0, 1), rel=1e-5), n  # each tensor its own LR
    assert max(model.tuning.scales.values()) == 1.0
    assert len(stop.lrs) == len(expected)  # one optimizer group per tensor


def test_auto_rgn_needs_per_tensor_groups_and_layer_decay_composes_with_nothing_else(tiny):
    assert AutoRGN.per_tensor_groups and not FreezeEmbed.per_tensor_groups
    assert TrainBlocks(blocks=[0]).lr_scales(tiny) == {}


@pytest.mark.slow
def test_auto_rgn_under_two_process_ddp_uses_the_same_scales_on_every_rank(tmp_path):
    """Each rank scores its own shard; the scales are averaged over ranks, else the replicas would diverge."""
    import json
    import subprocess
    import sys

    import yaml
    from helpers import ROOT, tiny_demo_args
    cb = tmp_path / "cb.yaml"
    cb.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "my_strategies.RecordScales", "init_args": {"out": str(tmp_path / "scales")}}]}}))
    args = tiny_demo_args(tmp_path, epochs=2, extra=[
        "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
        "--model.strategy", "freeze_embed.strategies.AutoRGN", "--config", str(cb)])
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT / "tests")}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for epoch in (0, 1):
        a, b = (json.loads((tmp_path / f"scales/rank{r}_epoch{epoch}.json").read_text()) for r in (0, 1))
        assert a == b and max(a["scales"].values()) == 1.0 and min(a["scales"].values()) < 0.5


def test_l2sp_passes_the_epoch_hook_and_per_tensor_groups_to_its_strategy():
    from freeze_embed.strategies import L2SP

    class Recording(AutoRGN):
        def on_train_epoch_start(self, module, epoch):
            self.called = (module, epoch)

    inner = Recording()
    wrapped = L2SP(strategy=inner)
    wrapped.on_train_epoch_start("module", 3)
    assert inner.called == ("module", 3) and wrapped.per_tensor_groups
    assert not L2SP().per_tensor_groups
