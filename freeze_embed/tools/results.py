"""The paper's results tables from sweep summaries (Tables 1-2, 5, 7-8).

``python -m freeze_embed.tools.results sweeps/ [more dirs or summary.json files] [--format markdown|csv|latex]`` prints
an ID and an OOD table: methods as rows in the order given (named by their method files' ``method.name``; grouped
by model when there are several), datasets and their average as
columns, each cell the mean over seeds +- the 90% confidence interval (Table 5), in percent. ``Avg.`` is the mean
over datasets, shown only for rows that have every dataset; its CI combines the datasets' CIs as independent
(sqrt(sum ci^2) / D). A summary needs only ``method``, ``dataset``, ``model`` and ``id`` / ``ood`` ``{"mean",
"ci90"}`` (fractions in [0, 1]); ``freeze_embed.tools.sweep`` writes these and more. Dataset and model names, and
their order, are the paper's (:mod:`freeze_embed.paper`). A cell whose sweep had diverged runs (never chosen by LR
selection) carries a ``†``, and a footnote under the tables counts them per sweep.

A momentum sweep (``python -m freeze_embed.tools.sweep ... --momenta 0 0.9 --lrs effective``) reads differently:
``--momentum`` prints one row per (momentum, effective LR) with the LR the optimizer got and ID/OOD at each run's
early-stopped epoch, and ``--plot fig.png`` draws ID and OOD accuracy against effective LR (log x), one line per
momentum, each momentum's chosen LR (best ID validation) starred: Li et al., "Rethinking the Hyperparameters for
Fine-tuning" (ICLR 2020), compare momenta this way.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterable, Optional, Sequence

import pandas as pd

from freeze_embed.errors import FreezeEmbedError, run_command
from freeze_embed.files import read_json
from freeze_embed.paper import DATASETS, MODELS, dataset_name, model_name  # noqa: F401 - the paper's names, re-exported

AVG = "Avg."


def load_summaries(paths: Iterable[str]) -> list[dict]:
    """Summaries from ``summary.json`` files and from every ``summary.json`` below the given directories."""
    found = []
    for p in map(Path, paths):
        files = sorted(p.rglob("summary.json")) if p.is_dir() else [p] if p.is_file() else []
        if not files:
            print(f"warning: no summary.json at {p}", file=sys.stderr)
        found += files
    summaries = []
    for f in found:
        s = read_json(f)
        s.setdefault("path", str(f))
        summaries.append(s)
    return summaries


def _ordered(values: list[str], order: Iterable[str]) -> list[str]:
    order = list(order)
    known = [v for v in order if v in values]
    return known + [v for v in dict.fromkeys(values) if v not in order]


def tables(summaries: list[dict]) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """``{"ID": (mean, ci), "OOD": (mean, ci)}`` in percent; rows method (or model x method), columns datasets."""
    models = _ordered([s["model"] for s in summaries], MODELS.values())
    methods = list(dict.fromkeys(s["method"] for s in summaries))  # method.name of each method file, in given order
    datasets = _ordered([s["dataset"] for s in summaries], DATASETS.values())
    if len(models) > 1:
        index = pd.MultiIndex.from_tuples([(m, a) for m in models for a in methods], names=["Model", "Method"])
    else:
        index = pd.Index(methods, name="Method")
    out = {}
    for metric in ("id", "ood"):
        mean = pd.DataFrame(float("nan"), index=index, columns=datasets)
        ci = mean.copy()
        for s in summaries:
            row = (s["model"], s["method"]) if len(models) > 1 else s["method"]
            if not pd.isna(mean.loc[row, s["dataset"]]):
                print(f"warning: two summaries for {row} on {s['dataset']}; using {s.get('path')}", file=sys.stderr)
            stats = s.get(metric) or {}
            mean.loc[row, s["dataset"]] = _percent(stats.get("mean"))
            ci.loc[row, s["dataset"]] = _percent(stats.get("ci90"))
        if len(datasets) > 1:
            complete = mean[datasets].notna().all(axis=1)
            mean[AVG] = mean[datasets].mean(axis=1).where(complete)
            has_ci = ci[datasets].notna().all(axis=1) & complete
            ci[AVG] = ((ci[datasets] ** 2).sum(axis=1) ** 0.5 / len(datasets)).where(has_ci)
        keep = mean.notna().any(axis=1)
        out[metric.upper()] = (mean[keep], ci[keep])
    return out


def _percent(x: Optional[float]) -> float:
    """A fraction as a number in percent (NaN for none), for the tables' arithmetic; printing formats it later."""
    return float("nan") if x is None else 100.0 * float(x)


def cell(mean: float, ci: float, pm: str = "±") -> str:
    if pd.isna(mean):
        return "-"
    return f"{mean:.1f}" if pd.isna(ci) else f"{mean:.1f} {pm} {ci:.1f}"


DIVERGED_MARK = "†"


def diverged(summary: dict) -> list[dict]:
    """The sweep's diverged runs (summary.json's ``diverged``; older summaries: its runs marked so)."""
    return summary.get("diverged") or [r for r in summary.get("runs") or [] if r.get("status") == "diverged"]


def _marks(summaries: list[dict]) -> dict:
    """``{(row key, dataset): DIVERGED_MARK}`` for each cell whose sweep had diverged runs."""
    several = len({s["model"] for s in summaries}) > 1
    return {((s["model"], s["method"]) if several else s["method"], s["dataset"]): DIVERGED_MARK
            for s in summaries if diverged(s)}


def footnote(summaries: list[dict]) -> list[str]:
    """One line per sweep with diverged runs: how many, at which LRs."""
    lines = []
    for s in summaries:
        runs = diverged(s)
        if runs:
            lrs = ", ".join(f"{lr:g}" for lr in sorted({r["lr"] for r in runs}))
            total = len(s.get("runs") or []) or len(runs)
            lines.append(f"{DIVERGED_MARK} {s['method']} on {s['dataset']}: {len(runs)} of {total} runs diverged "
                         f"(LR {lrs}); they are never chosen by LR selection.")
    return lines


def _rows(mean: pd.DataFrame, ci: pd.DataFrame, pm: str, marks: Optional[dict] = None
          ) -> tuple[list[str], list[list[str]]]:
    names = [n or "" for n in mean.index.names]
    rows, marks = [], marks or {}
    for key in mean.index:
        keys = list(key) if isinstance(key, tuple) else [key]
        rows.append([str(k) for k in keys] + [(cell(mean.loc[key, c], ci.loc[key, c], pm) + " "
                                               + marks.get((key, c), "")).strip() for c in mean.columns])
    return names + [str(c) for c in mean.columns], rows


def to_markdown(mean: pd.DataFrame, ci: pd.DataFrame, title: str, marks: Optional[dict] = None) -> str:
    header, rows = _rows(mean, ci, "±", marks)
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |",
             "|" + "|".join(":--" if i < mean.index.nlevels else "--:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def to_latex(mean: pd.DataFrame, ci: pd.DataFrame, title: str, marks: Optional[dict] = None) -> str:
    def esc(s: str) -> str:
        return s.replace("\\", r"\textbackslash{}").replace("&", r"\&").replace("%", r"\%").replace("_", r"\_")
    marks = {k: r"$^\dagger$" for k in marks or {}}
    header, rows = _rows(mean, ci, "$\\pm$", marks)
    n = mean.index.nlevels
    lines = [f"% {title}", r"\begin{tabular}{" + "l" * n + "|" + "c" * (len(header) - n) + "}", r"\toprule",
             " & ".join(esc(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join([esc(x) for x in r[:n]] + r[n:]) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


def to_csv(tabs: dict[str, tuple[pd.DataFrame, pd.DataFrame]]) -> str:
    """One CSV: a ``table`` column (ID/OOD), the row keys, then ``<dataset>`` and ``<dataset> CI`` in percent."""
    frames = []
    for name, (mean, ci) in tabs.items():
        wide = pd.concat({c: mean[c] for c in mean.columns} | {f"{c} CI": ci[c] for c in mean.columns}, axis=1)
        wide = wide[[x for c in mean.columns for x in (c, f"{c} CI")]].round(2).reset_index()
        frames.append(wide.assign(table=name)[["table"] + list(wide.columns)])
    return pd.concat(frames, ignore_index=True).to_csv(index=False)


def render(summaries: list[dict], fmt: str = "markdown") -> str:
    tabs = tables(summaries)
    if fmt == "csv":
        return to_csv(tabs)
    models = sorted({s["model"] for s in summaries})
    on = f" on {models[0]}" if len(models) == 1 else ""
    n = sorted({int(s.get(m, {}).get("n") or 0) for s in summaries for m in ("id", "ood")} - {0})
    seeds = f", {'/'.join(map(str, n))} seed{'' if n == [1] else 's'}" if n else ""
    fn = to_latex if fmt == "latex" else to_markdown
    marks, notes = _marks(summaries), footnote(summaries)
    if fmt == "latex":
        notes = ["% " + n.replace(DIVERGED_MARK, "$^\\dagger$") for n in notes]
    return "\n\n".join([fn(mean, ci, f"{name} accuracy (%){on}: mean ± 90% CI{seeds}", marks)
                          for name, (mean, ci) in tabs.items()] + (["\n".join(notes)] if notes else []))


# --- momentum x effective LR (Li et al., ICLR 2020) -----------------------------------------------------------
def momentum_table(summaries: list[dict]) -> pd.DataFrame:
    """One row per (sweep, momentum, effective LR): the LR the optimizer got, finished/planned runs, and ID val,
    ID, OOD mean and 90% CI in percent; ``chosen`` marks each momentum's LR (best mean ID validation)."""
    rows = []
    for s in summaries:
        for m in s.get("per_momentum") or []:
            for p in m["per_lr"]:
                row = {"Method": s.get("method", ""), "Dataset": s.get("dataset", ""), "Momentum": m["momentum"],
                       "Effective LR": p["effective_lr"], "LR": p["lr"], "Runs": f"{p['n_done']}/{p['n_runs']}"
                       + (f" ({p['n_diverged']} diverged)" if p.get("n_diverged") else ""),
                       "chosen": p["lr"] == m["chosen_lr"]}
                for key, name in (("id_val", "ID val"), ("id", "ID"), ("ood", "OOD")):
                    row[name], row[f"{name} CI"] = _percent(p[key]["mean"]), _percent(p[key]["ci90"])
                rows.append(row)
    if not rows:
        raise ValueError("no momentum sweep among these summaries: run python -m freeze_embed.tools.sweep ... "
                         "--momenta 0 0.9 --lrs effective first")
    return pd.DataFrame(rows)


def momentum_markdown(table: pd.DataFrame) -> str:
    cols = ["Momentum", "Effective LR", "LR", "Runs", "ID val", "ID", "OOD"]
    blocks = []
    for (method, dataset), t in table.groupby(["Method", "Dataset"], sort=False):
        lines = [f"**{method} on {dataset}: accuracy (%) by momentum and effective LR = LR / (1 - momentum); "
                 "mean ± 90% CI over seeds, * = the momentum's LR chosen on ID val**", "",
                 "| " + " | ".join(cols) + " |", "|" + "|".join("--:" for _ in cols) + "|"]
        for _, r in t.iterrows():
            star = "*" if r["chosen"] else ""
            lines.append(f"| {r['Momentum']:g} | {r['Effective LR']:g}{star} | {r['LR']:g} | {r['Runs']} | "
                         + " | ".join(cell(r[c], r[f"{c} CI"]) for c in ("ID val", "ID", "OOD")) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def plot_momentum(table: pd.DataFrame, out: Optional[str] = None):
    """ID and OOD accuracy against effective LR (log x), one line per momentum, chosen LRs starred; one row of two
    panels per sweep."""
    from matplotlib.figure import Figure  # no pyplot: headless, and inline in notebooks

    sweeps = list(table.groupby(["Method", "Dataset"], sort=False))
    fig = Figure(figsize=(9, 3.4 * len(sweeps)))
    axes = fig.subplots(len(sweeps), 2, squeeze=False)
    for row, ((method, dataset), t) in zip(axes, sweeps):
        for ax, metric in zip(row, ("ID", "OOD")):
            for momentum, m in t.groupby("Momentum", sort=False):
                m = m.sort_values("Effective LR")
                line, = ax.plot(m["Effective LR"], m[metric], marker="o", label=f"momentum {momentum:g}")
                ax.errorbar(m["Effective LR"], m[metric], yerr=m[f"{metric} CI"].fillna(0), fmt="none",
                            ecolor=line.get_color(), capsize=3)
                best = m[m["chosen"]]
                ax.scatter(best["Effective LR"], best[metric], marker="*", s=160, color=line.get_color(), zorder=3)
            ax.set_xscale("log")
            ax.set_xlabel("effective LR = LR / (1 - momentum)")
            ax.set_ylabel(f"{metric} accuracy (%)")
            ax.set_title(f"{method} on {dataset}: {metric}", fontsize=10)
            ax.grid(True, which="major", alpha=0.3)
        row[0].legend(fontsize=8, title="* chosen on ID val", title_fontsize=8)
    fig.tight_layout()
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=120)
    return fig


class ResultsError(FreezeEmbedError):
    """Nothing to tabulate, or options that do not go together; the message says which."""


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m freeze_embed.tools.results", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="sweep directories (searched for summary.json) or summary files")
    parser.add_argument("--format", choices=["markdown", "csv", "latex"], default="markdown",
                        help="table format (--momentum: markdown or csv)")
    parser.add_argument("--momentum", action="store_true",
                        help="momentum sweeps: one row per (momentum, effective LR) instead of the paper's tables")
    parser.add_argument("--plot", metavar="PNG", help="with --momentum: ID and OOD against effective LR, saved here")
    args = parser.parse_args(argv)
    summaries = load_summaries(args.paths)
    if not summaries:
        raise ResultsError("no sweep summaries found; run python -m freeze_embed.tools.sweep first")
    if args.plot and not args.momentum:
        raise ResultsError("--plot draws momentum sweeps; add --momentum")
    if not args.momentum:
        print(render(summaries, args.format))
        return 0
    try:
        table = momentum_table(summaries)
    except ValueError as err:
        raise ResultsError(str(err)) from err
    if args.format == "latex":
        raise ResultsError("--momentum prints markdown or csv")
    print(table.round(2).to_csv(index=False) if args.format == "csv" else momentum_markdown(table))
    if args.plot:
        plot_momentum(table, args.plot)
        print(f"\nFigure written to {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command(main))
