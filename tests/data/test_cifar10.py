"""CIFAR-10 -> STL-10 (Table 6): the held-out id_val, STL-10's relabelling, pixels as stored, clear errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from formats import cifar_arrays, copy_tree, fit_args, stl_arrays
from freeze_embed.data import CIFAR10, DataFormatError, DataRootError
from freeze_embed.errors import FreezeEmbedError


@pytest.fixture(scope="module")
def dm(cifar_root):
    return CIFAR10(root=str(cifar_root), val_size=5, num_workers=0)


def test_splits_with_holdout(dm, cifar_root):
    sizes = {n: len(dm.split(n)) for n in ("train", "id_val", "id_test", "ood_test")}
    assert sizes == {"train": 15, "id_val": 5, "id_test": 6, "ood_test": 6}
    train_idx, val_idx = dm.holdout()
    assert not set(train_idx) & set(val_idx) and sorted([*train_idx, *val_idx]) == list(range(20))
    labels = cifar_arrays("train")[1]
    assert dm.split("train", train=True).labels.tolist() == labels[train_idx].tolist()
    assert dm.split("id_val").labels.tolist() == labels[val_idx].tolist()
    assert dm.split("id_test").labels.tolist() == cifar_arrays("test")[1].tolist()
    # deterministic: a fresh module (and the training transform's copy) gets the same subset; another seed does not
    again = CIFAR10(root=str(cifar_root), val_size=5)
    assert np.array_equal(again.holdout()[1], val_idx) and np.array_equal(again.split("id_val").indices, val_idx)
    assert not np.array_equal(CIFAR10(root=str(cifar_root), val_size=5, val_seed=1).holdout()[1], val_idx)
    assert dm.eval_names == ("id_val", "id_test", "ood_test") and dm.num_classes == 10 and dm.paper_epochs == 20
    assert (dm.id_metric, dm.ood_metric) == ("id_test/acc", "ood_test/acc") and "selection_metric" not in vars(CIFAR10)
    assert dm.group_names("ood_test") is None and dm.split("ood_test").groups.tolist() == [0] * 6


def test_stl_relabelled_monkeys_dropped(dm):
    ood = dm.split("ood_test")
    # stored 1, 2, 3, 8, 7, 3, 8, 10 = airplane, bird, car, monkey, horse, car, monkey, truck (STL-10's order)
    assert ood.labels.tolist() == [0, 2, 1, 7, 1, 9]  # CIFAR-10's: airplane, bird, automobile, horse, ...
    images = stl_arrays()[0]
    for k, stored in enumerate([0, 1, 2, 4, 5, 7]):  # the rows that are not monkeys, pixel for pixel
        assert np.array_equal(np.asarray(ood.load(k)), images[stored])


def test_cifar_pixels_round_trip(dm):
    image = dm.split("id_test").load(3)
    assert image.mode == "RGB" and np.array_equal(np.asarray(image), cifar_arrays("test")[0][3])
    train_idx = dm.holdout()[0]
    assert np.array_equal(np.asarray(dm.split("train", train=True).load(2)), cifar_arrays("train")[0][train_idx[2]])


def test_transforms(dm):
    train_tf, test_tf = dm.split("train", train=True).transform, dm.split("id_test").transform
    assert [type(t).__name__ for t in train_tf.transforms][:2] == ["Resize", "ToImage"]  # no augmentation
    assert train_tf.transforms[0].size == [224] and test_tf.transforms[0].size == [224, 224]
    for name, train in (("train", True), ("ood_test", False)):
        x, y, g = dm.split(name, train=train)[0]
        assert x.shape == (3, 224, 224) and g == 0 and y == int(dm.split(name, train=train).labels[0])


def test_id_val_from_test_is_the_authors_split(cifar_root):
    dm = CIFAR10(root=str(cifar_root), id_val_from="test")  # val_size is ignored
    assert len(dm.split("train")) == 20 and len(dm.split("id_val")) == len(dm.split("id_test")) == 6
    assert np.array_equal(np.asarray(dm.split("id_val").load(5)), cifar_arrays("test")[0][5])
    assert dm.split("id_val").labels.tolist() == dm.split("id_test").labels.tolist()
    with pytest.raises(FreezeEmbedError, match="id_val_from must be one of train_holdout, test"):
        CIFAR10(root=str(cifar_root), id_val_from="val")
    with pytest.raises(FreezeEmbedError, match="val_size must be between 1 and 19"):
        CIFAR10(root=str(cifar_root)).split("train")  # the default 5000 does not fit the 20-image fixture


def test_missing_root_or_file(cifar_root, tmp_path):
    with pytest.raises(DataRootError) as err:
        CIFAR10(root=str(tmp_path / "nowhere")).split("train")
    msg = str(err.value)
    assert "\n" not in msg and "cifar-10-batches-py" in msg and "stl10_binary" in msg and "download: true" in msg
    root = copy_tree(cifar_root, tmp_path / "c")
    (root / "stl10_binary" / "test_y.bin").unlink()
    assert len(CIFAR10(root=str(root), val_size=5).split("id_test")) == 6
    with pytest.raises(DataRootError, match="test_y.bin"):
        CIFAR10(root=str(root), val_size=5).split("ood_test")


def test_malformed_files(cifar_root, tmp_path):
    root = copy_tree(cifar_root, tmp_path / "c")
    x = root / "stl10_binary" / "test_X.bin"
    x.write_bytes(x.read_bytes()[:-100])
    with pytest.raises(DataFormatError, match="test_X.bin holds 221084 bytes, not the 8 3x96x96 images that test_y"):
        CIFAR10(root=str(root)).split("ood_test")
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:200])
    with pytest.raises(DataFormatError, match="data_batch_3 is not a CIFAR-10 python pickle"):
        CIFAR10(root=str(root), val_size=5).split("train")
    (root / "cifar-10-batches-py" / "test_batch").write_bytes((root / "cifar-10-batches-py" / "batches.meta")
                                                             .read_bytes())
    with pytest.raises(DataFormatError, match="test_batch should hold 'data'"):
        CIFAR10(root=str(root)).split("id_test")


def test_download_uses_torchvision_only_when_missing(cifar_root, tmp_path, monkeypatch):
    import torchvision.datasets as tvd
    calls = []
    monkeypatch.setattr(tvd, "CIFAR10", lambda root, **kw: calls.append(("CIFAR10", root, kw)))
    monkeypatch.setattr(tvd, "STL10", lambda root, **kw: calls.append(("STL10", root, kw)))
    CIFAR10(root=str(cifar_root), download=True).prepare_data()
    assert calls == []
    CIFAR10(root=str(tmp_path), download=True).prepare_data()
    assert calls == [("CIFAR10", str(tmp_path), {"train": True, "download": True}),
                     ("STL10", str(tmp_path), {"split": "test", "download": True})]
    monkeypatch.setattr(tvd, "CIFAR10", lambda root, **kw: (_ for _ in ()).throw(OSError("no network")))
    with pytest.raises(DataRootError, match=r"download failed \(OSError; no internet\?\)"):
        CIFAR10(root=str(tmp_path), download=True).prepare_data()


def test_describe_json(cifar_root, capsys):
    from freeze_embed.tools.describe import main
    main(["--config", "configs/data/cifar10.yaml", "--data.init_args.root", str(cifar_root),
          "--data.init_args.val_size", "5", "--json"])
    sizes = {"train": 15, "id_val": 5, "id_test": 6, "ood_test": 6}
    assert json.loads(capsys.readouterr().out) == {
        "splits": {k: {"size": n, "groups": {}} for k, n in sizes.items()}, "num_classes": 10}
    main(["--config", "configs/data/cifar10.yaml", "--data.root", str(cifar_root), "--data.id_val_from", "test"])
    assert capsys.readouterr().out.splitlines()[1:] == [
        "  train          20", "  id_val          6", "  id_test         6", "  ood_test        6",
        "  paper ID = id_test/acc, OOD = ood_test/acc, epochs = 20"]


def test_fit_fast_dev_run(cifar_root, tmp_path):
    """The config trains through the CLI (its extra arguments parse) and logs every set and the paper's numbers."""
    from freeze_embed.run.cli import FreezeEmbedCLI
    cli = FreezeEmbedCLI(args=fit_args("configs/data/cifar10.yaml", cifar_root, tmp_path)
                         + ["--data.init_args.val_size", "5"])
    logged = set(cli.trainer.callback_metrics)
    assert {"paper/id", "paper/ood"} <= logged
    assert {k.split("/")[0] for k in logged if k.endswith("/acc")} == {"train", "id_val", "id_test", "ood_test"}
