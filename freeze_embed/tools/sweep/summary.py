"""A sweep's summary: the chosen LR and its seeds' ID/OOD, mean +- the 90% CI (Table 5).

The LR with the best mean selection metric (the dataset's, from each run's results.json) wins; each run counts at its
best epoch (early stopping) or its last. An LR at which any run diverged (its results.json says ``"diverged": true``)
is never chosen: its row says how many diverged, and ``diverged`` lists them; ``failed`` lists the runs that ended
without a results.json, each with the last line of its log. :func:`stats` gives mean, sample std (ddof=1) and the CI
half-width 1.645 * std / sqrt(n) (:mod:`freeze_embed.paper`); :func:`summarize` gives the keys of ``summary.json``;
:func:`format_summary` the table the sweep prints. A momentum sweep (``--momenta``) selects the LR per momentum
(:func:`summarize_momenta`, :func:`format_momenta`), as Li et al. (ICLR 2020, Sec. 3.1) compare momenta.
"""
from __future__ import annotations

import math
from typing import Sequence

from freeze_embed.paper import CI_NOTE, STD_NOTE, Z90
from freeze_embed.run.results import RunResults
from freeze_embed.tools.sweep.plan import SweepError, effective_lr


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

    ``records``: ``{"lr", "seed", "status", "results"}`` with ``results`` a run's results.json (or None), and
    ``error`` (the last line of a failed run's log).
    ``select``: ``best`` (each run's early-stopped checkpoint) or ``last`` (its last epoch).
    Ties between LRs go to the smaller LR.
    """
    runs, selections = [], set()
    for r in records:
        res = RunResults(r.get("results") or {})
        one = {"lr": r["lr"], "seed": r["seed"], "status": r["status"], "run_dir": r.get("run_dir"),
               "epoch": (res.data.get("best_epoch") if select == "best" else "last") if res.data else None}
        if r.get("momentum") is not None:
            one.update(momentum=r["momentum"], effective_lr=effective_lr(r["lr"], r["momentum"]))
        if res.data:
            selections.add(res.selection_metric)
        for key, metric in (("id_val", res.selection_metric), ("id", "paper/id"), ("ood", "paper/ood")):
            one[key] = res.value(metric, select)
        if res.diverged:
            one.update(status="diverged", diverged_at=res.data.get("diverged_at"))
        elif r.get("error"):
            one["error"] = r["error"]
        runs.append(one)
    per_lr = []
    for lr in sorted({r["lr"] for r in runs}):
        done = [r for r in runs if r["lr"] == lr and r["id_val"] is not None]
        per_lr.append({"lr": lr, "n_runs": sum(r["lr"] == lr for r in runs), "n_done": len(done),
                       "n_diverged": sum(r["lr"] == lr and r["status"] == "diverged" for r in runs),
                       **{k: stats([r[k] for r in done if r[k] is not None]) for k in ("id_val", "id", "ood")}})
    scored = [p for p in per_lr if p["n_done"] and not p["n_diverged"]]
    best = max(scored, key=lambda p: p["id_val"]["mean"]) if scored else None  # max keeps the first (smallest) LR
    chosen = [r for r in runs if best and r["lr"] == best["lr"] and r["id_val"] is not None]
    if len(selections) > 1:
        raise SweepError(f"runs of one sweep were selected on different metrics {sorted(selections)}")
    return {"select": select, "selection_metric": next(iter(selections), None), "std": STD_NOTE, "ci": CI_NOTE,
            "chosen_lr": best["lr"] if best else None,
            **{k: best[k] if best else stats([]) for k in ("id", "ood", "id_val")},
            "chosen_runs": [{k: r[k] for k in ("seed", "epoch", "id_val", "id", "ood")} for r in chosen],
            "per_lr": per_lr, "runs": runs, **problems(runs)}


def problems(runs: Sequence[dict]) -> dict:
    """``diverged`` and ``failed`` runs (each a run of ``runs``), and ``not_done``: every run without a result."""
    return {"diverged": [r for r in runs if r["status"] == "diverged"],
            "failed": [r for r in runs if r["status"] == "failed"],
            "not_done": [f"{r['run_dir'] or r['lr']}: {r['status']}" for r in runs if r["status"] != "done"]}


def _where(r: dict) -> str:
    return ("" if r.get("momentum") is None else f"m={r['momentum']:g} ") + f"lr={r['lr']:g} seed={r['seed']}"


def format_problems(summary: dict) -> list[str]:
    """One line per diverged run and per failed run (with its log's last line)."""
    lines = []
    for r in summary.get("diverged", []):
        at = r.get("diverged_at") or {}
        lines.append(f"DIVERGED (its LR is never chosen): {_where(r)} at epoch {at.get('epoch')}, "
                     f"step {at.get('step')}")
    for r in summary.get("failed", []):
        lines.append(f"FAILED: {_where(r)}: {r.get('error') or 'no error line'}; see {r['run_dir']}/train.log")
    return lines


def _diverged_note(p: dict) -> str:
    return f"  {p['n_diverged']} diverged" if p.get("n_diverged") else ""


def format_summary(summary: dict) -> str:
    pct = lambda s: "-" if s["mean"] is None else f"{100 * s['mean']:.1f}" + (  # noqa: E731 - one cell's format
        f" ± {100 * s['ci90']:.1f}" if s["ci90"] is not None else "")
    lines = [f"{'':2}{'LR':>8}  {'runs':>5}  {'ID val':>12}  {'ID':>12}  {'OOD':>12}"]
    for p in summary["per_lr"]:
        mark = "*" if p["lr"] == summary["chosen_lr"] else " "
        lines.append(f"{mark:2}{p['lr']:>8g}  {p['n_done']:>2}/{p['n_runs']:<2}  {pct(p['id_val']):>12}  "
                     f"{pct(p['id']):>12}  {pct(p['ood']):>12}" + _diverged_note(p))
    if summary["chosen_lr"] is None:
        return "\n".join(lines + ["No finished run at an LR where no run diverged: nothing to choose."])
    epochs = ", ".join(str(r["epoch"]) for r in summary["chosen_runs"])
    lines += [f"* chosen LR {summary['chosen_lr']:g} (best mean {summary['selection_metric']}); "
              f"epoch per seed ({summary['select']}): {epochs}",
              f"{summary.get('method', '')} on {summary.get('dataset', '')}: ID {pct(summary['id'])}  "
              f"OOD {pct(summary['ood'])}  (%, mean ± 90% CI over {summary['id']['n']} seed"
              f"{'' if summary['id']['n'] == 1 else 's'})"]
    return "\n".join(lines)


def summarize_momenta(records: Sequence[dict], select: str = "best") -> dict:
    """:func:`summarize` once per momentum (records carry ``momentum``): each momentum gets its own chosen LR on the
    selection metric, its per-LR table with effective LRs, and its chosen runs (``per_momentum``, in the order the
    momenta first appear). The top level is the summary of the momentum whose chosen LR has the best mean selection
    metric (momentum as one more hyperparameter; ties go to the first momentum), so results tables read it as any
    sweep; ``runs`` and ``not_done`` cover every momentum."""
    per, every = [], summarize(records, select) if records else None  # checks one selection metric across momenta
    for m in dict.fromkeys(r["momentum"] for r in records):
        s = summarize([r for r in records if r["momentum"] == m], select)
        for p in s["per_lr"]:
            p.update(momentum=m, effective_lr=effective_lr(p["lr"], m))
        chosen = None if s["chosen_lr"] is None else effective_lr(s["chosen_lr"], m)
        per.append({"momentum": m, "chosen_lr": s["chosen_lr"], "chosen_effective_lr": chosen,
                    **{k: s[k] for k in ("id_val", "id", "ood", "chosen_runs", "per_lr", "selection_metric")}})
    scored = [p for p in per if p["chosen_lr"] is not None]
    best = max(scored, key=lambda p: p["id_val"]["mean"]) if scored else None
    top = summarize([r for r in records if best and r["momentum"] == best["momentum"]], select)
    return {**top, "chosen_momentum": best["momentum"] if best else None,
            "chosen_effective_lr": best["chosen_effective_lr"] if best else None, "per_momentum": per,
            "runs": every["runs"] if every else [], **problems(every["runs"] if every else []),
            "selection_metric": every["selection_metric"] if every else None}


def format_momenta(summary: dict) -> str:
    """The momentum sweep's table: every (momentum, effective LR), ``*`` on each momentum's chosen LR."""
    pct = lambda s: "-" if s["mean"] is None else f"{100 * s['mean']:.1f}" + (  # noqa: E731 - one cell's format
        f" ± {100 * s['ci90']:.1f}" if s["ci90"] is not None else "")
    lines = [f"{'':2}{'momentum':>8}  {'eff. LR':>8}  {'LR':>8}  {'runs':>5}  {'ID val':>12}  {'ID':>12}  {'OOD':>12}"]
    for m in summary["per_momentum"]:
        for p in m["per_lr"]:
            mark = "*" if p["lr"] == m["chosen_lr"] else " "
            lines.append(f"{mark:2}{m['momentum']:>8g}  {p['effective_lr']:>8g}  {p['lr']:>8g}  "
                         f"{p['n_done']:>2}/{p['n_runs']:<2}  {pct(p['id_val']):>12}  {pct(p['id']):>12}  "
                         f"{pct(p['ood']):>12}" + _diverged_note(p))
    lines.append(f"* each momentum's chosen LR (best mean {summary['selection_metric']}, {summary['select']} epoch)")
    for m in summary["per_momentum"]:
        if m["chosen_lr"] is None:
            lines.append(f"momentum {m['momentum']:g}: no finished run")
            continue
        n = m["id"]["n"]
        seeds = f"{n} seed{'' if n == 1 else 's'}"
        lines.append(f"momentum {m['momentum']:g}: effective LR {m['chosen_effective_lr']:g} (LR {m['chosen_lr']:g}): "
                     f"ID {pct(m['id'])}  OOD {pct(m['ood'])}  (%, mean ± 90% CI over {seeds})")
    if summary["chosen_momentum"] is not None:
        lines.append(f"best momentum on {summary['selection_metric']}: {summary['chosen_momentum']:g} "
                     f"(summary.json's id/ood are its)")
    return "\n".join(lines)
