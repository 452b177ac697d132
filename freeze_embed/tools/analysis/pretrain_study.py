"""Appendix E at small scale: does the pretraining optimizer, not the stem, make the embedding's gradients stand out?

    python -m freeze_embed.tools.analysis.pretrain_study --out runs/pretrain_study --docs docs/studies/pretrain_study

Four tiny BiT-style ResNets (``configs/pretrain/demo_resnet*.yaml``: SGD or AdamW, standard or patchify stem) are
pretrained on the built-in task; each gets the layer-wise gradient norms of eq. 3.1 on the demo shift (Figures 3-5)
and is fine-tuned there with SGD, AdamW and SGD (freeze-embed), 3 seeds (Tables 13-14). Every piece runs in this
process through the same CLIs as ``python -m freeze_embed.tools.pretrain`` and ``train.py``, and is skipped when its
output exists, so a stopped study resumes where it stopped (a pretraining mid-way resumes from its ``last.ckpt``).

Fine-tuning is the demo study's (docs/studies/demo.md): 4 epochs, 1000 training and 400 images per evaluation
set, two LRs per method, each run early-stopped on ID validation, the LR chosen on mean ID validation accuracy over
seeds (Section 4's protocol). Writes ``results.md`` (the tables,
the gradient-norm ratios, CPU and wall time) and ``grad_norms.png`` into ``--docs``.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from functools import partial
from pathlib import Path

import pandas as pd

from freeze_embed.run.config import CONFIGS, DEMO_CONFIG
from freeze_embed.files import atomic_write, write_json
from freeze_embed.paper import Z90
from freeze_embed.run.results import RunResults

PRETRAINED = {  # key -> (config, label)
    "sgd": ("demo_resnet_sgd.yaml", "SGD-pretrained"),
    "sgd_patchify": ("demo_resnet_patchify_sgd.yaml", "SGD-pretrained, patchify"),
    "adamw": ("demo_resnet_adamw.yaml", "AdamW-pretrained"),
    "adamw_patchify": ("demo_resnet_patchify_adamw.yaml", "AdamW-pretrained, patchify"),
}
# method file -> (name, LR grid): the demo study's grids (docs/studies/demo.md)
METHODS = {"sgd": ("SGD", (3e-3, 1e-2)), "adamw": ("AdamW", (1e-4, 3e-4)),
           "sgd_freeze_embed": ("SGD (freeze-embed)", (3e-3, 1e-2))}
SIZE = ["--trainer.max_epochs", "4", "--data.init_args.train_size", "1000", "--data.init_args.eval_size", "400"]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def cpu_seconds() -> float:
    """CPU time of this process, all its threads (user + system)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def pretrain(out: Path, key: str) -> Path:
    from freeze_embed.pretraining.cli import main
    run = out / "pretrain" / key
    if not (run / "backbone.yaml").is_file():
        last = run / "checkpoints" / "last.ckpt"
        resume = ["--ckpt_path", str(last)] if last.is_file() else []
        main(["fit", "--config", str(CONFIGS / "pretrain" / PRETRAINED[key][0]), *QUIET, "--run_dir", str(run),
              "--trainer.logger.init_args.save_dir", str(out / "logs"), *resume])
    return run / "backbone.yaml"


def grad_norms(out: Path, key: str) -> Path:
    from freeze_embed.tools.analysis.grad_norms import main
    where = out / "grad_norms" / key
    if not (where / "grad_norms.csv").is_file():
        main(["--config", str(DEMO_CONFIG), "--config", str(out / "pretrain" / key / "backbone.yaml"), *SIZE,
              "--batches", "31", "--device", "cpu", "--label", PRETRAINED[key][1], "--out", str(where)])
    return where / "grad_norms.csv"


def finetune(out: Path, key: str, method: str, lr: float, seed: int) -> Path:
    from freeze_embed.run.cli import main
    run = out / "finetune" / key / method / f"lr{lr:g}_seed{seed}"
    if not (run / "results.json").is_file():
        main(["fit", "--config", str(DEMO_CONFIG), "--config", str(CONFIGS / "method" / f"{method}.yaml"),
              "--config", str(out / "pretrain" / key / "backbone.yaml"), *SIZE, *QUIET,
              "--model.optimizer.init_args.lr", str(lr), "--seed_everything", str(seed),
              "--trainer.logger.init_args.save_dir", str(out / "logs"), "--run_dir", str(run)])
    return run / "results.json"


def _pm(values: list[float]) -> str:
    """mean +- the 90% CI half-width over seeds, in percent (Table 5's convention, ``paper.Z90``)."""
    n, mean = len(values), sum(values) / len(values)
    if n < 2:
        return f"{100 * mean:.1f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return f"{100 * mean:.1f} ± {100 * Z90 * std / math.sqrt(n):.1f}"


def ratios(csv: Path) -> dict[str, float]:
    """The embedding's G (and normalised G) over the median of the middle layers: > 1 means it stands out."""
    df = pd.read_csv(csv)
    middle = df[df.kind.isin(["attn", "mlp", "block"])]
    return {c: float(df.loc[df.kind == "embed", c].iloc[0] / middle[c].median())
            for c in ("G", "G_over_param_norm", "G_over_sqrt_numel")}


def selected(out: Path, key: str, method: str, seeds: list[int]) -> tuple[float, list[RunResults]]:
    """(LR, each seed's results) at the LR with the highest mean ID validation accuracy."""
    runs = {lr: [RunResults.read(out / "finetune" / key / method / f"lr{lr:g}_seed{s}") for s in seeds]
            for lr in METHODS[method][1]}
    score = {lr: sum(r.selection() for r in rs) / len(rs) for lr, rs in runs.items()}
    lr = max(score, key=score.get)
    return lr, runs[lr]


def tables(out: Path, seeds: list[int]) -> str:
    """Tables 13 (OOD) and 14 (ID), the gradient-norm ratios and the pretraining accuracy, as markdown."""
    lines = []
    for title, key in (("OOD accuracy (ood_test), as Table 13", "paper/ood"),
                       ("ID accuracy (id_test), as Table 14", "paper/id")):
        lines += [f"**{title}**, mean ± 90% CI over seeds {seeds} (chosen LR):", "",
                  "| pretrained model | " + " | ".join(m for m, _ in METHODS.values()) + " |",
                  "|:--|" + "--:|" * len(METHODS)]
        for k, (_, label) in PRETRAINED.items():
            cells = []
            for m in METHODS:
                lr, best = selected(out, k, m, seeds)
                cells.append(f"{_pm([b.value(key) for b in best])} ({lr:g})")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["**The embedding's gradient at the pretrained initialisation** (eq. 3.1 on the demo shift, 31 batches "
              "of 32, train mode), as a multiple of the median middle layer, and the pretraining's final accuracy:", "",
              "| pretrained model | G | G / ‖θ‖ | G / √numel | pretraining val acc |", "|:--|--:|--:|--:|--:|"]
    for k, (_, label) in PRETRAINED.items():
        r = ratios(out / "grad_norms" / k / "grad_norms.csv")
        acc = json.loads((out / "pretrain" / k / "pretrain.json").read_text())["val/acc"]
        lines.append(f"| {label} | {r['G']:.2f} | {r['G_over_param_norm']:.2f} | {r['G_over_sqrt_numel']:.2f} "
                     f"| {100 * acc:.1f} |")
    return "\n".join(lines) + "\n"


def timed(out: Path, name: str, done: Path, fn) -> None:
    """Run ``fn`` unless ``done`` exists, and keep its wall and CPU seconds in ``<out>/times/<name>.json``."""
    if done.is_file():
        return
    t, c = time.perf_counter(), cpu_seconds()
    fn()
    spent = {"wall_s": time.perf_counter() - t, "cpu_s": cpu_seconds() - c}
    write_json(out / "times" / f"{name}.json", spent)
    print(f"[pretrain_study] {name}: {spent['wall_s']:.0f} s wall, {spent['cpu_s']:.0f} s CPU", file=sys.stderr)


def timing(out: Path) -> str:
    """Per-phase sums of the pieces' times (CPU: this process's threads; pieces may have run in parallel)."""
    rows: dict[str, list[float]] = {}
    for f in sorted((out / "times").glob("*.json")):
        t = json.loads(f.read_text())
        phase = f.stem.split("_")[0]
        rows.setdefault(phase, [0.0, 0.0, 0])
        rows[phase][0] += t["wall_s"]
        rows[phase][1] += t["cpu_s"]
        rows[phase][2] += 1
    total = [sum(r[0] for r in rows.values()), sum(r[1] for r in rows.values())]
    return ("| phase | pieces | wall s (summed) | CPU s |\n|:--|--:|--:|--:|\n"
            + "".join(f"| {k} | {r[2]} | {r[0]:.0f} | {r[1]:.0f} |\n" for k, r in rows.items())
            + f"| total | | {total[0]:.0f} | {total[1]:.0f} ({total[1] / 60:.1f} CPU-minutes) |\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/pretrain_study", help="runs, checkpoints, logs")
    parser.add_argument("--docs", default="docs/studies/pretrain_study", help="where results.md and grad_norms.png go")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=list(PRETRAINED), choices=list(PRETRAINED),
                        help="run these pretrained models' pieces only (e.g. one per process); the tables need all")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                        help="fine-tune with these methods only (e.g. one per process); the tables need all")
    args = parser.parse_args(argv)
    out, docs = Path(args.out), Path(args.docs)
    for key in args.models:
        timed(out, f"pretrain_{key}", out / "pretrain" / key / "backbone.yaml", partial(pretrain, out, key))
        timed(out, f"grad-norms_{key}", out / "grad_norms" / key / "grad_norms.csv", partial(grad_norms, out, key))
        for m in args.methods:
            for lr in METHODS[m][1]:
                for s in args.seeds:
                    timed(out, f"fine-tune_{key}_{m}_{lr:g}_{s}",
                          out / "finetune" / key / m / f"lr{lr:g}_seed{s}" / "results.json",
                          partial(finetune, out, key, m, lr, s))
    if set(args.models) != set(PRETRAINED) or set(args.methods) != set(METHODS):
        return 0
    from freeze_embed.tools.analysis.plots import plot_grad_norms
    docs.mkdir(parents=True, exist_ok=True)
    plot_grad_norms({label: str(out / "grad_norms" / k / "grad_norms.csv") for k, (_, label) in PRETRAINED.items()},
                    head=False, out=str(docs / "grad_norms.png"))
    with atomic_write(docs / "results.md", "w") as f:
        f.write(tables(out, args.seeds) + "\n**Time** (2-core machine shared with other jobs, so wall time is not "
                "CPU time):\n\n" + timing(out))
    print((docs / "results.md").read_text())
    return 0


if __name__ == "__main__":
    from freeze_embed.errors import run_command
    raise SystemExit(run_command(main))
