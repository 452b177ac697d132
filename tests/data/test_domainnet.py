"""DomainNet (SENTRY, 40 classes): labels from the CRLF split files, both layouts, optional OOD domains."""
from __future__ import annotations

import pytest
import torch

from formats import code, copy_tree, interpolation
from freeze_embed.data import DataFormatError, DataRootError, DomainNet
from freeze_embed.data.domainnet import CLASSES
from freeze_embed.metrics import metrics_for


@pytest.fixture(scope="module")
def dm(domainnet_root):
    return DomainNet(root=str(domainnet_root), num_workers=0)


def test_sentry_label_order():
    assert len(CLASSES) == 40 and CLASSES != sorted(CLASSES)
    assert [CLASSES.index(c) for c in ("airplane", "bear", "butterfly", "sheep", "drums", "donut")] == [0, 6, 36, 37,
                                                                                                       38, 39]


def test_splits_and_labels_from_the_files(dm):
    # painting test is present, clipart is not: only the present domain is evaluated
    assert dm.eval_names == ("id_val", "ood_test", "ood_test_painting")
    sizes = {n: len(dm.split(n)) for n in ["train", *dm.eval_names]}
    assert sizes == {"train": 6, "id_val": 3, "ood_test": 4, "ood_test_painting": 2}
    assert dm.split("train").labels.tolist() == [0, 0, 36, 36, 39, 6]
    assert dm.split("id_val").labels.tolist() == [0, 36, 39]            # sketch test
    assert dm.split("ood_test").labels.tolist() == [0, 6, 39, 36]        # real test
    assert dm.split("ood_test_painting").labels.tolist() == [39, 6]
    assert [code(dm.split("ood_test").load(i))[0] for i in range(4)] == [0, 6, 39, 36]  # images match the labels
    assert dm.num_classes == 40 and dm.paper_epochs == 50
    assert (dm.id_metric, dm.ood_metric) == ("id_val/acc", "ood_test/acc")


def test_transforms(dm):
    train_tf = dm.split("train", train=True).transform
    names = [type(t).__name__ for t in train_tf.transforms]
    assert names == ["Resize", "RandomCrop", "RandomHorizontalFlip", "ToImage", "Contiguous", "ToDtype", "Normalize"]
    assert train_tf.transforms[0].size == [256, 256] and interpolation(train_tf.transforms[0]) == "bicubic"
    test_tf = dm.split("id_val").transform
    assert test_tf.transforms[0].size == [224, 224] and interpolation(test_tf.transforms[0]) == "bicubic"
    for name, train in (("train", True), ("ood_test", False)):
        x, y, g = dm.split(name, train=train)[2]
        assert x.shape == (3, 224, 224) and g == 0


def test_label_must_agree_with_class_folder(domainnet_root, tmp_path):
    root = copy_tree(domainnet_root, tmp_path / "dn")
    lists = root / "SENTRY_splits/sketch_train_mini.txt"
    lines = lists.read_bytes().split(b"\r\n")
    lines[2] = lines[2].replace(b" 36", b" 3")  # butterfly labelled as backpack
    lists.write_bytes(b"\r\n".join(lines))
    with pytest.raises(DataFormatError, match=r"sketch_train_mini\.txt:3: label 3 is 'backpack'.*'butterfly'"):
        DomainNet(root=str(root)).split("train")


def test_wilds_layout(domainnet_wilds_root):
    dm = DomainNet(root=str(domainnet_wilds_root), num_workers=0)
    assert dm.eval_names == ("id_val", "ood_test", "ood_test_clipart")
    sizes = {n: len(dm.split(n)) for n in ["train", *dm.eval_names]}
    assert sizes == {"train": 4, "id_val": 2, "ood_test": 3, "ood_test_clipart": 2}
    assert dm.split("train").labels.tolist() == [0, 36, 39, 6]
    assert dm.split("ood_test").labels.tolist() == [0, 39, 36]
    assert dm.split("ood_test_clipart").labels.tolist() == [0, 6]
    assert [code(dm.split("ood_test_clipart").load(i))[0] for i in range(2)] == [0, 6]
    x, y, g = dm.split("train", train=True)[1]
    assert x.shape == (3, 224, 224) and (y, g) == (36, 0)


def test_accuracy_per_domain_on_hand_predictions(dm):
    for name, preds, expected in (("ood_test", [0, 6, 0, 0], 0.5), ("ood_test_painting", [39, 39], 0.5)):
        ds = dm.split(name)
        metric = metrics_for(dm, name)
        metric.update(torch.tensor(preds), ds.labels, ds.groups)
        assert float(metric.compute()["acc"]) == expected


def test_missing_root(tmp_path):
    (tmp_path / "SENTRY_splits").mkdir()
    with pytest.raises(DataRootError) as err:
        DomainNet(root=str(tmp_path)).split("train")
    msg = str(err.value)
    assert "\n" not in msg and "SENTRY_splits" in msg and "domainnet_v1.0" in msg and "download: true" in msg
