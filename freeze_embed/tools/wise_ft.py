"""WiSE-FT (Wortsman et al., CVPR 2022): evaluate the weight-space interpolation of a zero-shot and a fine-tuned model.

    python -m freeze_embed.tools.wise_ft --config configs/demo.yaml --zeroshot zeroshot \
        --finetuned runs/demo/checkpoints/last.ckpt --alphas 0 0.25 0.5 0.75 1 --out wise [--save] [--backbone_only]

``theta(alpha) = (1 - alpha) * theta_zeroshot + alpha * theta_finetuned`` for every floating-point tensor
(``_merge`` in mlfoundations/wise-ft ``src/wise_ft.py``); integer buffers are the fine-tuned model's. The head is
interpolated only when both models' heads started from CLIP's zero-shot head (``model.head_init: zeroshot``, saved in
the checkpoints' hyper-parameters); otherwise, or with ``--backbone_only``, only the backbone is and the fine-tuned
head is kept, as the authors advise for a randomly initialised head (mlfoundations/wise-ft issue #8).

``--zeroshot zeroshot`` builds the zero-shot model from the configs instead of a checkpoint: the pretrained backbone
(``model.pretrained``) and, with ``head_init: zeroshot``, the zero-shot head; ``--alphas 0 --save`` writes it as
``alpha_0.ckpt``. Model and data are built by train.py's parser (``freeze_embed.run.config``): give the ``--config``
files and overrides the fine-tuned run used. Each alpha is tested on every evaluation set of the datamodule, as
``train.py test`` would; ``<out>/wise_ft.csv`` holds one row per alpha (``paper/id``, ``paper/ood``, every set's
metrics), ``<out>/wise_ft.png`` the ID-OOD curve, and ``--save`` ``<out>/alpha_<a>.ckpt`` files that
``python train.py test --config ... --ckpt_path <out>/alpha_0.5.ckpt`` loads.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from typing import Mapping, Optional, Sequence

import torch

from freeze_embed import files
from freeze_embed.errors import FreezeEmbedError, run_command
from freeze_embed.files import atomic_write
from freeze_embed.inference import read_checkpoint
from freeze_embed.module import TEST_PREFIX
from freeze_embed.run.config import build
from freeze_embed.zeroshot import fill_head

BUILD = "zeroshot"  # --zeroshot BUILD: the zero-shot model from the configs, no checkpoint
HEAD = "head."  # FineTuner.head's parameters


class WiseFTError(FreezeEmbedError):
    """Checkpoints that cannot be interpolated (missing, or of different models), or bad alphas."""


def interpolate(theta0: Mapping[str, torch.Tensor], theta1: Mapping[str, torch.Tensor], alpha: float,
                keep: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * theta0 + alpha * theta1`` for floating-point tensors; the ``theta1`` tensor (a copy) for
    integer ones and for names starting with a prefix in ``keep``."""
    if set(theta0) != set(theta1):
        only0, only1 = sorted(set(theta0) - set(theta1)), sorted(set(theta1) - set(theta0))
        raise WiseFTError(f"The two models have different parameters (only in the zero-shot one: {only0[:3]}, only in "
                          f"the fine-tuned one: {only1[:3]}); give checkpoints of the same backbone and head.")
    out = {}
    for name, v1 in theta1.items():
        v0 = theta0[name]
        if v0.shape != v1.shape:
            raise WiseFTError(f"'{name}' has shape {tuple(v0.shape)} in the zero-shot model and {tuple(v1.shape)} in "
                              "the fine-tuned one; give checkpoints of the same backbone and number of classes.")
        if not v1.is_floating_point() or any(name.startswith(p) for p in keep):
            out[name] = v1.clone()
        else:
            out[name] = (1 - alpha) * v0.to(v1.dtype) + alpha * v1
    return out


def zeroshot_head(hparams: Mapping) -> bool:
    return hparams.get("head_init") == "zeroshot"


def kept(zeroshot_hparams: Mapping, finetuned_hparams: Mapping, backbone_only: bool = False) -> tuple[str, ...]:
    """Prefixes the fine-tuned model keeps as they are: its head, unless both heads started from the zero-shot one."""
    whole = zeroshot_head(zeroshot_hparams) and zeroshot_head(finetuned_hparams) and not backbone_only
    return () if whole else (HEAD,)


def alpha_name(alpha: float) -> str:
    return f"{alpha:g}"


def evaluate(trainer, model, datamodule) -> dict[str, float]:
    """``train.py test``'s metrics of ``model`` (keys without the ``test/`` prefix, e.g. ``paper/ood``)."""
    out = trainer.test(model, datamodule=datamodule, verbose=False)
    return {k[len(TEST_PREFIX):] if k.startswith(TEST_PREFIX) else k: float(v) for d in out for k, v in d.items()}


def run(cli_args: Sequence[str], zeroshot: str, finetuned: str, alphas: Sequence[float], out: str,
        save: bool = False, backbone_only: bool = False, trust_pickle: bool = False) -> list[dict]:
    bad = [a for a in alphas if not 0 <= a <= 1]
    if bad or not alphas:
        raise WiseFTError("--alphas must be numbers between 0 and 1 (0: zero-shot, 1: fine-tuned), "
                          f"got {bad or 'none'}.")
    if zeroshot != BUILD and not os.path.isfile(zeroshot):
        raise WiseFTError(f"--zeroshot '{zeroshot}' does not exist: give a .ckpt file train.py wrote, or --zeroshot "
                          f"{BUILD} to build the zero-shot model from the configs.")
    fine = read_checkpoint(finetuned, trust_pickle, opt_in="--trust_pickle")
    zero = None if zeroshot == BUILD else read_checkpoint(zeroshot, trust_pickle, opt_in="--trust_pickle")
    # Checkpoints replace every weight, so nothing is downloaded unless the zero-shot model is built here.
    overrides = ["--trainer.logger", "false"] + (["--model.pretrained", "false"] if zero is not None else [])
    cli = build([], [*cli_args, *overrides])
    model, dm, trainer = cli.model, cli.datamodule, cli.trainer
    if zero is None:
        if zeroshot_head(model.hparams):
            fill_head(model.head, model.hparams, dm)  # as the FineTuner does at fit start
        theta0, hp0 = {k: v.detach().clone() for k, v in model.state_dict().items()}, dict(model.hparams)
    else:
        theta0, hp0 = zero.state_dict, zero.hyper_parameters
    theta1 = fine.state_dict
    keep = kept(hp0, fine.hyper_parameters, backbone_only)
    whole = not keep
    print(f"WiSE-FT: interpolating {'backbone and head' if whole else 'the backbone; the fine-tuned head is kept'}",
          file=sys.stderr)
    os.makedirs(out, exist_ok=True)
    rows = []
    for alpha in alphas:
        theta = interpolate(theta0, theta1, alpha, keep)
        files.load_strict(model, theta, lambda detail: WiseFTError(
            f"The checkpoints do not fit the model these configs build ({detail}); give the --config files and "
            "overrides the fine-tuned run used."))
        rows.append({"alpha": alpha, **evaluate(trainer, model, dm)})
        if save:
            # the fine-tuned checkpoint's metadata, minus training state that does not fit the new weights
            saved = {k: v for k, v in fine.saved.items() if k not in ("optimizer_states", "lr_schedulers", "callbacks")}
            saved["state_dict"] = theta
            saved["wise_ft"] = {"alpha": alpha, "zeroshot": zeroshot, "finetuned": finetuned, "head": bool(whole)}
            with atomic_write(os.path.join(out, f"alpha_{alpha_name(alpha)}.ckpt")) as f:
                torch.save(saved, f)
    write_csv(rows, os.path.join(out, "wise_ft.csv"))
    plot(rows, os.path.join(out, "wise_ft.png"), dm.id_metric, dm.ood_metric)
    return rows


def write_csv(rows: list[dict], path: str) -> None:
    keys = sorted({k for r in rows for k in r} - {"alpha", "paper/id", "paper/ood"})
    with atomic_write(path, "w") as f:
        writer = csv.DictWriter(f, ["alpha", "paper/id", "paper/ood", *keys])
        writer.writeheader()
        writer.writerows(rows)


def plot(rows: list[dict], path: str, id_metric: str, ood_metric: str) -> None:
    """ID vs OOD accuracy, one point per alpha coloured by alpha, the two end points labelled (WiSE-FT's Figure 1)."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(5, 3.8))
    ax = fig.subplots()
    alphas = [r["alpha"] for r in rows]
    xs = [100 * r.get("paper/id", float("nan")) for r in rows]
    ys = [100 * r.get("paper/ood", float("nan")) for r in rows]
    ax.plot(xs, ys, "-", color="0.7", zorder=2)
    points = ax.scatter(xs, ys, c=alphas, cmap="viridis", vmin=0, vmax=1, zorder=3)
    fig.colorbar(points, ax=ax, label="α")
    for i in {0, len(rows) - 1}:
        ax.annotate(f"α={alpha_name(alphas[i])}", (xs[i], ys[i]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(f"ID accuracy (%, {id_metric})")
    ax.set_ylabel(f"OOD accuracy (%, {ood_metric})")
    ax.set_title("WiSE-FT: α=0 zero-shot (pretrained), α=1 fine-tuned", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m freeze_embed.tools.wise_ft", description=__doc__.split("\n")[0],
                                     epilog="Every other argument (--config, overrides) goes to train.py's parser.",
                                     allow_abbrev=False)
    parser.add_argument("--zeroshot", required=True,
                        help=f"the zero-shot model's checkpoint, or '{BUILD}' to build it from the configs")
    parser.add_argument("--finetuned", required=True, help="the fine-tuned model's checkpoint (train.py wrote it)")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1],
                        help="mixing coefficients: 0 is the zero-shot model, 1 the fine-tuned one")
    parser.add_argument("--out", required=True, help="folder for wise_ft.csv, wise_ft.png and the checkpoints")
    parser.add_argument("--save", action="store_true", help="also write <out>/alpha_<a>.ckpt for each alpha")
    parser.add_argument("--backbone_only", action="store_true",
                        help="interpolate the backbone only and keep the fine-tuned head")
    parser.add_argument("--trust_pickle", action="store_true",
                        help="read checkpoints that need full pickle, which can run code: only files you trust")
    args, rest = parser.parse_known_args(argv)
    rows = run(rest, args.zeroshot, args.finetuned, args.alphas, args.out, args.save, args.backbone_only,
               args.trust_pickle)
    print(f"{'alpha':>6} {'ID':>7} {'OOD':>7}")
    for r in rows:
        print(f"{alpha_name(r['alpha']):>6} {100 * r.get('paper/id', float('nan')):6.2f}% "
              f"{100 * r.get('paper/ood', float('nan')):6.2f}%")
    print(f"Wrote {os.path.join(args.out, 'wise_ft.csv')} and {os.path.join(args.out, 'wise_ft.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command(main))
