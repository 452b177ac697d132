"""``model.channels_last``: the module and its input batches in channels-last layout, the same outputs and steps."""
from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from freeze_embed.module import FineTuner

BACKBONES = {"timm:resnet18": {}, "timm:convnext_atto": {}, "torchvision:resnet18": {},
             "timm:vit_tiny_patch16_224": dict(img_size=64, patch_size=8, depth=2, embed_dim=48, num_heads=3)}


def _fit(backbone, channels_last):
    torch.manual_seed(0)
    module = FineTuner(backbone, num_classes=3, backbone_kwargs=BACKBONES[backbone], channels_last=channels_last)
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(8, 3, 64, 64, generator=g), torch.randint(0, 3, (8,), generator=g))
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, DataLoader(data, batch_size=4))
    return module, data.tensors[0]


@pytest.mark.parametrize("backbone", BACKBONES)
def test_channels_last_equals_the_default_layout(backbone):
    fast, x = _fit(backbone, True)
    default, _ = _fit(backbone, False)
    convs = [m.weight for m in fast.backbone.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    seen = []
    fast.backbone.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    with torch.no_grad():
        # tolerances: the float noise of another summation order
        torch.testing.assert_close(fast.eval()(x), default.eval()(x), rtol=1e-3, atol=5e-4)
    assert seen[0].is_contiguous(memory_format=torch.channels_last)  # the batch was converted too
    for (name, a), b in zip(fast.named_parameters(), default.parameters()):  # two SGD steps
        torch.testing.assert_close(a, b, rtol=1e-4, atol=5e-5, msg=name)  # ~1e-5: the same sums in another order
