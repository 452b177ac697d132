"""Training speed per method, and the FineTuner's overhead against a bare PyTorch loop.

    python -m freeze_embed.tools.bench.speed --backbone timm:vit_base_patch16_224 --batch 8 --steps 10

For each method, the same model, batch and optimizer are trained twice on in-memory synthetic data: by the Lightning
Trainer's ``fit`` (no logger, checkpointing, progress bar or validation) and by a hand loop doing the same forward,
cross-entropy, zero_grad, backward, optimizer step and per-step LR-scheduler step (for a ``<key>_in_backward`` method,
the per-step LR, then backward, inside which every parameter steps: :mod:`freeze_embed.in_backward`).
Both are timed from the start of one step to the start of the next, the first ``--warmup`` steps excluded; the median
step gives images/s.

``--end_to_end`` times whole epochs of a real run instead: JPEG files in class folders written to a temporary
folder, read by :class:`freeze_embed.data.ImageFolders`' own loader, and the model, trainer and callbacks built
by ``train.py``'s parser (logger, LR monitor, divergence check, last-epoch checkpoint; validation off). The bare
loop trains a copy of the same model over the same loader. Epoch 0 (workers, allocations) is not timed; images/s
is the epoch's images over its seconds, from one epoch's start to the next (epoch-end hooks included).
``--without`` drops parts of the real run, to find what its overhead is made of.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
import warnings
from typing import Optional, Sequence

from freeze_embed.run import methods as registry
from freeze_embed.run.config import DEMO_CONFIG, build, demo_backbone


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


def build_module(method: str, backbone: str, backbone_kwargs: dict, num_classes: int, model_args=None):
    """The benchmarks' one use of the methods registry: (FineTuner, optimizer, name) as ``fit`` sets them up."""
    # model_args: e.g. compile / channels_last, as ``--model.<key>`` of train.py
    return registry.build_module(method, backbone, backbone_kwargs, num_classes=num_classes, **(model_args or {}))


def bare_loop(module, optimizer, loader, device, precision: str, epochs: int = 1):
    """(step start times, epoch start times plus the end) of a bare PyTorch loop: forward, cross-entropy,
    zero_grad, backward, step and the per-step cosine LR, over ``epochs`` passes of ``loader``."""
    import torch
    import torch.nn.functional as F
    from torch.optim.lr_scheduler import LambdaLR
    from freeze_embed.optim import cosine_factor
    module.to(device)
    total = epochs * len(loader)
    in_backward = module.optimizer_in_backward  # the FineTuner sets its per-parameter optimizers' LR likewise
    scheduler = None if in_backward else LambdaLR(optimizer, lambda step: cosine_factor(step, total))
    amp = {"32": None, "bf16-mixed": torch.bfloat16}[precision]
    times, epoch_times = [], []
    for _ in range(epochs):
        _sync(device)
        epoch_times.append(time.perf_counter())
        for batch in loader:
            _sync(device)
            times.append(time.perf_counter())
            x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                loss = F.cross_entropy(module(x), y)
            if in_backward:  # backward only: each parameter steps inside it
                optimizer.set_lr_factor(cosine_factor(len(times) - 1, total))
                optimizer.begin_backward()
                loss.backward()
                continue
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    _sync(device)
    epoch_times.append(time.perf_counter())
    return times, epoch_times


def hand_loop(method: str, loader, device, backbone: str, backbone_kwargs: dict, precision: str, num_classes: int):
    """(step start times, trained module) of a bare PyTorch loop on the FineTuner's model, optimizer, LR schedule."""
    import torch
    torch.manual_seed(0)
    module, optimizer, _ = build_module(method, backbone, backbone_kwargs, num_classes)
    times, _ = bare_loop(module, optimizer, loader, device, precision)
    return times, module


def clock(device):
    """A Lightning callback recording step starts, epoch starts and the end of training, each after a device sync."""
    from lightning.pytorch.callbacks import Callback

    class Clock(Callback):
        def __init__(self):
            self.times, self.epoch_times = [], []

        def _now(self, into: list) -> None:
            _sync(device)
            into.append(time.perf_counter())

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self._now(self.times)

        def on_train_epoch_start(self, trainer, pl_module):
            self._now(self.epoch_times)

        def on_train_end(self, trainer, pl_module):
            self._now(self.epoch_times)

    return Clock()


def lightning_loop(method: str, loader, device, backbone: str, backbone_kwargs: dict, precision: str,
                   num_classes: int, profiler=None, model_args=None):
    """(step start times, trained module) of ``Trainer.fit`` on a FineTuner built the same way."""
    import lightning as L
    import torch
    torch.manual_seed(0)
    module, _, _ = build_module(method, backbone, backbone_kwargs, num_classes, model_args)
    timer = clock(device)
    trainer = L.Trainer(max_epochs=1, accelerator=device.type, devices=1, precision=precision, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[timer], profiler=profiler)
    trainer.fit(module, train_dataloaders=loader)
    _sync(device)
    return timer.times, module


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


def write_images(root: str, n: int, classes: int = 10, size: int = 64, fmt: str = "JPEG") -> None:
    """``n`` images in ``classes`` class folders (ImageFolders' layout), smooth noise so they compress like photos."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = os.path.join(root, f"class_{i % classes}")
        os.makedirs(folder, exist_ok=True)
        coarse = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((size, size), Image.BICUBIC).save(
            os.path.join(folder, f"{i:05d}.{fmt.lower()}"), fmt)


WITHOUT = ("StopOnDivergence", "ModelCheckpoint", "LearningRateMonitor", "logger")


def real_run(method: str, train: str, out: str, epochs: int, batch: int, workers: int, precision: str,
             without: tuple = (), backbone_args: tuple = ()):
    """``train.py fit`` on the demo config and ``method``'s file, data ``ImageFolders(train)``, validation off, built
    by its own parser and not run; ``without`` drops callbacks by class name, and the logger."""
    cli = build([DEMO_CONFIG, registry.path(method)], [
        "--data", "freeze_embed.data.ImageFolders", "--data.init_args.train", train,
        "--data.init_args.batch_size", str(batch), "--data.init_args.num_workers", str(workers),
        "--trainer.max_epochs", str(epochs), "--trainer.limit_val_batches", "0",
        "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.precision", precision, "--test_after_fit", "false",
        "--trainer.default_root_dir", out, "--trainer.logger.init_args.save_dir", out, *backbone_args,
        *(["--trainer.logger", "false"] if "logger" in without else [])])
    trainer = cli.trainer
    trainer.callbacks[:] = [c for c in trainer.callbacks if type(c).__name__ not in without]
    return cli


def _epoch_rates(epoch_times: list, images: int, warmup: int) -> float:
    """Images/s of the median timed epoch."""
    return images / statistics.median([b - a for a, b in zip(epoch_times, epoch_times[1:])][warmup:])


def end_to_end(method: str, epochs: int = 3, images: int = 640, batch: int = 64, workers: int = 2,
               precision: str = "32", repeats: int = 1, warmup: int = 1, without: tuple = (),
               backbone_args: tuple = ()) -> dict:
    """Images/s of whole epochs: the real run (``Trainer.fit``) and a bare loop over the same loader and model."""
    import torch
    with tempfile.TemporaryDirectory() as tmp:
        write_images(os.path.join(tmp, "train"), images)
        hand, light = [], []
        for r in range(repeats):  # alternate, so slow drift of a shared machine hits both
            cli = real_run(method, os.path.join(tmp, "train"), os.path.join(tmp, f"run{r}"), epochs, batch, workers,
                           precision, without, backbone_args)
            module, dm, device = cli.model, cli.datamodule, cli.trainer.strategy.root_device
            seen = len(dm.split(dm.train_split, train=True))
            bare = copy.deepcopy(module).train()  # the same initial weights, before fit touches them
            optimizer = bare.make_optimizer()
            bare.freeze_for(0)
            _, epoch_times = bare_loop(bare, optimizer, dm.train_dataloader(), device, precision, epochs)
            hand.append(_epoch_rates(epoch_times, seen, warmup))
            timer = clock(device)
            cli.trainer.callbacks.append(timer)
            cli.trainer.fit(module, datamodule=dm)
            light.append(_epoch_rates(timer.epoch_times, seen, warmup))
            del cli, module, bare
            torch.cuda.empty_cache() if torch.cuda.is_available() else None
    h, lt = statistics.median(hand), statistics.median(light)
    return {"images_per_epoch": seen, "hand_img_s": h, "lightning_img_s": lt, "ratio": lt / h, "overhead": h / lt - 1}


def run(argv: Optional[Sequence[str]] = None) -> dict:
    """The figures, by method, as the command prints them (tests read them here)."""
    parser = argparse.ArgumentParser(description="Training images/s per method; FineTuner overhead vs bare PyTorch.")
    parser.add_argument("--backbone", default=None,
                        help="spec string; default: the demo's tiny ViT (configs/demo.yaml)")
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
    parser.add_argument("--end_to_end", action="store_true",
                        help="time whole epochs of a real run (image files, ImageFolders' loader) against a bare loop")
    parser.add_argument("--epochs", type=int, default=3, help="end to end: epochs, the first untimed")
    parser.add_argument("--images", type=int, default=640, help="end to end: JPEG files written (10 classes)")
    parser.add_argument("--workers", type=int, default=2, help="end to end: data.init_args.num_workers")
    parser.add_argument("--without", default="",
                        help=f"end to end: drop parts of the real run, of {', '.join(WITHOUT)}")
    args = parser.parse_args(argv)
    without = tuple(w.strip() for w in args.without.split(",") if w.strip())
    if set(without) - set(WITHOUT) or (args.end_to_end and args.epochs < 2):
        parser.error(f"--without takes {', '.join(WITHOUT)}; --end_to_end needs --epochs of at least 2.")
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
    import lightning  # noqa: F401 - sets its own log level on import; quiet it after
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    results = {}
    for m in [m.strip() for m in args.methods.split(",") if m.strip()]:
        if args.end_to_end:
            demo = args.backbone is None and args.backbone_kwargs is None
            results[m] = r = end_to_end(m, args.epochs, args.images, args.batch, args.workers, args.precision,
                                        args.repeats, without=without, backbone_args=() if demo else (
                                            "--model.backbone", backbone, "--model.pretrained", "false",
                                            "--model.backbone_kwargs", json.dumps(kwargs)))
            if not args.json:
                print(f"{m:<34} end to end ({r['images_per_epoch']} JPEGs/epoch, {args.workers} workers): Lightning "
                      f"{r['lightning_img_s']:8.2f} img/s   bare PyTorch {r['hand_img_s']:8.2f} img/s   ratio "
                      f"{r['ratio']:.3f}   FineTuner overhead {100 * r['overhead']:+.1f}%", flush=True)
            continue
        results[m] = measure(m, backbone, kwargs, args.batch, args.steps, args.warmup, size, args.precision,
                             args.device, repeats=args.repeats)
        if not args.json:
            r = results[m]
            print(f"{m:<34} Lightning {r['lightning_img_s']:8.2f} img/s   bare PyTorch "
                  f"{r['hand_img_s']:8.2f} img/s   FineTuner overhead {100 * r['overhead']:+.1f}%", flush=True)
    if args.json:
        print(json.dumps({"methods": results}))
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    from freeze_embed.errors import run_command
    raise SystemExit(run_command(main))
