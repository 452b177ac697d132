"""``model.head_init: zeroshot`` in the FineTuner: the head starts as CLIP's zero-shot classifier of the dataset's
class names, a resumed run keeps its trained head, and a backbone without a text tower gets one sentence."""
import lightning as L
import pytest
import torch

from freeze_embed.data import DemoShift
from freeze_embed.module import FineTuner
from freeze_embed.zeroshot import NormalizedLinear, ZeroShotError, prompts, zeroshot_weights
from model_files import SPEC, TINY_CLIP, tiny_clip_file


def test_zeroshot_head_is_clips_classifier_after_setup(tmp_path):
    clip, path = tiny_clip_file(tmp_path)
    dm = DemoShift(train_size=8, eval_size=8, batch_size=4, backbone=SPEC)
    model = FineTuner(backbone=SPEC, pretrained=path, backbone_kwargs=TINY_CLIP, num_classes=dm.num_classes,
                      head_init="zeroshot")
    assert isinstance(model.head, NormalizedLinear)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=0, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    expected = zeroshot_weights(SPEC, path, *prompts(dm), TINY_CLIP)
    assert torch.equal(model.head.weight, expected) and torch.equal(model.head.bias, torch.zeros(dm.num_classes))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the FineTuner's logits are CLIP's zero-shot logits
        feats = clip.encode_image(x, normalize=True)
        text = expected / expected.norm(dim=-1, keepdim=True)
        assert torch.allclose(model(x), 100.0 * feats @ text.T, atol=1e-4)


def test_zeroshot_head_needs_a_clip_backbone():
    with pytest.raises(ZeroShotError, match="open_clip"):
        FineTuner(backbone="timm:vit_tiny_patch16_224", head_init="zeroshot")
