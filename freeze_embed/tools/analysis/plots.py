"""Figure 2 style plots of layer-wise gradient norms: embed red squares, head green triangles, other layers black
circles, log-scale y, layers bottom to top on x. One row per backbone, one column per normalisation; the normalised
panels omit the head, as Appendix F does (Figures 4-5, 7-8).

    python -m freeze_embed.tools.analysis.plots runs/gn_vit/grad_norms.csv runs/gn_clip/grad_norms.csv --out fig.png
"""
from __future__ import annotations

import argparse
import os
from typing import Mapping, Optional, Sequence, Union

import pandas as pd

from freeze_embed.errors import run_command

STYLE = {"embed": dict(marker="s", color="red", label="embed"),
         "head": dict(marker="^", color="green", label="head"),
         "middle": dict(marker="o", color="black", label="middle layers")}
VARIANTS = {"G": r"$G_\ell^{init}$ (eq. 3.1)",
            "G_over_param_norm": r"$G_\ell^{init} / \|\theta_\ell\|$",
            "G_over_sqrt_numel": r"$G_\ell^{init} / \sqrt{\mathrm{numel}_\ell}$"}


def plot_grad_norms(tables: Mapping[str, Union[str, pd.DataFrame]], variants: Sequence[str] = tuple(VARIANTS),
                    head: Optional[bool] = None, out: Optional[str] = None):
    """``tables``: {label: grad_norms.csv path or DataFrame}. ``head=None`` shows it in the ``G`` panel only."""
    from matplotlib.figure import Figure  # no pyplot: works headless and displays inline in notebooks

    tables = {k: pd.read_csv(v) if isinstance(v, (str, os.PathLike)) else v for k, v in tables.items()}
    fig = Figure(figsize=(4.2 * len(variants), 3.2 * len(tables)))
    axes = fig.subplots(len(tables), len(variants), squeeze=False)
    for row, (label, df) in zip(axes, tables.items()):
        df = df.reset_index(drop=True)
        for ax, variant in zip(row, variants):
            show_head = head if head is not None else variant == "G"
            for part in ("middle", "embed", "head"):
                kinds = ["attn", "mlp", "block"] if part == "middle" else [part]
                sel = df[df.kind.isin(kinds)]
                if part == "head" and not show_head:
                    continue
                ax.scatter(sel.index, sel[variant], s=28, zorder=3, **STYLE[part])
            ax.set_yscale("log")
            ax.set_title(f"{label}: {VARIANTS[variant]}", fontsize=9)
            ax.set_xlabel("layer (bottom to top)")
            ax.grid(True, which="major", alpha=0.3)
        row[0].set_ylabel("gradient norm")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        fig.savefig(out, dpi=120)
    return fig


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Plot one or more grad_norms.csv files like Figure 2.")
    parser.add_argument("csvs", nargs="+")
    parser.add_argument("--labels", nargs="*", help="one per CSV (default: the CSV's directory name)")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", default="grad_norms.png")
    args = parser.parse_args(argv)
    labels = args.labels or [os.path.basename(os.path.dirname(os.path.abspath(c))) for c in args.csvs]
    if len(labels) != len(args.csvs):
        parser.error("give one label per CSV")
    plot_grad_norms(dict(zip(labels, args.csvs)), args.variants, out=args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command(main))
