"""Layer-wise gradient norms at the pretrained initialisation (Section 3.2, eq. 3.1, Figure 2; Appendix F).

``G_l = (1/m) sum_t ||g_l(B_t)||_2`` over the first ``m`` training minibatches, with ``g_l(B)`` the gradient of the
mean cross-entropy on ``B`` w.r.t. layer ``l``'s parameters, before any update. Also ``G_l / ||theta_l||`` and
``G_l / sqrt(#params_l)`` (Appendix F). Model and data come from the training YAML, so they are what training builds:

    python -m freeze_embed.tools.analysis.grad_norms --config configs/demo.yaml --batches 8 --out runs/grad_norms

Layers (from :mod:`freeze_embed.anatomy`): ``embed``; for transformers each block's attention half (its pre-norm,
attention, layer scale) and MLP half (pre-norm, MLP, layer scale) as two points, as Figure 2 plots them; for convnets
each block; ``head``. The embedding point is the whole embedding: for CLIP the patch projection and the norm after it
together (``conv1`` + ``ln_pre``), as the authors measured it (AnanyaKumar/transfer_learning,
``unlabeled_extrapolation/models/clip_model.py`` ``get_layers`` puts ``ln_pre`` beside the patch embedding). As in
Appendix F, transformers omit the class/position tokens, and the final norm / projection the anatomy attaches to the
last block. Default minibatch: 32, the authors' batch.

The model is in train mode (dropout, batch statistics), so ``g_l(B_1)`` is exactly the first SGD step's gradient;
``--eval-mode`` uses the pretrained BatchNorm statistics and no dropout instead. Every layer gets a gradient whatever
the config's strategy freezes.
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import re
import sys
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from freeze_embed.errors import run_command

COLUMNS = ["layer", "kind", "index", "G", "G_over_param_norm", "G_over_sqrt_numel", "numel"]
_ATTN, _MLP = re.compile(r"attn|attention"), re.compile(r"mlp|ffn")
_PRE = re.compile(r"^(norm|ln|ls|gamma|layer_?scale)_?([12])$")  # norm1 / ln_1 / ls1 / gamma_1 ...


@dataclass(frozen=True)
class Layer:
    name: str           # embed, blocks.3.attn, blocks.3.mlp, blocks.3, head
    kind: str           # embed, attn, mlp, block, head
    index: int          # the paper's l: embed 0, blocks 1..L, head L+1
    params: tuple       # parameter names of the FineTuner


def _half(name: str) -> Optional[str]:
    """``attn`` or ``mlp`` for a transformer-block parameter, from the first path component that says which."""
    for part in name.split(".")[1:]:
        pre = _PRE.match(part)
        if _ATTN.search(part) or (pre and pre.group(2) == "1"):
            return "attn"
        if _MLP.search(part) or (pre and pre.group(2) == "2"):
            return "mlp"
    return None


def _is_transformer_block(names: list[str]) -> bool:
    parts = [p for n in names for p in n.split(".")[1:]]
    return any(_ATTN.search(p) for p in parts) and any(_MLP.search(p) for p in parts)


def layers(module) -> list[Layer]:
    """The layers of Figure 2, bottom to top, from ``module.anatomy`` (a :class:`~freeze_embed.module.FineTuner`)."""
    anatomy = module.anatomy
    out = [Layer("embed", "embed", 0, tuple(anatomy.embed))]
    for i, block in enumerate(anatomy.blocks, start=1):
        if _is_transformer_block(block):
            for half in ("attn", "mlp"):
                out.append(Layer(f"blocks.{i - 1}.{half}", half, i, tuple(n for n in block if _half(n) == half)))
        else:
            out.append(Layer(f"blocks.{i - 1}", "block", i, tuple(block)))
    out.append(Layer("head", "head", len(anatomy.blocks) + 1, tuple(anatomy.head)))
    return [layer for layer in out if layer.params]


def omitted(module, groups: list[Layer]) -> list[str]:
    """Parameter names in no layer (tokens, the norm after the embedding, final norm; Appendix F)."""
    taken = {n for layer in groups for n in layer.params}
    return [n for n in module.anatomy.names if n not in taken]


def _norm(tensors: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(torch.linalg.vector_norm(t.detach().float())) ** 2 for t in tensors))


def grad_norms(module, batches: Iterable, num_batches: Optional[int] = None, device=None, train_mode: bool = True,
               progress: bool = True) -> pd.DataFrame:
    """eq. 3.1 on the first ``num_batches`` batches ``(x, y, ...)`` of ``batches`` (all when ``None``); no update."""
    groups, named = layers(module), dict(module.named_parameters())
    flags = {n: p.requires_grad for n, p in named.items()}
    was_training = module.training
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    module.to(device).requires_grad_(True)
    module.train(train_mode)
    total = num_batches if num_batches is not None else (len(batches) if hasattr(batches, "__len__") else None)
    sums, m = [0.0] * len(groups), 0
    for batch in tqdm(itertools.islice(batches, num_batches), total=total, desc="gradient norms", disable=not progress):
        x, y = batch[0].to(device), batch[1].to(device)
        module.zero_grad(set_to_none=True)
        F.cross_entropy(module(x), y).backward()  # the training loss, mean over the batch
        for i, layer in enumerate(groups):
            sums[i] += _norm([named[n].grad for n in layer.params if named[n].grad is not None])
        m += 1
    module.zero_grad(set_to_none=True)
    for n, p in named.items():
        p.requires_grad_(flags[n])
    module.train(was_training)
    if m == 0:
        raise ValueError("No training batch to measure gradients on.")
    rows = []
    for layer, s in zip(groups, sums):
        G, numel = s / m, sum(named[n].numel() for n in layer.params)
        theta = _norm([named[n] for n in layer.params])
        rows.append((layer.name, layer.kind, layer.index, G, G / theta if theta else float("nan"),
                     G / math.sqrt(numel), numel))
    return pd.DataFrame(rows, columns=COLUMNS)


def build(cli_args: list[str]):
    """(FineTuner, datamodule ready for ``train_dataloader()``) exactly as ``train.py fit`` builds them."""
    from freeze_embed.run.config import build as build_cli
    cli = build_cli([], cli_args)
    cli.datamodule.setup("fit")
    return cli.model, cli.datamodule


def summary(df: pd.DataFrame) -> str:
    middle = df[df.kind.isin(["attn", "mlp", "block"])]
    lines = []
    for col in ("G", "G_over_param_norm", "G_over_sqrt_numel"):
        embed, med = df.loc[df.kind == "embed", col], middle[col].median()
        if len(embed) and med > 0:
            lines.append(f"  {col:<18} embed / median(middle layers) = {embed.iloc[0] / med:.2f}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description="Layer-wise gradient norms at the pretrained initialisation (eq. 3.1, Figure 2).",
        epilog="Any other argument goes to the training CLI, e.g. --config configs/demo.yaml --model.pretrained false",
        allow_abbrev=False)
    parser.add_argument("--batches", type=int, default=None, help="m, the minibatches averaged (default: one epoch)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="minibatch size (default 32, the authors'; a --data.init_args.batch_size given wins)")
    parser.add_argument("--out", default="runs/grad_norms", help="directory for grad_norms.csv and grad_norms.png")
    parser.add_argument("--eval-mode", action="store_true", help="eval mode (no dropout, BatchNorm running stats)")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--label", default=None, help="figure title (default: the backbone)")
    args, rest = parser.parse_known_args(argv)
    given = any(a.split("=")[0] in ("--data.init_args.batch_size", "--data.batch_size") for a in rest)
    module, dm = build(rest if given else [*rest, "--data.init_args.batch_size", str(args.batch_size)])
    df = grad_norms(module, dm.train_dataloader(), args.batches, args.device, train_mode=not args.eval_mode)
    os.makedirs(args.out, exist_ok=True)
    csv, png = os.path.join(args.out, "grad_norms.csv"), os.path.join(args.out, "grad_norms.png")
    df.to_csv(csv, index=False)
    from freeze_embed.tools.analysis.plots import plot_grad_norms
    plot_grad_norms({args.label or module.hparams.backbone: df}, out=png)
    skipped = omitted(module, layers(module))
    print(df.to_string(index=False, float_format="%.4g"), file=sys.stderr)
    print(f"{summary(df)}\nomitted (Appendix F): {', '.join(skipped) or 'none'}", file=sys.stderr)
    print(f"wrote {csv} and {png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command(main))
