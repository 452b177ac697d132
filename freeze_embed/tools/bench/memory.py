"""Peak training memory per method (Section 5 "GPU memory profiling", Table 4).

    python -m freeze_embed.tools.bench.memory --backbone open_clip:ViT-B-16 \
        --methods sgd,sgd_freeze_embed,sgd_freeze_embed_no_momentum,adamw

Methods are keys of the registry ``configs/method/<key>.yaml``; ``<key>_in_backward`` is that method with its step
inside backward (:mod:`freeze_embed.in_backward`: forward + backward only, each gradient freed after its step).

Each method runs in a fresh process (this module, ``--child``) for a few steps of forward, backward and optimizer
step at micro-batch 1 (as the paper; optimizer state exists only after the first step). Peak = CUDA peak allocated
on a GPU, else the process's peak resident memory (VmHWM; it includes ~0.5 GB of Python and libraries, as the
paper's GPU figures include the CUDA context). Next to it the exact bytes of parameters, gradients (trainable
parameters only; with the optimizer in backward, the most held at once) and optimizer state, and the paper's ratios:
AdamW over each method (ViT-B/16: 16% over SGD (freeze-embed), 36% over SGD (freeze-embed, no momentum);
ViT-L/14: 18% and 48%).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Optional, Sequence

from freeze_embed.errors import FreezeEmbedError
from freeze_embed.run import methods as registry
from freeze_embed.run.config import REPO
from freeze_embed.tools.bench import PAPER_METHODS

KEYS = ("peak_bytes", "param_bytes", "grad_bytes", "state_bytes")


def _peak_rss() -> int:
    """Peak resident memory of this process's image since exec (Linux VmHWM), in bytes."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        import resource
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def measure(method: str, backbone: str, backbone_kwargs: Optional[dict] = None, batch: int = 1,
            image_size: int = 224, precision: str = "32", grad_checkpointing: bool = False, steps: int = 3,
            device: Optional[str] = None, num_classes: int = 10) -> dict:
    """Train ``steps`` steps of ``method``; the bytes in :data:`KEYS` plus ``baseline_bytes`` (before the model)."""
    import torch
    import torch.nn.functional as F
    from freeze_embed.backbones import parse_spec
    from freeze_embed.optim import optimizer_state_bytes, tensor_bytes
    from freeze_embed.run.cli import FreezeEmbedCLI  # noqa: F401 - lightning loads before the baseline
    __import__(parse_spec(backbone).library)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = dev.type == "cuda"
    baseline = torch.cuda.memory_allocated(dev) if cuda else _peak_rss()
    torch.manual_seed(0)
    module, optimizer, name = registry.build_module(method, backbone, backbone_kwargs, grad_checkpointing,
                                                    num_classes=num_classes)
    in_backward = module.optimizer_in_backward
    module.to(dev)
    amp = {"32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}[precision]
    scaler = torch.amp.GradScaler(dev.type, enabled=amp is torch.float16)
    x = torch.randn(batch, 3, image_size, image_size, device=dev)
    y = torch.randint(num_classes, (batch,), device=dev)
    grad_bytes, taken, tries = 0, 0, 0
    while taken < steps and tries < steps + 30:  # fp16: steps the loss scaler skips (inf gradients) do not count
        with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = F.cross_entropy(module(x), y)
        if in_backward:  # forward + backward only: each parameter steps inside backward and frees its gradient
            if scaler.is_enabled():
                raise FreezeEmbedError("16-mixed cannot run with the optimizer in backward (no loss scaling).")
            optimizer.begin_backward()
            loss.backward()
            grad_bytes, taken, tries = optimizer.grad_bytes.peak, taken + 1, tries + 1
            continue
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        grad_bytes = tensor_bytes(p.grad for p in module.parameters() if p.grad is not None)
        scale = scaler.get_scale() if scaler.is_enabled() else 1.0
        scaler.step(optimizer)
        scaler.update()
        taken += not scaler.is_enabled() or scaler.get_scale() >= scale
        tries += 1
    if cuda:
        torch.cuda.synchronize(dev)
    return {"peak_bytes": int(torch.cuda.max_memory_allocated(dev)) if cuda else _peak_rss(),
            "param_bytes": tensor_bytes(module.parameters()), "grad_bytes": grad_bytes,
            "state_bytes": optimizer_state_bytes(optimizer), "baseline_bytes": int(baseline), "name": name}


def run_child(method: str, args: argparse.Namespace) -> dict:
    """``measure`` in a fresh interpreter, so each method's peak is its own."""
    cmd = [sys.executable, "-m", "freeze_embed.tools.bench.memory", "--child", method, "--backbone", args.backbone,
           "--batch", str(args.batch), "--precision", args.precision, "--image-size", str(args.image_size),
           "--steps", str(args.steps), "--backbone-kwargs", json.dumps(args.backbone_kwargs or {})]
    cmd += ["--grad-checkpointing"] if args.grad_checkpointing else []
    cmd += ["--device", args.device] if args.device else []
    root = str(REPO)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"method {method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ratios(results: dict, key: str = "peak_bytes") -> list[str]:
    """The paper's sentences: how much more AdamW uses than each other method."""
    if "adamw" not in results:
        return []
    ref, out = results["adamw"][key], []
    for m, r in results.items():
        if m != "adamw" and r[key] > 0:
            pct = 100 * (ref / r[key] - 1)
            out.append(f"AdamW uses {abs(pct):.0f}% {'more' if pct >= 0 else 'less'} than {r.get('name', m)}")
    return out


def table(results: dict) -> str:
    """Peak and exact bytes in MiB; p+g+s = parameters + gradients + optimizer state."""
    cols = ("peak", "params", "grads", "state", "p+g+s")
    width = max([34] + [len(r.get("name", m)) + 2 for m, r in results.items()])
    lines = [f"{'method (MiB)':<{width}}" + "".join(f"{c:>10}" for c in cols)]
    for m, r in results.items():
        values = [r[k] for k in KEYS] + [r["param_bytes"] + r["grad_bytes"] + r["state_bytes"]]
        lines.append(f"{r.get('name', m):<{width}}" + "".join(f"{v / 2 ** 20:>10.1f}" for v in values))
    return "\n".join(lines)


def run(argv: Optional[Sequence[str]] = None) -> dict:
    """The figures, by method, as the command prints them (tests read them here)."""
    parser = argparse.ArgumentParser(description="Peak training memory per method (Table 4).")
    parser.add_argument("--backbone", default="open_clip:ViT-B-16", help="spec string; random weights")
    parser.add_argument("--methods", default=",".join(PAPER_METHODS),
                        help=f"comma-separated keys of configs/method/, each optionally + '{registry.IN_BACKWARD}': "
                             f"{', '.join(registry.keys())}")
    parser.add_argument("--batch", type=int, default=1, help="micro-batch size (the paper profiles 1)")
    parser.add_argument("--precision", default="32", choices=["32", "bf16-mixed", "16-mixed"])
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--backbone-kwargs", type=json.loads, default={}, help="JSON, e.g. '{\"depth\": 2}'")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=3, help="training steps (>= 2: state exists after the first)")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--jobs", type=int, default=1, help="methods measured at once (each in its own process; "
                        "on one GPU they share its memory)")
    parser.add_argument("--json", action="store_true", help='print only {"methods": {method: {bytes}}}')
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.backbone, args.backbone_kwargs, args.batch, args.image_size,
                                 args.precision, args.grad_checkpointing, args.steps, args.device)))
        return {}
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if registry.split_key(m)[0] not in registry.keys()]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {registry.keys()}")
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max(args.jobs, 1)) as pool:  # peaks are per process, so children may overlap
        full = dict(zip(methods, pool.map(lambda m: run_child(m, args), methods)))
    results = {m: {k: r[k] for k in (*KEYS, "baseline_bytes", "name")} for m, r in full.items()}
    if args.json:
        print(json.dumps({"methods": results}))
        return results
    print(f"{args.backbone}, batch {args.batch}, precision {args.precision}"
          f"{', gradient checkpointing' if args.grad_checkpointing else ''}, peak = "
          f"{'CUDA max allocated' if args.device != 'cpu' and _has_cuda() else 'peak RSS (VmHWM)'}")
    print(table(results))
    print("\n".join(ratios(results)))
    base = {m: dict(r, peak_bytes=r["peak_bytes"] - r["baseline_bytes"]) for m, r in full.items()}
    extra = ratios(base)
    if extra and any(r["baseline_bytes"] for r in full.values()):
        print("without what the process held before building the model "
              f"({full[methods[0]]['baseline_bytes'] / 2 ** 20:.0f} MiB): " + "; ".join(extra))
    return results


def _has_cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def main(argv: Optional[Sequence[str]] = None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    from freeze_embed.errors import run_command
    raise SystemExit(run_command(main))
