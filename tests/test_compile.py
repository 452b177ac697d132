"""``model.compile``: the same logits and weights as uncompiled, and no recompilation per step.

Inductor takes minutes to compile on 2 cores, so the runs that count graphs use the ``aot_eager`` backend (dynamo
and AOTAutograd, which decide what recompiles, without code generation); one slow test runs inductor.
"""
from __future__ import annotations

import re

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from freeze_embed.acceleration import AccelerationError, compile_options
from freeze_embed.module import FineTuner
from freeze_embed.strategies import FreezeEmbed, GradualUnfreeze

DEMO_VIT = dict(img_size=32, patch_size=4, depth=4, embed_dim=96, num_heads=3)  # configs/demo.yaml's


def test_compile_values():
    assert compile_options(False) is None and compile_options(True) == {}
    assert compile_options({"mode": "max-autotune", "dynamic": False}) == {"mode": "max-autotune", "dynamic": False}


@pytest.mark.parametrize("value, words", [({"mdoe": "x"}, "['mdoe'] is not torch.compile argument"),
                                          ("yes", "must be true, false or a dict")])
def test_a_bad_compile_value_is_one_sentence_before_the_backbone_is_built(monkeypatch, value, words):
    import freeze_embed.module as module
    monkeypatch.setattr(module, "create_backbone", lambda *a, **k: pytest.fail("built before the check"))
    with pytest.raises(AccelerationError, match=re.escape(words)):
        FineTuner("timm:vit_tiny_patch16_224", compile=value)


class _Graphs(L.Callback):
    """Dynamo's count of compiled graphs after every training step, by epoch."""

    def __init__(self):
        self.by_epoch: dict[int, list[int]] = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        from torch._dynamo.utils import counters
        self.by_epoch.setdefault(trainer.current_epoch, []).append(counters["stats"]["unique_graphs"])


def _fit(strategy, compile=False, epochs=1, steps=3, val=False, callbacks=(), **kwargs):
    torch.manual_seed(0)
    module = FineTuner("timm:vit_tiny_patch16_224", num_classes=3, backbone_kwargs=DEMO_VIT, strategy=strategy,
                       compile=compile, **kwargs)
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(8 * steps, 3, 32, 32, generator=g), torch.randint(0, 3, (8 * steps,), generator=g))
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=1 if val else 0, num_sanity_val_steps=0,
                        callbacks=list(callbacks), deterministic=True)
    trainer.fit(module, DataLoader(data, batch_size=8), DataLoader(data, batch_size=8) if val else None)
    return module, data


@pytest.mark.slow
@pytest.mark.parametrize("in_backward", [False, True], ids=["standard", "in_backward"])
def test_gradual_unfreezing_recompiles_per_epoch_never_per_step(in_backward):
    torch._dynamo.reset()
    graphs = _Graphs()
    compiled, _ = _fit(GradualUnfreeze(), {"backend": "aot_eager"}, epochs=3, callbacks=[graphs],
                       optimizer_in_backward=in_backward)
    eager, _ = _fit(GradualUnfreeze(), False, epochs=3, optimizer_in_backward=in_backward)
    assert compiled.backbone._compiled_call_impl is not None  # the probe's features come from it too
    for epoch, counts in graphs.by_epoch.items():
        assert len(set(counts)) == 1, f"epoch {epoch} recompiled after its first step: {counts}"
    assert graphs.by_epoch[0][0] < graphs.by_epoch[1][0] < graphs.by_epoch[2][0]  # 3 epochs, 3 trained sets
    for (name, a), b in zip(compiled.named_parameters(), eager.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
def test_inductor_logits_and_first_steps_equal_uncompiled():
    torch._dynamo.reset()
    compiled, data = _fit(FreezeEmbed(), True)
    eager, _ = _fit(FreezeEmbed(), False)
    moved = 0
    for (name, a), b in zip(compiled.named_parameters(), eager.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
        moved += a.requires_grad
    assert moved > 0
    x = data.tensors[0][:8]
    with torch.no_grad():
        torch.testing.assert_close(compiled.eval()(x), eager.eval()(x), rtol=1e-4, atol=1e-5)
