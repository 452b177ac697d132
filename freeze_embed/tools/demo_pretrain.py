"""Make the demo's "pretrained" tiny ViT: ``python -m freeze_embed.tools.demo_pretrain``.

The demo should fine-tune a pretrained model, as the paper does, without downloading one. So a tiny timm ViT is
pretrained here with AdamW (like the paper's ViTs) on a related synthetic task: 8-way grating orientation with
random tints, so its features know orientation but have no colour shortcut. The result ships as
``freeze_embed/assets/demo_vit_tiny.pth`` (a plain timm state dict, loaded like any local checkpoint).
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from freeze_embed.backbones import create_backbone
from freeze_embed.run.config import demo_backbone
from freeze_embed.data.demo import make_shift_images
from freeze_embed.errors import run_command
from freeze_embed.files import atomic_write


def pretrain(out: str, n: int = 8000, epochs: int = 6, lr: float = 1e-3, seed: int = 1234) -> float:
    spec, kwargs = demo_backbone()  # configs/demo.yaml defines the demo ViT; this makes its weights
    torch.manual_seed(seed)
    backbone = create_backbone(spec, False, **kwargs)
    head = torch.nn.Linear(backbone.num_features, 8)
    mean = torch.tensor(backbone.mean).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std).view(1, 3, 1, 1)
    images, labels, _ = make_shift_images(n, 8, 1 / 8, seed=seed)
    images = (images - mean) / std
    params = list(backbone.model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    steps = epochs * (n // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    bar = tqdm(total=steps, desc="pretraining demo ViT")
    for _ in range(epochs):
        order = torch.randperm(n)
        for i in range(n // 128):
            idx = order[i * 128:(i + 1) * 128]
            loss = F.cross_entropy(head(backbone.model(images[idx])), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    test_x, test_y, _ = make_shift_images(2000, 8, 1 / 8, seed=seed + 1)
    with torch.no_grad():
        acc = (head(backbone.model((test_x - mean) / std)).argmax(-1) == test_y).float().mean().item()
    with atomic_write(out) as f:
        torch.save(backbone.model.state_dict(), f)
    print(f"8-way orientation accuracy {acc:.3f}; saved {out}")
    return acc


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m freeze_embed.tools.demo_pretrain",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="freeze_embed/assets/demo_vit_tiny.pth")
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args(argv)
    pretrain(args.out, epochs=args.epochs)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command(main))
