"""WILDS-FMoW through wilds.get_dataset: WILDS' time splits, canonical regions, Africa and worst-region metrics."""
from __future__ import annotations

import pytest
import torch

from formats import FMOW_ROWS, code, copy_tree
from freeze_embed.data import FMoW, DataRootError, ImageReadError
from freeze_embed.data.fmow import REGIONS
from freeze_embed.metrics import metrics_for


@pytest.fixture(scope="module")
def dm(fmow_root):
    return FMoW(root=str(fmow_root), num_workers=0)


def rows(name, dm):
    """Fixture rows of a split, found by the image each example reads (green = row)."""
    return [code(dm.split(name).load(i))[1] for i in range(len(dm.split(name)))]


def test_wilds_time_splits(dm):
    assert {n: len(dm.split(n)) for n in ["train", *dm.eval_names]} == {
        "train": 6, "id_val": 2, "id_test": 2, "ood_val": 2, "ood_test": 7}
    # the sequestered row 3 is dropped and the train row of 2014 (row 13) is in no split; images still match rows
    assert rows("train", dm) == [0, 1, 2, 4, 5, 6]
    assert rows("ood_val", dm) == [11, 12]
    assert rows("ood_test", dm) == [14, 15, 16, 17, 18, 19, 20]
    assert dm.split("train").labels.tolist() == [FMOW_ROWS[r][3] for r in (0, 1, 2, 4, 5, 6)] == [0, 6, 12, 61, 38, 34]
    assert dm.num_classes == 62 and dm.paper_epochs == 5


def test_regions_in_canonical_order(dm):
    assert REGIONS == ["Asia", "Europe", "Africa", "Americas", "Oceania", "Other"]
    # USA first in the metadata (WILDS' own index would make Americas 0); ours are by name
    assert dm.split("train").groups.tolist() == [3, 0, 1, 2, 4, 5]  # USA CHN FRA NGA AUS XKX(Other)
    assert dm.split("ood_test").groups.tolist() == [2, 2, 2, 0, 1, 5, 3]  # NGA KEN NGA CHN FRA XKX USA


def test_transform_keeps_224_and_flips_only(dm):
    x, y, g = dm.split("ood_test")[0]
    assert x.shape == (3, 224, 224) and (y, g) == (0, 2)
    train_tf = dm.split("train", train=True).transform
    assert [type(t).__name__ for t in train_tf.transforms] == ["RandomHorizontalFlip", "ToImage", "Contiguous",
                                                               "ToDtype", "Normalize"]
    assert [type(t).__name__ for t in dm.split("id_val").transform.transforms] == ["ToImage", "Contiguous",
                                                                                   "ToDtype", "Normalize"]


def test_africa_and_worst_region_on_hand_predictions(dm):
    test = dm.split("ood_test")
    labels, groups = test.labels, test.groups  # regions Africa x3, Asia, Europe, Other, Americas
    wrong = torch.tensor([False, True, False, False, False, True, False])  # Africa 2/3, Other 0/1, the rest right
    preds = torch.where(wrong, (labels + 1) % 62, labels)
    metric = metrics_for(dm, "ood_test")
    metric.update(preds, labels, groups)
    out = {k: round(float(v), 4) for k, v in metric.compute().items()}
    assert out == {"acc": round(5 / 7, 4), "acc_Asia": 1.0, "acc_Europe": 1.0, "acc_Africa": 0.6667,
                   "acc_Americas": 1.0, "acc_Other": 0.0,
                   "worst_region_acc": 0.6667}  # "Other" (0.0) excluded, as in WILDS; Oceania has no example
    assert dm.ood_metric == "ood_test/acc_Africa" and dm.id_metric == "id_val/acc"


def test_missing_root_before_wilds(tmp_path):
    (tmp_path / "fmow_v1.1").mkdir()  # folder without RELEASE file / metadata
    with pytest.raises(DataRootError) as err:
        FMoW(root=str(tmp_path)).split("train")
    msg = str(err.value)
    assert "\n" not in msg and "fmow_v1.1" in msg and "RELEASE_v1.1.txt" in msg and "download: true" in msg


def test_dataset_folder_itself_as_root(fmow_root):
    assert len(FMoW(root=str(fmow_root / "fmow_v1.1")).split("id_test")) == 2


def test_truncated_png_names_the_file(fmow_root, tmp_path):
    root = copy_tree(fmow_root, tmp_path / "fmow")
    png = root / "fmow_v1.1/images/rgb_img_5.png"
    png.write_bytes(png.read_bytes()[:200])
    with pytest.raises(ImageReadError, match=r"rgb_img_5\.png"):
        FMoW(root=str(root)).split("train", train=True)[4]  # example 4 of train is row 5 (row 3 is sequestered)


def test_region_metric_sums_across_processes(dm):
    """Two processes' counts merged (as the DDP sum-reduction does) give the single-process numbers."""
    test = dm.split("ood_test")
    preds = torch.where(torch.tensor([False, True, False, False, False, True, False]), 0, test.labels)
    whole, a, b = (metrics_for(dm, "ood_test") for _ in range(3))
    whole.update(preds, test.labels, test.groups)
    a.update(preds[:3], test.labels[:3], test.groups[:3])
    b.update(preds[3:], test.labels[3:], test.groups[3:])
    a.merge_state(b)
    assert {k: float(v) for k, v in a.compute().items()} == {k: float(v) for k, v in whole.compute().items()}
