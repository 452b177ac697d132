"""Training speed per method, and the FineTuner's overhead against a bare PyTorch loop.

    python -m freeze_embed.tools.bench.speed --backbone timm:vit_base_patch16_224 --batch 8 --steps 10

For each method, the same model, batch and optimizer are trained twice on in-memory synthetic data: by the Lightning
Trainer's ``fit`` (no logger, checkpointing, progress bar or validation) and by a hand loop doing the same forward,
cross-entropy, zero_grad, backward, optimizer step and per-step LR-scheduler step (for a ``<key>_in_backward`` method,
the per-step LR, then backward, inside which every parameter steps: :mod:`freeze_embed.in_backward`). Both are timed from the start of
one step to the start of the next, the first ``--warmup`` steps excluded; the median step gives images/s.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from typing import Optional

from freeze_embed.run import methods as registry
from freeze_embed.run.config import demo_backbone



def _sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _loader(batch: int, n_batches: int, image_size: int, num_classes: int):
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch * n_batches, 3, image_size, image_size, generator=g)
    y = torch.randint(num_classes, (batch * n_batches,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False, num_workers=0)


def hand_loop(method: str, loader, device, backbone: str, backbone_kwargs: dict, precision: str, num_classes: int):
    """(step start times, trained module) of a bare PyTorch loop on the FineTuner's model, optimizer, LR schedule."""
    import torch
    import torch.nn.functional as F
    from torch.optim.lr_scheduler import LambdaLR
    from freeze_embed.optim import cosine_factor
    torch.manual_seed(0)
    module, optimizer, _ = registry.build_module(method, backbone, backbone_kwargs, num_classes=num_classes)
    module.to(device)
    total = len(loader)
    in_backward = module.optimizer_in_backward
    if in_backward:  # the FineTuner sets the LR of its per-parameter optimizers from the same schedule
        schedule = cosine_factor
    else:
        scheduler = LambdaLR(optimizer, lambda step: cosine_factor(step, total))  # one epoch: the per-step cosine
    amp = {"32": None, "bf16-mixed": torch.bfloat16}[precision]
    times = []
    for x, y in loader:
        _sync(device)
        times.append(time.perf_counter())
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = F.cross_entropy(module(x), y)
        if in_backward:  # backward only: each parameter steps inside it
            optimizer.set_lr_factor(schedule(len(times) - 1, total))
            optimizer.begin_backward()
            loss.backward()
            continue
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    _sync(device)
    return times, module


def lightning_loop(method: str, loader, device, backbone: str, backbone_kwargs: dict, precision: str,
                   num_classes: int, profiler=None):
    """(step start times, trained module) of ``Trainer.fit`` on a FineTuner built the same way."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import Callback

    class Clock(Callback):
        times: list = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            _sync(device)
            self.times.append(time.perf_counter())

    torch.manual_seed(0)
    module, _, _ = registry.build_module(method, backbone, backbone_kwargs, num_classes=num_classes)
    clock = Clock()
    clock.times = []
    trainer = L.Trainer(max_epochs=1, accelerator=device.type, devices=1, precision=precision, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[clock], profiler=profiler)
    trainer.fit(module, train_dataloaders=loader)
    _sync(device)
    return clock.times, module


def _median_step(times: list, warmup: int) -> float:
    steps = [b - a for a, b in zip(times, times[1:])][warmup:]
    return statistics.median(steps)


def measure(method: str, backbone: str, backbone_kwargs: Optional[dict] = None, batch: int = 32, steps: int = 10,
            warmup: int = 3, image_size: int = 224, precision: str = "32", device: Optional[str] = None,
            num_classes: int = 10, repeats: int = 1) -> dict:
    """Median step seconds and images/s of both loops; ``overhead`` = Lightning / hand - 1."""
    import torch
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    loader = _loader(batch, warmup + steps + 1, image_size, num_classes)
    hand, light = [], []
    for _ in range(repeats):  # alternate, so slow drift of a shared machine hits both
        t, _ = hand_loop(method, loader, dev, backbone, backbone_kwargs or {}, precision, num_classes)
        hand.append(_median_step(t, warmup))
        t, _ = lightning_loop(method, loader, dev, backbone, backbone_kwargs or {}, precision, num_classes)
        light.append(_median_step(t, warmup))
    h, lt = statistics.median(hand), statistics.median(light)
    return {"hand_step_s": h, "lightning_step_s": lt, "hand_img_s": batch / h, "lightning_img_s": batch / lt,
            "overhead": lt / h - 1}


def main(argv: Optional[list[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description="Training images/s per method; FineTuner overhead vs bare PyTorch.")
    parser.add_argument("--backbone", default=None, help="spec string; default: the demo's tiny ViT (configs/demo.yaml)")
    parser.add_argument("--backbone-kwargs", type=json.loads, default=None,
                        help="JSON; default: the demo ViT's for the default backbone, else {}")
    parser.add_argument("--image-size", type=int, default=None, help="default: the demo ViT's for it, else 224")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=1, help="alternate hand / Lightning runs this many times")
    parser.add_argument("--methods", default="sgd,sgd_freeze_embed,adamw",
                        help=f"comma-separated keys of configs/method/, each optionally + '{registry.IN_BACKWARD}': "
                             f"{', '.join(registry.keys())}")
    parser.add_argument("--precision", default="32", choices=["32", "bf16-mixed"])
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (1 is steadiest on a shared machine)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    backbone, kwargs, size = args.backbone, args.backbone_kwargs or {}, args.image_size or 224
    if backbone is None:
        backbone, demo_kwargs = demo_backbone()
        kwargs = args.backbone_kwargs if args.backbone_kwargs is not None else demo_kwargs
        size = args.image_size or kwargs.get("img_size", 224)
    warnings.filterwarnings("ignore")
    import logging
    import lightning  # noqa: F401  (sets its own log level on import; quiet it after)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    results = {}
    for m in [m.strip() for m in args.methods.split(",") if m.strip()]:
        results[m] = measure(m, backbone, kwargs, args.batch, args.steps, args.warmup, size, args.precision,
                             args.device, repeats=args.repeats)
        if not args.json:
            r = results[m]
            print(f"{m:<34} Lightning {r['lightning_img_s']:8.2f} img/s   bare PyTorch "
                  f"{r['hand_img_s']:8.2f} img/s   FineTuner overhead {100 * r['overhead']:+.1f}%", flush=True)
    if args.json:
        print(json.dumps({"methods": results}))
    return results


if __name__ == "__main__":
    main()
