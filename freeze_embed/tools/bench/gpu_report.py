"""The GPU report: training images/s and peak CUDA memory of the paper's models and methods, in one command.

    python -m freeze_embed.tools.bench.gpu_report --out docs/perf/

Every cell is ``Trainer.fit`` on a FineTuner built from ``configs/method/<key>.yaml`` (:func:`speed.lightning_loop`)
with random weights (no download) on one synthetic batch already on the GPU: CLIP ViT-B/16 and ViT-L/14 (open_clip),
ConvNeXt-B and BiT-R50 (timm), for the paper's Table 4 methods, fp32 and bf16-mixed, compiled and not. The median
step after ``--warmup`` steps gives images/s; peak = ``torch.cuda.max_memory_allocated`` of the cell. Then the
loader's images/s with 16 workers (:mod:`.data_throughput`'s Living-17-like JPEGs). Cells that would start
after ``--budget_s`` are listed as skipped, so the command ends in under 8 minutes. It writes ``gpu_report.md``,
``gpu_report.csv`` and ``gpu_report.png`` into ``--out``. ``--dry_run`` runs the same plumbing on the CPU with the
demo ViT, one timed step per cell, for the tests.
"""
from __future__ import annotations

import argparse
import csv
import gc
import io
import os
import statistics
import tempfile
import time
from typing import Optional, Sequence

from freeze_embed.errors import FreezeEmbedError, run_command
from freeze_embed.files import atomic_write
from freeze_embed.run.config import demo_backbone

# name: (backbone spec, backbone kwargs, image size, batch, convolutional)
MODELS = {"CLIP ViT-B/16": ("open_clip:ViT-B-16", {}, 224, 64, False),
          "CLIP ViT-L/14": ("open_clip:ViT-L-14", {}, 224, 32, False),
          "ConvNeXt-B": ("timm:convnext_base", {}, 224, 64, True),
          "BiT-R50": ("timm:resnetv2_50x1_bit", {}, 224, 64, True)}
METHODS = ("sgd", "sgd_freeze_embed", "adamw", "sgd_freeze_embed_no_momentum_in_backward")
PRECISIONS = ("32", "bf16-mixed")
COLUMNS = ("model", "method", "precision", "compiled", "batch", "img_s", "peak_gib", "note")


class NoCudaError(FreezeEmbedError):
    """The report measures a GPU."""


def cells(models: dict, compiles: Sequence[bool]) -> list[dict]:
    """Uncompiled cells first, so a short budget still gives every model and method."""
    return [dict(model=name, method=m, precision=p, compiled=c) for c in compiles for p in PRECISIONS
            for name in models for m in METHODS]


class Repeat:
    """The same batch ``n`` times, as a map-style dataset of whole batches."""

    def __init__(self, x, y, n: int):
        self.batch, self.n = (x, y), n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.batch


def run_cell(cell: dict, models: dict, device, steps: int, warmup: int, compile_args) -> dict:
    """images/s and peak memory of one cell, or a note saying why it did not run."""
    import torch
    from torch.utils.data import DataLoader
    from freeze_embed.tools.bench import speed
    spec, kwargs, size, batch, conv = models[cell["model"]]
    row = dict(cell, batch=batch, img_s=None, peak_gib=None, note="")
    model_args = {}
    if cell["compiled"]:
        model_args["compile"] = compile_args
    if conv:
        model_args["channels_last"] = True
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g).to(device)
    y = torch.randint(10, (batch,), generator=g).to(device)
    batches = DataLoader(Repeat(x, y, warmup + steps + 1), batch_size=None)  # a list would be many loaders
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        times, module = speed.lightning_loop(cell["method"], batches, device, spec, kwargs, cell["precision"], 10,
                                             model_args=model_args or None)
    except torch.OutOfMemoryError:
        return dict(row, note="out of memory")
    step = statistics.median([b - a for a, b in zip(times, times[1:])][warmup:])
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None
    del module
    return dict(row, img_s=batch / step, peak_gib=peak, note="channels_last" if "channels_last" in model_args else "")


def loader_rate(workers: int, images: int, batch: int, passes: int) -> float:
    """Images/s of a loader of Living-17-like JPEGs with the paper's training transforms (data_throughput's)."""
    from freeze_embed.tools.bench import data_throughput as dt
    _, fmt, size, _ = dt.FORMATS["living17"]
    with tempfile.TemporaryDirectory() as tmp:
        dm = dt.Files(dt.write_images(tmp, fmt, size, images), "living17", batch_size=batch, num_workers=workers)
        return dt.loader_rate(dm.train_dataloader(), passes)


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def markdown(rows: list[dict], device_name: str, loader: str) -> str:
    import torch
    lines = [f"# GPU report: {device_name}", "",
             f"torch {torch.__version__}; random weights, synthetic batches on the device, median step after warm-up. "
             "Methods from configs/method/ (`_in_backward`: the step inside backward).", "",
             "| model | method | precision | compiled | batch | images/s | peak CUDA GiB | note |",
             "|---|---|---|---|---:|---:|---:|---|"]
    lines += [f"| {r['model']} | {r['method']} | {r['precision']} | {'yes' if r['compiled'] else 'no'} | {r['batch']} "
              f"| {_fmt(r['img_s'], '.1f')} | {_fmt(r['peak_gib'], '.2f')} | {r['note']} |" for r in rows]
    return "\n".join([*lines, "", loader, ""])


def chart(rows: list[dict], title: str) -> bytes:
    """A PNG: images/s and peak memory of every cell that ran, side by side."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ran = [r for r in rows if r["img_s"] is not None]
    labels = [f"{r['model']} {r['method']} {r['precision']}{' compiled' if r['compiled'] else ''}" for r in ran]
    fig, (a, b) = plt.subplots(1, 2, figsize=(14, 1 + 0.25 * max(len(ran), 1)), sharey=True)
    a.barh(labels, [r["img_s"] for r in ran])
    b.barh(labels, [r["peak_gib"] or 0 for r in ran], color="tab:orange")
    a.set_xlabel("training images/s")
    b.set_xlabel("peak CUDA memory (GiB)")
    a.invert_yaxis()
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def write(out: str, rows: list[dict], device_name: str, loader: str) -> list[str]:
    paths = [os.path.join(out, f"gpu_report.{ext}") for ext in ("md", "csv", "png")]
    with atomic_write(paths[0], "w") as f:
        f.write(markdown(rows, device_name, loader))
    with atomic_write(paths[1], "w") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    with atomic_write(paths[2], "wb") as f:
        f.write(chart(rows, f"freeze-embed training on {device_name}"))
    return paths


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="docs/perf/", help="folder for gpu_report.md, .csv and .png")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per cell")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens there)")
    parser.add_argument("--budget_s", type=float, default=400, help="start no cell after this many seconds")
    parser.add_argument("--workers", type=int, default=16, help="the loader's workers")
    parser.add_argument("--dry_run", action="store_true", help="the plumbing on the CPU: demo ViT, one step per cell")
    args = parser.parse_args(argv)
    import torch
    if not args.dry_run and not torch.cuda.is_available():
        raise NoCudaError("The GPU report needs a CUDA GPU and this machine has none (--dry_run runs it on the CPU).")
    import logging
    import warnings
    warnings.filterwarnings("ignore")
    import lightning  # noqa: F401 - sets its own log level on import; quiet it after
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    start = time.perf_counter()
    if args.dry_run:
        spec, kwargs = demo_backbone()
        models = {"demo ViT": (spec, kwargs, kwargs["img_size"], 2, False)}
        device, device_name = torch.device("cpu"), "CPU (dry run)"
        steps, warmup, compile_args, images, workers, passes = 1, 0, {"backend": "eager"}, 16, 0, 1
    else:
        models, device, device_name = MODELS, torch.device("cuda"), torch.cuda.get_device_name()
        steps, warmup, compile_args, images, workers, passes = args.steps, args.warmup, True, 1280, args.workers, 2
    rate = loader_rate(workers, images, 64 if not args.dry_run else 8, passes)
    loader = f"Loader: {rate:.0f} images/s (Living-17 JPEGs, the paper's training transforms, {workers} workers)."
    print(loader, flush=True)
    rows = []
    for cell in cells(models, (False, True)):
        if time.perf_counter() - start > args.budget_s:
            rows.append(dict(cell, batch=models[cell["model"]][3], img_s=None, peak_gib=None,
                             note="skipped: time budget"))
            continue
        rows.append(run_cell(cell, models, device, steps, warmup, compile_args))
        r = rows[-1]
        print(f"{r['model']:<14} {r['method']:<40} {r['precision']:<10} {'compiled' if r['compiled'] else '':<8} "
              f"{_fmt(r['img_s'], '8.1f')} img/s  {_fmt(r['peak_gib'], '6.2f')} GiB  {r['note']}", flush=True)
    for path in write(args.out, rows, device_name, loader):
        print(f"wrote {path}")
    print(f"{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command(main))
