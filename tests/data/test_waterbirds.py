"""Waterbirds: both layouts, groups 2*y + place, the paper's weighted-ID and worst-group metrics."""
from __future__ import annotations

import pytest
import torch

from formats import code, copy_tree
from freeze_embed.data import DataRootError, ImageReadError, Waterbirds
from freeze_embed.metrics import GroupAccuracy, metrics_for


@pytest.fixture(params=["wilds", "dro"])
def dm(request, waterbirds_wilds, waterbirds_dro):
    return Waterbirds(root=str(waterbirds_wilds if request.param == "wilds" else waterbirds_dro), num_workers=0)


def test_splits_labels_groups(dm):
    sizes = {n: len(dm.split(n)) for n in ("train", "id_val", "test")}
    assert sizes == {"train": 10, "id_val": 4, "test": 8}
    train = dm.split("train", train=True)
    assert train.labels.tolist() == [0] * 6 + [1] * 4
    assert train.groups.tolist() == [0, 0, 0, 0, 1, 1, 2, 3, 3, 3]
    assert dm.split("test").groups.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert dm.train_group_counts() == [4, 2, 1, 3]
    assert dm.eval_names == ("id_val", "test") and dm.paper_epochs == 20


def test_reads_the_listed_file_and_transform(dm):
    test = dm.split("test")
    image = test.load(5)  # metadata row 14 + 5 = 19: a waterbird on land (green channel = row)
    assert code(image) == (1, 19)
    x, y, g = test[5]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and (y, g) == (1, 2)
    # no augmentation in the paper's Waterbirds transform: train == test output, deterministic
    torch.testing.assert_close(dm.split("test", train=True)[5][0], x)


def test_dro_folder_itself_as_root(waterbirds_dro):
    dm = Waterbirds(root=str(waterbirds_dro / "waterbird_complete95_forest2water2"))
    assert len(dm.split("train")) == 10


def test_weighted_id_and_worst_group_on_hand_predictions(dm):
    test = dm.split("test")
    labels, groups = test.labels, test.groups  # 2 examples per group
    wrong = torch.tensor([False, False, True, False, True, True, False, False])  # group accs 1, 0.5, 0, 1
    preds = torch.where(wrong, 1 - labels, labels)
    metric = metrics_for(dm, "test")
    metric.update(preds, labels, groups)
    out = {k: round(float(v), 6) for k, v in metric.compute().items()}
    assert out == {"acc": 0.625, "acc_landbird_land": 1.0, "acc_landbird_water": 0.5, "acc_waterbird_land": 0.0,
                   "acc_waterbird_water": 1.0, "worst_group_acc": 0.0,
                   "weighted_acc": 0.8}  # (4*1 + 2*0.5 + 1*0 + 3*1) / 10 with the fixture's training counts
    paper = GroupAccuracy(dm.group_names("test"), weights=[3498, 184, 56, 1057])  # the real training counts
    paper.update(preds, labels, groups)
    assert float(paper.compute()["weighted_acc"]) == pytest.approx((3498 + 92 + 1057) / 4795)


def test_missing_root_is_one_sentence(tmp_path):
    with pytest.raises(DataRootError) as err:
        Waterbirds(root=str(tmp_path / "nowhere")).split("train")
    msg = str(err.value)
    assert "\n" not in msg and "waterbirds_v1.0" in msg and "waterbird_complete95_forest2water2" in msg
    assert "download: true" in msg


def test_corrupt_image_names_the_file(waterbirds_dro, tmp_path):
    root = copy_tree(waterbirds_dro, tmp_path / "wb")
    bad = root / "waterbird_complete95_forest2water2/014.Indigo_Bunting/Indigo_Bunting_0001.jpg"
    bad.write_bytes(b"not a jpeg")
    train = Waterbirds(root=str(root)).split("train", train=True)
    with pytest.raises(ImageReadError, match="Indigo_Bunting_0001.jpg"):
        train[1]
    bad.unlink()
    with pytest.raises(ImageReadError, match="missing.*Indigo_Bunting_0001.jpg|Indigo_Bunting_0001.jpg.*missing"):
        train[1]


def test_worker_processes_load_and_name_a_bad_file(waterbirds_wilds, tmp_path):
    """With DataLoader workers (as in real runs) batches come through, and a corrupt file is still named."""
    root = copy_tree(waterbirds_wilds, tmp_path / "wb")
    dm = Waterbirds(root=str(root), batch_size=4, num_workers=2)
    dm.setup("fit")
    x, y, g = next(iter(dm.val_dataloader()[1]))
    assert x.shape == (4, 3, 224, 224) and y.tolist() == [0, 0, 0, 0] and g.tolist() == [0, 0, 1, 1]
    (root / "waterbirds_v1.0/014.Indigo_Bunting/Indigo_Bunting_0014.jpg").write_bytes(b"\x00" * 10)  # test row 0
    dm = Waterbirds(root=str(root), batch_size=4, num_workers=1)
    with pytest.raises(ImageReadError, match="Indigo_Bunting_0014.jpg"):
        next(iter(dm.loader(dm.split("test"), shuffle=False)))
