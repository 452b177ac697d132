"""What a user runs on each fixture: ``describe --json`` (asserted exactly) and ``train.py fit`` with fast_dev_run."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from formats import fit_args

WB_GROUPS = ["landbird_land", "landbird_water", "waterbird_land", "waterbird_water"]
REGIONS = ["Asia", "Europe", "Africa", "Americas", "Oceania", "Other"]
HOSPITALS = [f"hospital_{i}" for i in range(5)]


def split(size, names=(), counts=()):
    return {"size": size, "groups": dict(zip(names, counts))}


WATERBIRDS = {"splits": {"train": split(10, WB_GROUPS, [4, 2, 1, 3]), "id_val": split(4, WB_GROUPS, [1, 1, 1, 1]),
                         "test": split(8, WB_GROUPS, [2, 2, 2, 2])}, "num_classes": 2}
EXPECTED = {
    "waterbirds_wilds": ("waterbirds", WATERBIRDS),
    "waterbirds_dro": ("waterbirds", WATERBIRDS),
    "fmow_root": ("fmow", {"splits": {
        "train": split(6, REGIONS, [1, 1, 1, 1, 1, 1]), "id_val": split(2, REGIONS, [1, 0, 1, 0, 0, 0]),
        "id_test": split(2, REGIONS, [0, 1, 0, 1, 0, 0]), "ood_val": split(2, REGIONS, [0, 0, 1, 0, 1, 0]),
        "ood_test": split(7, REGIONS, [1, 1, 3, 1, 0, 1])}, "num_classes": 62}),
    "camelyon_root": ("camelyon17", {"splits": {
        "train": split(6, HOSPITALS, [3, 0, 0, 2, 1]), "id_val": split(3, HOSPITALS, [1, 0, 0, 1, 1]),
        "ood_val": split(2, HOSPITALS, [0, 2, 0, 0, 0]), "ood_test": split(3, HOSPITALS, [0, 0, 3, 0, 0])},
        "num_classes": 2}),
    "domainnet_root": ("domainnet", {"splits": {
        "train": split(6), "id_val": split(3), "ood_test": split(4), "ood_test_painting": split(2)},
        "num_classes": 40}),
    "domainnet_wilds_root": ("domainnet", {"splits": {
        "train": split(4), "id_val": split(2), "ood_test": split(3), "ood_test_clipart": split(2)},
        "num_classes": 40}),
    "imagenet_root": ("living17", {"splits": {"train": split(34), "id_val": split(34), "ood_test": split(34)},
                                   "num_classes": 17}),
}


@pytest.mark.parametrize("fixture", list(EXPECTED))
def test_describe_json(fixture, request, capsys):
    from freeze_embed.tools.describe import main
    config, expected = EXPECTED[fixture]
    root = request.getfixturevalue(fixture)
    main(["--config", f"configs/data/{config}.yaml", "--data.init_args.root", str(root), "--json"])
    assert json.loads(capsys.readouterr().out) == expected


@pytest.mark.slow
def test_describe_command_line(waterbirds_dro):
    """The command as the issue writes it (``--data.root``), in a fresh process, plain output."""
    cmd = [sys.executable, "-m", "freeze_embed.tools.describe", "--config", "configs/data/waterbirds.yaml",
           "--data.root", str(waterbirds_dro)]
    plain = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert plain.splitlines() == [
        f"Waterbirds at {waterbirds_dro}: 2 classes",
        "  train        10   landbird_land 4, landbird_water 2, waterbird_land 1, waterbird_water 3",
        "  id_val        4   landbird_land 1, landbird_water 1, waterbird_land 1, waterbird_water 1",
        "  test          8   landbird_land 2, landbird_water 2, waterbird_land 2, waterbird_water 2",
        "  paper ID = test/weighted_acc, OOD = test/worst_group_acc, epochs = 20"]


def test_describe_missing_root_is_one_line(capsys):
    from freeze_embed.errors import run_command
    from freeze_embed.tools.describe import main
    status = run_command(main, ["--config", "configs/data/waterbirds.yaml", "--data.root", "/no/such/dir", "--json"])
    out = capsys.readouterr()
    assert status == 2 and out.out == ""
    assert out.err.startswith("error: Waterbirds data not found at '/no/such/dir': expected ")
    assert out.err.count("\n") == 1 and "download: true" in out.err


@pytest.mark.parametrize("fixture", ["waterbirds_wilds", "fmow_root", "camelyon_root", "domainnet_root",
                                     "imagenet_root"])
def test_fit_fast_dev_run(fixture, request, tmp_path):
    """One training batch and one batch of every evaluation set; the paper's ID and OOD numbers are logged."""
    from freeze_embed.run.cli import FreezeEmbedCLI
    config, expected = EXPECTED[fixture]
    cli = FreezeEmbedCLI(args=fit_args(f"configs/data/{config}.yaml", request.getfixturevalue(fixture), tmp_path))
    logged = set(cli.trainer.callback_metrics)
    assert {"paper/id", "paper/ood", "train/loss_epoch"} <= logged
    assert {k.split("/")[0] for k in logged if k.endswith("/acc")} == set(expected["splits"])  # train + eval sets


def test_fit_with_missing_root_is_one_line(tmp_path, capsys):
    from freeze_embed.run.cli import main
    with pytest.raises(SystemExit) as exit_:
        main(fit_args("configs/data/fmow.yaml", tmp_path / "nowhere", tmp_path))
    assert exit_.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "fmow_v1.1" in err[0] and "download: true" in err[0]


def test_configs_have_the_paper_epochs():
    import yaml
    epochs = {name: yaml.safe_load(open(f"configs/data/{name}.yaml"))["trainer"]["max_epochs"]
              for name in ("living17", "waterbirds", "domainnet", "fmow", "camelyon17")}
    assert epochs == {"living17": 20, "waterbirds": 20, "domainnet": 50, "fmow": 5, "camelyon17": 3}
    assert os.path.isfile("freeze_embed/data/living17.json")
