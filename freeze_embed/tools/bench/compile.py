"""Training steps with ``model.compile`` off and on, side by side in one run (ratios, not a timed test).

    python -m freeze_embed.tools.bench.compile [--steps 6] [--warmup 2] [--only demo|vit_b16]

The demo ViT (configs/demo.yaml's, batch 64 at 32 px) and ViT-B/16 (timm ``vit_base_patch16_224``, batch 8 at 224 px),
random weights, SGD freeze-embed, in-memory synthetic batches, Lightning's ``fit`` without logger, checkpoints or
validation. Each step is timed from the start of one to the start of the next; the first ``--warmup`` steps (where
compiling happens) are excluded from the median and reported as the compile's one-time cost.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Optional, Sequence

CASES = {
    "demo": ("timm:vit_tiny_patch16_224", dict(img_size=32, patch_size=4, depth=4, embed_dim=96, num_heads=3), 64, 32),
    "vit_b16": ("timm:vit_base_patch16_224", {}, 8, 224),
}


def measure(case: str, compile: bool, steps: int, warmup: int) -> dict:
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from freeze_embed.module import FineTuner
    from freeze_embed.strategies import FreezeEmbed
    backbone, kwargs, batch, size = CASES[case]
    torch.manual_seed(0)
    torch._dynamo.reset()
    module = FineTuner(backbone, num_classes=10, backbone_kwargs=kwargs, strategy=FreezeEmbed(), compile=compile)
    n = warmup + steps + 1
    data = TensorDataset(torch.randn(batch * n, 3, size, size), torch.randint(0, 10, (batch * n,)))
    starts: list[float] = []

    class Clock(L.Callback):
        def on_train_batch_start(self, *args):
            starts.append(time.perf_counter())

    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[Clock()])
    trainer.fit(module, DataLoader(data, batch_size=batch))
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    median = statistics.median(gaps[warmup:])
    return {"images_per_s": batch / median, "step_s": median, "warmup_s": sum(gaps[:warmup])}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps after the warm-up")
    parser.add_argument("--warmup", type=int, default=2, help="first steps excluded (compiling happens here)")
    parser.add_argument("--only", choices=sorted(CASES), help="one model only")
    args = parser.parse_args(argv)
    print(f"{'model':<9} {'eager img/s':>12} {'compiled img/s':>15} {'speed-up':>9} {'compile s (one-time)':>21}")
    for case in [args.only] if args.only else list(CASES):
        eager = measure(case, False, args.steps, args.warmup)
        compiled = measure(case, True, args.steps, args.warmup)
        print(f"{case:<9} {eager['images_per_s']:>12.1f} {compiled['images_per_s']:>15.1f} "
              f"{compiled['images_per_s'] / eager['images_per_s']:>8.2f}x "
              f"{compiled['warmup_s'] - eager['warmup_s']:>21.0f}", flush=True)
    return 0


if __name__ == "__main__":
    from freeze_embed.errors import run_command
    raise SystemExit(run_command(main))
