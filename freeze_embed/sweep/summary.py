"""A sweep's summary: the chosen LR and its seeds' ID/OOD, mean +- the 90% CI (Table 5).

The LR with the best mean selection metric (the dataset's, from each run's results.json) wins; each run counts at its
best epoch (early stopping) or its last. :func:`stats` gives mean, sample std (ddof=1) and the CI half-width
1.645 * std / sqrt(n) (:mod:`freeze_embed.paper`); :func:`summarize` gives the keys of ``summary.json``;
:func:`format_summary` the table the sweep prints.
"""
from __future__ import annotations

import math
from typing import Sequence

from ..paper import CI_NOTE, SELECTION_METRIC, STD_NOTE, Z90
from .plan import SweepError


def stats(values: Sequence[float]) -> dict:
    """Mean, sample std (ddof=1), 90% CI half-width 1.645 * std / sqrt(n); std and CI are None for n < 2."""
    n = len(values)
    if n == 0:
        return {"mean": None, "std": None, "ci90": None, "n": 0, "values": []}
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "ci90": None if std is None else Z90 * std / math.sqrt(n), "n": n,
            "values": list(values)}


def summarize(records: Sequence[dict], select: str = "best") -> dict:
    """Pick the LR with the best mean selection metric (the dataset's, from results.json) and report its seeds'
    ID/OOD.

    ``records``: ``{"lr", "seed", "status", "results"}`` with ``results`` a run's results.json (or None).
    ``select``: ``best`` (each run's early-stopped checkpoint) or ``last`` (its last epoch).
    Ties between LRs go to the smaller LR.
    """
    runs, selections = [], set()
    for r in records:
        res = r.get("results") or {}
        one = {"lr": r["lr"], "seed": r["seed"], "status": r["status"], "run_dir": r.get("run_dir"),
               "epoch": (res.get("best_epoch") if select == "best" else "last") if res else None}
        selection = res.get("selection_metric", SELECTION_METRIC)
        if res:
            selections.add(selection)
        for key, metric in (("id_val", selection), ("id", "paper/id"), ("ood", "paper/ood")):
            one[key] = (res.get(select) or {}).get(f"{select}/{metric}")
        runs.append(one)
    per_lr = []
    for lr in sorted({r["lr"] for r in runs}):
        done = [r for r in runs if r["lr"] == lr and r["id_val"] is not None]
        per_lr.append({"lr": lr, "n_runs": sum(r["lr"] == lr for r in runs), "n_done": len(done),
                       **{k: stats([r[k] for r in done if r[k] is not None]) for k in ("id_val", "id", "ood")}})
    scored = [p for p in per_lr if p["n_done"]]
    best = max(scored, key=lambda p: p["id_val"]["mean"]) if scored else None  # max keeps the first (smallest) LR
    chosen = [r for r in runs if best and r["lr"] == best["lr"] and r["id_val"] is not None]
    if len(selections) > 1:
        raise SweepError(f"runs of one sweep were selected on different metrics {sorted(selections)}")
    return {"select": select, "selection_metric": next(iter(selections), None), "std": STD_NOTE, "ci": CI_NOTE,
            "chosen_lr": best["lr"] if best else None,
            **{k: best[k] if best else stats([]) for k in ("id", "ood", "id_val")},
            "chosen_runs": [{k: r[k] for k in ("seed", "epoch", "id_val", "id", "ood")} for r in chosen],
            "per_lr": per_lr, "runs": runs,
            "not_done": [f"{r['run_dir'] or r['lr']}: {r['status']}" for r in runs if r["status"] != "done"]}


def format_summary(summary: dict) -> str:
    pct = lambda s: "-" if s["mean"] is None else f"{100 * s['mean']:.1f}" + (  # noqa: E731
        f" ± {100 * s['ci90']:.1f}" if s["ci90"] is not None else "")
    lines = [f"{'':2}{'LR':>8}  {'runs':>5}  {'ID val':>12}  {'ID':>12}  {'OOD':>12}"]
    for p in summary["per_lr"]:
        mark = "*" if p["lr"] == summary["chosen_lr"] else " "
        lines.append(f"{mark:2}{p['lr']:>8g}  {p['n_done']:>2}/{p['n_runs']:<2}  {pct(p['id_val']):>12}  "
                     f"{pct(p['id']):>12}  {pct(p['ood']):>12}")
    if summary["chosen_lr"] is None:
        return "\n".join(lines + ["No finished run: nothing to choose."])
    epochs = ", ".join(str(r["epoch"]) for r in summary["chosen_runs"])
    lines += [f"* chosen LR {summary['chosen_lr']:g} (best mean {summary['selection_metric']}); "
              f"epoch per seed ({summary['select']}): {epochs}",
              f"{summary.get('method', '')} on {summary.get('dataset', '')}: ID {pct(summary['id'])}  "
              f"OOD {pct(summary['ood'])}  (%, mean ± 90% CI over {summary['id']['n']} seed"
              f"{'' if summary['id']['n'] == 1 else 's'})"]
    return "\n".join(lines)
