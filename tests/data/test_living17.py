"""Living-17 from ImageNet folders: the shipped split, source/target separation, flat-val error."""
from __future__ import annotations

import os

import pytest

from formats import DISTRACTOR, code, copy_tree
from freeze_embed.data import DataRootError, Living17
from freeze_embed.data.living17 import class_names, superclasses, wnids


@pytest.fixture(scope="module")
def dm(imagenet_root):
    return Living17(root=str(imagenet_root), num_workers=0)


def test_shipped_split():
    rows = superclasses()
    assert len(rows) == 17 and all(len(r["source"]) == len(r["target"]) == 2 for r in rows)
    assert class_names()[0] == "salamander" and class_names()[16] == "monkey"
    assert rows[12] == {"name": "bear", "source": ["n02134418", "n02133161"], "target": ["n02134084", "n02132136"]}
    source, target = wnids("source"), wnids("target")
    assert len(source) == len(target) == 34 and not set(source) & set(target)


def split_wnids(ds):
    return [os.path.basename(os.path.dirname(p)) for p in ds.paths]


def test_source_target_separation(dm):
    source, target = wnids("source"), wnids("target")
    train, id_val, ood = dm.split("train"), dm.split("id_val"), dm.split("ood_test")
    assert (len(train), len(id_val), len(ood)) == (34, 34, 34)  # the distractor class is ignored
    assert set(split_wnids(train)) == set(split_wnids(id_val)) == set(source)
    assert set(split_wnids(ood)) == set(target) and DISTRACTOR not in split_wnids(ood)
    assert all("/train/" in p for p in train.paths) and all("/val/" in p for p in id_val.paths + ood.paths)
    # superclass labels follow the row index; the bear row: sloth/black bear ID, polar/brown bear OOD
    assert train.labels.tolist() == [i // 2 for i in range(34)] == ood.labels.tolist()
    assert [w for w, label in zip(split_wnids(ood), ood.labels.tolist()) if label == 12] == ["n02134084", "n02132136"]
    assert [code(ood.load(i)) for i in (0, 1, 33)] == [(0, 2), (0, 3), (16, 3)]  # label / target-class images
    assert dm.num_classes == 17 and dm.paper_epochs == 20 and dm.group_names("ood_test") is None


def test_transforms(dm):
    train_tf = dm.split("train", train=True).transform
    assert [type(t).__name__ for t in train_tf.transforms][:2] == ["RandomResizedCrop", "RandomHorizontalFlip"]
    assert train_tf.transforms[0].scale == (0.08, 1.0)  # PyTorch's defaults
    test_tf = dm.split("id_val").transform
    assert [type(t).__name__ for t in test_tf.transforms][:2] == ["Resize", "CenterCrop"]
    assert test_tf.transforms[0].size == [256] and test_tf.transforms[1].size == (224, 224)
    for name, train in (("train", True), ("ood_test", False)):
        assert dm.split(name, train=train)[5][0].shape == (3, 224, 224)


def test_flat_val_is_explained(imagenet_root, tmp_path):
    root = copy_tree(imagenet_root / "train", tmp_path / "in" / "train").parent
    (root / "val").mkdir()
    (root / "val" / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"x")
    with pytest.raises(DataRootError, match="is flat.*valprep.sh"):
        Living17(root=str(root)).split("id_val")


def test_missing_class_folder(imagenet_root, tmp_path):
    root = copy_tree(imagenet_root, tmp_path / "in")
    os.rename(root / "val" / "n02134084", root / "val" / "moved")
    with pytest.raises(DataRootError, match=r"n02134084 \(1 missing\)"):
        Living17(root=str(root)).split("ood_test")
    with pytest.raises(DataRootError, match=r"train/<wnid>/\*\.JPEG"):
        Living17(root=str(tmp_path / "nowhere")).split("train")
