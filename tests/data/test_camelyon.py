"""WILDS-Camelyon17 through wilds.get_dataset: hospital splits, labels, 96 -> 224 resize."""
from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2 as T

from formats import code, interpolation
from freeze_embed.data import Camelyon17, DataRootError
from freeze_embed.metrics import metrics_for


@pytest.fixture(scope="module")
def dm(camelyon_root):
    return Camelyon17(root=str(camelyon_root), num_workers=0)


def test_hospital_splits(dm):
    assert dm.eval_names == ("id_val", "ood_val", "ood_test")  # no ID test set in WILDS-Camelyon17
    sizes = {n: len(dm.split(n)) for n in ["train", *dm.eval_names]}
    assert sizes == {"train": 6, "id_val": 3, "ood_val": 2, "ood_test": 3}
    assert dm.split("train").groups.tolist() == [0, 0, 0, 3, 3, 4]
    assert dm.split("id_val").groups.tolist() == [0, 3, 4]
    assert dm.split("ood_val").groups.tolist() == [1, 1]      # hospital 1, whatever its split column says
    assert dm.split("ood_test").groups.tolist() == [2, 2, 2]  # hospital 2
    assert dm.split("train").labels.tolist() == [1, 0, 1, 0, 1, 0]
    assert dm.split("ood_test").labels.tolist() == [1, 0, 1]
    assert [code(dm.split("ood_test").load(i))[1] for i in range(3)] == [11, 12, 13]  # the right patches
    assert dm.num_classes == 2 and dm.paper_epochs == 3 and dm.ood_metric == "ood_test/acc"


def test_resize_bilinear_to_224_and_flip(dm):
    x, y, g = dm.split("train", train=True)[0]
    assert x.shape == (3, 224, 224) and (y, g) == (1, 0)
    train_tf, test_tf = dm.split("train", train=True).transform, dm.split("id_val").transform
    resize = train_tf.transforms[0]
    assert isinstance(resize, T.Resize) and resize.size == [224, 224]
    assert interpolation(resize) == "bilinear"
    assert isinstance(train_tf.transforms[1], T.RandomHorizontalFlip)
    assert [type(t).__name__ for t in test_tf.transforms] == ["Resize", "ToImage", "Contiguous", "ToDtype", "Normalize"]
    a, b = dm.split("id_val")[0][0], dm.split("id_val")[0][0]
    torch.testing.assert_close(a, b)  # no augmentation at test time


def test_ood_accuracy_on_hand_predictions(dm):
    test = dm.split("ood_test")
    metric = metrics_for(dm, "ood_test")
    metric.update(torch.tensor([1, 1, 1]), test.labels, test.groups)
    out = metric.compute()
    assert float(out["acc"]) == pytest.approx(2 / 3) and float(out["acc_hospital_2"]) == pytest.approx(2 / 3)
    assert "acc_hospital_0" not in out


def test_missing_root(tmp_path):
    with pytest.raises(DataRootError, match=r"camelyon17_v1\.0/ with RELEASE_v1\.0\.txt, metadata\.csv, patches"):
        Camelyon17(root=str(tmp_path)).split("train")
