"""The WILDS leaderboard export: file names, one line per example in WILDS' split order, the checkpoint's argmax."""
from __future__ import annotations

from ast import literal_eval
from pathlib import Path

import pytest
import torch

from formats import TINY_MODEL

from freeze_embed.run.cli import main as train
from freeze_embed.data import Camelyon17, FMoW
from freeze_embed.errors import run_command
from freeze_embed.module import FineTuner
from freeze_embed.tools.predict import main as predict

FMOW = {"id_val": "id_val", "id_test": "id_test", "ood_val": "val", "ood_test": "test"}  # ours -> WILDS'
CAMELYON = {"id_val": "id_val", "ood_val": "val", "ood_test": "test"}  # WILDS-Camelyon17 has no id_test


def data_args(config: str, root: Path) -> list[str]:
    return ["--config", f"configs/data/{config}.yaml", *TINY_MODEL, "--data.init_args.root", str(root),
            "--data.init_args.batch_size", "4", "--data.init_args.num_workers", "0", "--trainer.accelerator", "cpu"]


def checkpoint(config: str, root: Path, dm, splits: dict, tmp_path: Path) -> Path:
    """One epoch of train.py (a real Lightning checkpoint), then a head that makes the predictions differ.

    A random tiny ViT maps every fixture image to almost the same feature, so its argmax would be one class for
    all and prove nothing about order: the new head reads the features' deviations from their mean.
    """
    train(["fit", *data_args(config, root), "--trainer.max_epochs", "1", "--trainer.logger", "false",
           "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
           "--test_after_fit", "false", "--run_dir", str(tmp_path / "run"),
           "--trainer.default_root_dir", str(tmp_path)])  # config.yaml goes there, not into the repo
    last = tmp_path / "run/checkpoints/last.ckpt"
    model = FineTuner.load_from_checkpoint(last, map_location="cpu").eval()
    images = torch.stack([dm.split(n)[i][0] for n in splits for i in range(len(dm.split(n)))])
    with torch.no_grad():
        mean = model.backbone(images).mean(0)
    w = torch.randn(model.head.weight.shape, generator=torch.Generator().manual_seed(0)) * 100
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    ckpt["state_dict"].update({"head.weight": w, "head.bias": -w @ mean})
    ckpt["epoch"] = 4  # the file names must carry the checkpoint's epoch
    torch.save(ckpt, tmp_path / "edited.ckpt")
    return tmp_path / "edited.ckpt"


def read_like_wilds(path: Path) -> list:
    """WILDS' examples/evaluate.py ``get_predictions``: one ``literal_eval``-ed label per non-empty line."""
    return [literal_eval(line.rstrip()) for line in path.read_text().splitlines() if line.rstrip()]


@pytest.mark.parametrize("name", ["fmow", "camelyon17"])
def test_exports_argmax_in_wilds_order(name, request, tmp_path, capsys):
    root = request.getfixturevalue("fmow_root" if name == "fmow" else "camelyon_root")
    cls, splits = (FMoW, FMOW) if name == "fmow" else (Camelyon17, CAMELYON)
    dm = cls(root=str(root), backbone=TINY_MODEL[1], num_workers=0)
    ckpt = checkpoint(name, root, dm, splits, tmp_path)
    seed = ["--seed", "3"] if name == "camelyon17" else []  # default 0
    predict([*data_args(name, root), "--ckpt_path", str(ckpt), "--out", str(tmp_path / "preds"), *seed])

    seed = 3 if name == "camelyon17" else 0
    files = {theirs: f"{name}_split:{theirs}_seed:{seed}_epoch:4_pred.csv" for theirs in splits.values()}
    assert sorted(p.name for p in (tmp_path / "preds").iterdir()) == sorted(files.values())
    out = capsys.readouterr().out
    assert all(f in out for f in files.values()), out
    model = FineTuner.load_from_checkpoint(ckpt, map_location="cpu").eval()  # independently of predict's CLI path
    seen = set()
    for ours, theirs in splits.items():
        data = dm.split(ours)
        # our split is WILDS' get_subset(split), example for example: line i is scored against example i
        assert data.indices.tolist() == data.dataset.get_subset(theirs).indices.tolist()
        with torch.no_grad():
            expected = [int(model(data[i][0][None]).argmax(-1)) for i in range(len(data))]
        path = tmp_path / "preds" / files[theirs]
        assert path.read_text() == "".join(f"{y}\n" for y in expected)  # no header, one label a line
        assert read_like_wilds(path) == expected
        seen.update(expected)
    assert len(seen) > 1  # predictions differ, so a shuffled file would not pass


def bare_checkpoint(path: Path, num_classes: int) -> Path:
    """A random tiny model saved with just what predict reads (``state_dict``, ``epoch``)."""
    model = FineTuner(backbone=TINY_MODEL[1], num_classes=num_classes,
                      backbone_kwargs={"depth": 1, "embed_dim": 32, "num_heads": 1})
    torch.save({"state_dict": model.state_dict(), "epoch": 1}, path)
    return path


def test_epoch_flag_overrides_checkpoint(fmow_root, tmp_path):
    dm = FMoW(root=str(fmow_root), backbone=TINY_MODEL[1], num_workers=0)
    bare_checkpoint(tmp_path / "m.ckpt", num_classes=62)
    predict([*data_args("fmow", fmow_root), "--ckpt_path", str(tmp_path / "m.ckpt"), "--out", str(tmp_path),
             "--epoch", "9", "--seed", "2"])
    names = sorted(p.name for p in tmp_path.glob("*.csv"))
    assert names == [f"fmow_split:{s}_seed:2_epoch:9_pred.csv" for s in ("id_test", "id_val", "test", "val")]
    assert [len(read_like_wilds(tmp_path / n)) for n in names] == [len(dm.split(s)) for s in
                                                                   ("id_test", "id_val", "ood_test", "ood_val")]


def one_error(capsys, args: list[str]) -> str:
    status = run_command(predict, args)  # what python -m does with the error main raises
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1
    return lines[0]


def test_not_wilds_dataset(capsys, tmp_path):
    (tmp_path / "x.ckpt").write_bytes(b"")  # never read: the data is refused before any model is built
    msg = one_error(capsys, ["--config", "configs/demo.yaml", "--ckpt_path", str(tmp_path / "x.ckpt"),
                             "--out", str(tmp_path / "out")])
    assert msg.startswith("error: DemoShift is not a WILDS leaderboard dataset: predict exports only FMoW and "
                          "Camelyon17")
    assert not (tmp_path / "out").exists()


def test_missing_checkpoint(capsys, tmp_path):
    msg = one_error(capsys, ["--config", "configs/data/fmow.yaml", "--ckpt_path", str(tmp_path / "nope.ckpt"),
                             "--out", str(tmp_path / "out")])
    assert msg == f"error: Checkpoint '{tmp_path / 'nope.ckpt'}' does not exist: give a .ckpt file train.py " \
                  "wrote, e.g. <run_dir>/checkpoints/last.ckpt."


def test_checkpoint_of_another_model(fmow_root, capsys, tmp_path):
    ckpt = bare_checkpoint(tmp_path / "camelyon.ckpt", num_classes=2)  # a 2-class head; FMoW has 62 classes
    msg = one_error(capsys, [*data_args("fmow", fmow_root), "--ckpt_path", str(ckpt), "--out", str(tmp_path)])
    assert msg.startswith(f"error: Checkpoint '{ckpt}' does not fit the model these configs build (")
    assert "head.weight" in msg and msg.endswith("give the --config files and overrides it was trained with.")
