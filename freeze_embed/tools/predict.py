"""Predict with a checkpoint: any images (``--images``: freeze_embed.tools.predict_images) or the WILDS leaderboard.

For any images: ``python -m freeze_embed.tools.predict --ckpt_path best.ckpt --images /new/photos --out preds.csv``
(``--images X --help`` lists its options). Without ``--images`` it exports a checkpoint's predictions for the
WILDS leaderboard (WILDS-FMoW and WILDS-Camelyon17):

    python -m freeze_embed.tools.predict --config configs/data/fmow.yaml --config configs/backbone/clip_vit_b16.yaml \
        --data.init_args.root /data --ckpt_path run/checkpoints/best-epoch03.ckpt --out preds [--seed 0] [--epoch N]

Builds model and data with train.py's own parser (the same ``--config`` files and overrides), loads the checkpoint's
weights and writes one file per WILDS evaluation split, ``<out>/<dataset>_split:<split>_seed:<seed>_epoch:<epoch>``
``_pred.csv``: one predicted label (the logits' argmax) per line, no header, in the order of WILDS'
``get_subset(split)``. FMoW: ``val``, ``test``, ``id_val``, ``id_test`` (our ood_val, ood_test, id_val, id_test);
Camelyon17: ``val``, ``test``, ``id_val``. ``--epoch`` defaults to the checkpoint's. WILDS' script averages over
seeds 0-2 (FMoW) or 0-9 (Camelyon17): export each seed's run into the same folder, then (in a p-lambda/wilds clone)

    mkdir -p results && python examples/evaluate.py preds results --dataset fmow --root-dir /data

(the script's flag is ``--root-dir``, with a hyphen; it writes into the output folder but does not create it.)

The format is what WILDS' examples/evaluate.py reads (``get_prediction_file``: the file starting with
``{dataset}_split:{split}_seed:{seed}``; ``get_predictions``: one ``literal_eval``-ed label per non-empty line) and
what the authors wrote (``save_wilds_model_preds`` in unlabeled_extrapolation/baseline_train.py of
AnanyaKumar/transfer_learning, their ``ood_val``/``ood_test`` renamed ``val``/``test``).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from freeze_embed import files
from freeze_embed.data import camelyon, fmow
from freeze_embed.errors import FreezeEmbedError, run_command
from freeze_embed.files import atomic_write
from freeze_embed.inference import check_checkpoint_path, read_checkpoint
from freeze_embed.run.config import build

# Our datamodule -> (WILDS' dataset name, our split name -> WILDS' split name); "train" is never scored.
WILDS = {fmow.FMoW: ("fmow", fmow.SPLITS), camelyon.Camelyon17: ("camelyon17", camelyon.SPLITS)}


class PredictError(FreezeEmbedError):
    """Nothing to export: the data is not a WILDS benchmark, or the checkpoint does not fit the configs' model."""


def wilds_of(cls: type) -> tuple[str, dict]:
    for known, entry in WILDS.items():
        if issubclass(cls, known):
            return entry
    raise PredictError(f"{cls.__name__} is not a WILDS leaderboard dataset: predict exports only "
                       f"{' and '.join(c.__name__ for c in WILDS)} (give --config configs/data/fmow.yaml or "
                       f"configs/data/camelyon17.yaml).")


def load_weights(model: torch.nn.Module, path: str) -> int:
    """Load the checkpoint's weights into ``model`` (strict); returns the checkpoint's epoch. A file that needs
    arbitrary pickle is refused (:func:`read_checkpoint`) unless the model was built with ``--model.trust_pickle
    true``."""
    trust = bool(getattr(model, "hparams", {}).get("trust_pickle", False))
    checkpoint = read_checkpoint(path, trust)
    files.load_strict(model, checkpoint.state_dict, lambda detail:
                      PredictError(f"Checkpoint '{path}' does not fit the model these configs build ({detail}); give "
                                   "the --config files and overrides it was trained with."))
    return checkpoint.epoch


def predict(model: torch.nn.Module, dataset, batch_size: int, num_workers: int, device, context, desc: str) -> list:
    """Argmax labels in the dataset's own order (no shuffling, no sampler)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    preds = []
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, unit="batch"):
            with context():
                preds.append(model(batch[0].to(device)).argmax(-1).cpu())
    return torch.cat(preds).tolist() if preds else []


def export(cli_args: Sequence[str], ckpt_path: str, out: str, seed: int, epoch: Optional[int]) -> list[str]:
    check_checkpoint_path(ckpt_path)
    # Built by train.py's parser. Nothing is trained or logged here: no logger (no empty log folder per export), and
    # no pretrained weights to load or download, since the checkpoint's replace them all.
    cli = build([], [*cli_args, "--trainer.logger", "false", "--model.pretrained", "false"])
    model, dm, trainer = cli.model, cli.datamodule, cli.trainer
    dataset_name, splits = wilds_of(type(dm))
    ckpt_epoch = load_weights(model, ckpt_path)
    epoch = ckpt_epoch if epoch is None else epoch
    device = trainer.strategy.root_device
    model.to(device).eval()
    os.makedirs(out, exist_ok=True)
    written = []
    for ours, theirs in splits.items():
        if theirs == "train":
            continue
        data = dm.split(ours)
        # WILDS scores line i against example i of get_subset(split): the file must follow that order exactly
        if not np.array_equal(data.indices, data.dataset.get_subset(theirs).indices):
            raise RuntimeError(f"{type(dm).__name__}.split('{ours}') is not in WILDS' '{theirs}' order.")
        labels = predict(model, data, dm.batch_size, dm.num_workers, device, trainer.precision_plugin.forward_context,
                         desc=f"{dataset_name} {theirs}")
        path = os.path.join(out, f"{dataset_name}_split:{theirs}_seed:{seed}_epoch:{epoch}_pred.csv")
        with atomic_write(path, "w") as f:
            f.write("".join(f"{y}\n" for y in labels))
        written.append(path)
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(arg in ("--images", "--model") or arg.startswith(("--images=", "--model=")) for arg in argv):
        from freeze_embed.tools.predict_images import main as predict_images
        return predict_images(argv)
    parser = argparse.ArgumentParser(prog="python -m freeze_embed.tools.predict", description=__doc__.split("\n")[0],
                                     epilog="Every other argument (--config, overrides) goes to train.py's parser. "
                                            "To predict any images instead: --ckpt_path CKPT (or --model EXPORT_DIR) "
                                            "--images ... --out preds.csv (add --help after --images X for its "
                                            "options).",
                                     allow_abbrev=False)
    parser.add_argument("--ckpt_path", required=True, help="checkpoint written by train.py")
    parser.add_argument("--out", required=True, help="folder for the prediction files")
    parser.add_argument("--seed", type=int, default=0, help="the run's seed, written into the file names")
    parser.add_argument("--epoch", type=int, default=None, help="written into the file names (default: checkpoint's)")
    args, rest = parser.parse_known_args(argv)
    written = export(rest, args.ckpt_path, args.out, args.seed, args.epoch)
    print(f"Wrote {len(written)} prediction files to {os.path.abspath(args.out)}:")
    for path in written:
        print(f"  {os.path.basename(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command(main))
