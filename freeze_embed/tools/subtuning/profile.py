"""The fine-tuning profile (SubTuning, Figure 1): the score of training each single block (plus the head) alone,
with the head-only (linear probe by SGD) and all-blocks trials as horizontal lines when they were trained."""
from __future__ import annotations

import os
from typing import Mapping, Optional


def plot_profile(singles: Mapping[int, float], num_blocks: int, metric: str, out: str,
                 head_only: Optional[float] = None, all_blocks: Optional[float] = None, title: str = "",
                 ood: Optional[Mapping[int, float]] = None):
    """``singles``: {block index: score in [0, 1]}; missing blocks are left empty. ``ood``: {block: OOD number},
    drawn as markers for reading (the search never sees it). Returns the Figure."""
    from matplotlib.figure import Figure  # no pyplot: works headless

    fig = Figure(figsize=(max(4.0, 0.45 * num_blocks + 2.5) + 3.2, 3.2))
    ax = fig.subplots()
    xs = sorted(singles)
    ax.bar(xs, [100 * singles[i] for i in xs], color="tab:blue", width=0.7, label=f"this block + head: {metric}")
    for value, style, label in ((all_blocks, dict(color="black", ls="--"), "all blocks + head (embed frozen)"),
                                (head_only, dict(color="tab:red", ls=":"), "head only (linear probe by SGD)")):
        if value is not None:
            ax.axhline(100 * value, lw=1.5, label=f"{label}, {metric}: {100 * value:.1f}", **style)
    if ood:
        ax.scatter(sorted(ood), [100 * ood[i] for i in sorted(ood)], marker="D", color="tab:orange", zorder=3,
                   label="this block + head: OOD (not searched on)")
    values = [100 * v for v in [*singles.values(), head_only, all_blocks, *(ood or {}).values()] if v is not None]
    if values:
        lo, hi = min(values), max(values)
        pad = max(1.0, 0.15 * (hi - lo))
        ax.set_ylim(max(0.0, lo - pad), min(100.0, hi + pad))
    ax.set_xticks(range(num_blocks))
    ax.set_xlabel("block trained (bottom to top)")
    ax.set_ylabel("%")
    ax.set_title(title or "Fine-tuning profile", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=120)
    return fig
