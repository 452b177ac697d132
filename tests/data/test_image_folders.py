"""ImageFolders: a user's folders, CSV manifests and saved HF datasets; labels, splits, errors, group metrics."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from freeze_embed.data import DataFormatError, DataRootError, ImageFolders, ImageReadError
from freeze_embed.data.image_files import list_folder, list_images, read_manifest
from freeze_embed.data.images import load_rgb
from freeze_embed.data.preprocess import eval_transform, preprocess_for, train_transform
from freeze_embed.metrics import metrics_for

DEMO = ("timm:vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4, "depth": 4, "embed_dim": 96, "num_heads": 3})


def image(path, value=0, size=(12, 10), mode="RGB", ext=None):
    """A small solid image; ``value`` is the first channel's level, so tests can tell files apart."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0], 3), 40, np.uint8)
    arr[..., 0] = value
    Image.fromarray(arr).convert(mode).save(path)
    return path


def tree(root, counts: dict[str, int], ext="png"):
    for c, n in counts.items():
        for i in range(n):
            image(root / c / f"{i:03d}.{ext}", value=i)
    return root


@pytest.fixture
def messy(tmp_path):
    """Two classes, nested subfolders, a JPEG, an upper-case extension, a hidden file and folder, a stray .txt."""
    root = tmp_path / "train"
    image(root / "dog" / "b.png")
    image(root / "dog" / "sub" / "deeper" / "a.JPG")
    image(root / "cat" / "z.jpeg")
    image(root / "cat" / ".hidden.png")
    image(root / "cat" / ".cache" / "c.png")
    image(root / ".thumbs" / "t.png")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "readme.md").write_text("top-level files are not classes")
    return root


def test_folder_listing_labels_and_class_order(messy):
    assert list_folder(messy) == [(str(messy / "cat/z.jpeg"), "cat"), (str(messy / "dog/b.png"), "dog"),
                                  (str(messy / "dog/sub/deeper/a.JPG"), "dog")]
    assert list_images(messy) == [str(messy / f) for f in ("cat/z.jpeg", "dog/b.png", "dog/sub/deeper/a.JPG")]
    dm = ImageFolders(train=str(messy), id_val=str(messy), num_workers=0)
    assert (dm.class_names, dm.num_classes) == (["cat", "dog"], 2)
    assert dm.split("train").labels.tolist() == [0, 1, 1]
    dm = ImageFolders(train=str(messy), id_val=str(messy), classes=["dog", "cat"])  # an explicit order
    assert dm.split("train").labels.tolist() == [1, 0, 0]


def test_every_mode_becomes_rgb(tmp_path):
    gray = image(tmp_path / "g.png", value=100, mode="L")  # L from (100, 40, 40): 0.299*100 + 0.587*40 + 0.114*40
    assert np.asarray(load_rgb(gray))[0, 0].tolist() == [58, 58, 58]
    rgba = image(tmp_path / "a.png", value=100, mode="RGBA")
    cmyk = image(tmp_path / "c.jpg", value=100, mode="CMYK")
    pal = image(tmp_path / "p.png", value=100, mode="P")
    assert np.asarray(load_rgb(rgba))[0, 0].tolist() == [100, 40, 40]
    assert np.asarray(load_rgb(pal))[0, 0].tolist() == [102, 51, 51]  # PIL's web palette has steps of 51
    assert load_rgb(cmyk).mode == "RGB"
    Image.fromarray(np.full((4, 4), 25700, np.uint16)).save(tmp_path / "16.png")  # 25700 / 257 = 100
    assert Image.open(tmp_path / "16.png").mode.startswith("I")
    assert np.asarray(load_rgb(tmp_path / "16.png"))[0, 0].tolist() == [100, 100, 100]


def test_held_out_validation_is_stratified_seeded_and_disjoint(tmp_path):
    root = tree(tmp_path / "train", {"a": 20, "b": 10, "c": 1})
    dm = ImageFolders(train=str(root), val_fraction=0.1)
    train, val = dm.split("train"), dm.split("id_val")
    assert torch.bincount(val.labels, minlength=3).tolist() == [2, 1, 0]  # round(0.1 n), one always stays
    assert torch.bincount(train.labels, minlength=3).tolist() == [18, 9, 1]
    assert not set(train.paths) & set(val.paths) and len(set(train.paths) | set(val.paths)) == 31
    assert ImageFolders(train=str(root)).split("id_val").paths == val.paths  # seeded
    assert ImageFolders(train=str(root), seed=1).split("id_val").paths != val.paths
    assert dm.eval_names == ("id_val",) and dm.selection_metric == "id_val/acc"
    assert (dm.id_metric, dm.ood_metric) == ("id_val/acc", "id_val/acc")


def test_eval_sets_missing_and_unknown_classes(tmp_path):
    train = tree(tmp_path / "train", {"cat": 2, "dog": 2, "owl": 1})
    test = tree(tmp_path / "test", {"dog": 2})
    site = tree(tmp_path / "site", {"owl": 1, "cat": 1})
    dm = ImageFolders(train=str(train), id_val=str(test), eval={"id_test": str(test), "ood_site": str(site)})
    assert dm.split("id_test").labels.tolist() == [1, 1] and dm.split("ood_site").labels.tolist() == [0, 2]
    assert dm.eval_names == ("id_val", "id_test", "ood_site")
    assert (dm.id_metric, dm.ood_metric) == ("id_test/acc", "ood_site/acc")
    tree(tmp_path / "one", {"1": 1})  # a folder's name is a class name, not an index (as a CSV's may be)
    with pytest.raises(DataFormatError, match="has class '1'"):
        ImageFolders(train=str(train), eval={"ood_test": str(tmp_path / "one")})
    tree(tmp_path / "bad", {"dog": 1, "fox": 1})
    with pytest.raises(DataFormatError) as err:
        ImageFolders(train=str(train), eval={"ood_test": str(tmp_path / "bad")})
    assert str(err.value) == (f"Set 'ood_test' has class 'fox' ({tmp_path / 'bad' / 'fox'}) that training does "
                              "not have; the known classes are ['cat', 'dog', 'owl'].")


def test_error_sentences(tmp_path):
    with pytest.raises(DataRootError, match=r"^Image folder '/no/such' does not exist: give a folder with one "):
        ImageFolders(train="/no/such")
    (tmp_path / "flat").mkdir()
    image(tmp_path / "flat" / "x.png")
    with pytest.raises(DataRootError, match="has no class sub-folders: expected <folder>/<class>/<image>"):
        ImageFolders(train=str(tmp_path / "flat"))
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "cat" / "notes.txt").write_text("")
    with pytest.raises(DataRootError, match="^Training set '.*empty' has no images"):
        ImageFolders(train=str(tmp_path / "empty"))
    (tmp_path / "m.csv").write_text("file,label\nx.png,a\n")
    with pytest.raises(DataFormatError, match=r"has columns \['file', 'label'\] but needs a 'path' column"):
        ImageFolders(train=str(tmp_path / "m.csv"))
    (tmp_path / "m.csv").write_text("path,label\nx.png,a\nx.png,\n")
    with pytest.raises(DataFormatError, match=r"line 3 has no label"):
        ImageFolders(train=str(tmp_path / "m.csv"))
    (tmp_path / "m.csv").write_text("path,label,group\nx.png,a,g\nx.png,a,\n")
    with pytest.raises(DataFormatError, match=r"line 3 has no group while other rows have one"):
        ImageFolders(train=str(tmp_path / "m.csv"))
    (tmp_path / "m.csv").write_text("path,label\nx.png,a\n")
    with pytest.raises(DataFormatError, match="'train' and 'id_val' are taken"):
        ImageFolders(train=str(tmp_path / "m.csv"), eval={"train": str(tmp_path / "m.csv")})
    with pytest.raises(DataRootError, match="^Manifest '.*nope.csv' does not exist"):
        ImageFolders(train=str(tmp_path / "nope.csv"))


def test_corrupt_image_names_its_file(tmp_path):
    root = tree(tmp_path / "train", {"a": 1})
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    ds = ImageFolders(train=str(root), id_val=str(root)).split("train")
    with pytest.raises(ImageReadError, match=f"Cannot read image '{root / 'a' / 'broken.png'}'"):
        ds[1]


@pytest.fixture
def manifest(tmp_path):
    """CSVs with relative and absolute paths, integer labels and groups (two sites)."""
    for i in range(6):
        image(tmp_path / "img" / f"{i}.png", value=i)
    (tmp_path / "train.csv").write_text("path,label,group\n" + "".join(
        f"img/{i}.png,{'ab'[i % 2]},{'site' + str(i // 3)}\n" for i in range(6)))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "test.csv").write_text(
        f"path,label,group\n../img/0.png,0,site0\n{tmp_path}/img/1.png,b,site0\n../img/2.png,a,site1\n"
        "../img/3.png,1,site1\n../img/4.png,0,site1\n")
    return tmp_path


def test_csv_manifest_paths_labels_and_group_metrics(manifest):
    rows = read_manifest(manifest / "sub" / "test.csv")
    assert [r.path for r in rows] == [str(manifest / "img" / f"{i}.png") for i in range(5)]
    dm = ImageFolders(train=str(manifest / "train.csv"), id_val=str(manifest / "train.csv"),
                      eval={"id_test": str(manifest / "sub" / "test.csv")})
    assert dm.class_names == ["a", "b"] and dm.groups == ["site0", "site1"]
    test = dm.split("id_test")
    assert test.labels.tolist() == [0, 1, 0, 1, 0] and test.groups.tolist() == [0, 0, 1, 1, 1]
    metric = metrics_for(dm, "id_test")
    # predictions: site0 1 of 2 right, site1 3 of 3 right
    metric.update(torch.tensor([0, 0, 0, 1, 0]), test.labels, test.groups)
    out = {k: round(float(v), 6) for k, v in metric.compute().items()}
    assert out == {"acc": 0.8, "acc_site0": 0.5, "acc_site1": 1.0, "worst_group_acc": 0.5}


def test_integer_labels_name_classes_by_index(tmp_path):
    image(tmp_path / "x.png")
    (tmp_path / "m.csv").write_text("path,label\n" + "".join(f"x.png,{v}\n" for v in (0, 2, 10, 1)))
    dm = ImageFolders(train=str(tmp_path / "m.csv"), id_val=str(tmp_path / "m.csv"))
    assert dm.num_classes == 11 and dm.split("train").labels.tolist() == [0, 2, 10, 1]


def test_balance_weights_by_hand(tmp_path):
    root = tree(tmp_path / "train", {"a": 6, "b": 2})
    dm = ImageFolders(train=str(root), id_val=str(root), balance="loss")
    assert dm.class_weights.tolist() == pytest.approx([8 / (2 * 6), 8 / (2 * 2)])
    dm = ImageFolders(train=str(root), id_val=str(root), balance="sampler", num_workers=0)
    sampler = dm.train_dataloader().sampler
    assert sampler.num_samples == 8 and sampler.weights.tolist() == [1 / 6] * 6 + [1 / 2] * 2
    assert ImageFolders(train=str(root), id_val=str(root)).class_weights is None


def test_saved_hf_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"img": datasets.Image(), "y": datasets.ClassLabel(names=["zebra", "ant"])})
    rows = {"img": [Image.new("L", (9, 7), 10 * i) for i in range(4)], "y": [0, 1, 1, 0]}
    ds = datasets.Dataset.from_dict(rows, features=features)
    ds.save_to_disk(str(tmp_path / "flat"))
    datasets.DatasetDict({"train": ds, "test": ds.select([1, 2])}).save_to_disk(str(tmp_path / "dict"))
    dm = ImageFolders(train=f"hf:{tmp_path / 'flat'}", eval={"id_test": f"hf:{tmp_path / 'dict'}:test"},
                      image_column="img", label_column="y", val_fraction=0.5, backbone="timm:resnet18")
    assert dm.class_names == ["zebra", "ant"]  # the label feature's order, not sorted
    assert dm.split("id_test").labels.tolist() == [1, 1]
    x, y, g = dm.split("id_test")[0]
    assert x.shape == (3, 224, 224) and (y, g) == (1, 0)
    folder = tree(tmp_path / "imagefolder", {"b": 2, "a": 1})
    dm = ImageFolders(train=f"hf:imagefolder:{folder}", id_val=f"hf:imagefolder:{folder}:train")
    assert dm.class_names == ["a", "b"] and dm.split("train").labels.tolist() == [0, 1, 1]
    with pytest.raises(DataRootError, match=r"has splits \['train', 'test'\]: name one as hf:"):
        ImageFolders(train=f"hf:{tmp_path / 'dict'}")
    with pytest.raises(DataFormatError, match=r"has no column 'label' \(columns \['img', 'y'\]\)"):
        ImageFolders(train=f"hf:{tmp_path / 'flat'}")


def test_without_datasets_one_sentence_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataRootError, match=r"needs Hugging Face datasets: pip install 'freeze-embed\[hf\]'"):
        ImageFolders(train=f"hf:{tmp_path}")


def test_transforms_from_the_backbone(tmp_path):
    cfg = preprocess_for(*DEMO)
    assert cfg == {"input_size": (3, 32, 32), "interpolation": "bicubic", "crop_pct": 0.9, "crop_mode": "center",
                   "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    assert preprocess_for("open_clip:ViT-B-16:openai")["crop_pct"] == 1.0
    names = [type(t).__name__ for t in train_transform(cfg).transforms]
    assert names == ["RandomResizedCropAndInterpolation", "RandomHorizontalFlip", "MaybeToTensor", "Normalize"]
    evaluate = eval_transform(cfg)
    assert [repr(t) for t in evaluate.transforms[:2]] == [
        "Resize(size=35, interpolation=bicubic, max_size=None, antialias=True)", "CenterCrop(size=(32, 32))"]
    root = tree(tmp_path / "t", {"a": 1})
    dm = ImageFolders(train=str(root), id_val=str(root), augment=False, backbone=DEMO[0], backbone_kwargs=DEMO[1])
    assert [repr(t) for t in dm.split("train", train=True).transform.transforms[:2]] == [
        repr(t) for t in evaluate.transforms[:2]]


def test_checkpoint_carries_classes_and_preprocess(tmp_path):
    """What predict and export read: plain types (weights_only loads them) that rebuild the evaluation transform."""
    from timm.data import create_transform
    from freeze_embed.module import FineTuner
    root = tree(tmp_path / "t", {"b": 1, "a": 1})
    dm = ImageFolders(train=str(root), id_val=str(root))
    model = FineTuner(backbone=DEMO[0], backbone_kwargs=DEMO[1], num_classes=2)
    model._trainer = type("T", (), {"datamodule": dm})()
    ckpt = {}
    model.on_save_checkpoint(ckpt)
    torch.save({k: ckpt[k] for k in ("class_names", "preprocess")}, tmp_path / "c.pt")
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)
    assert loaded["class_names"] == ["a", "b"]
    x = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 40, 3), dtype=np.uint8))
    assert torch.equal(create_transform(**loaded["preprocess"])(x), eval_transform(preprocess_for(*DEMO))(x))
    model._trainer = None
    model.on_save_checkpoint(ckpt)
    assert ckpt["class_names"] == ["0", "1"]


def test_describe_counts_classes_and_lists_unreadable_images(tmp_path, capsys):
    from freeze_embed.tools.describe import main
    root = tree(tmp_path / "train", {"a": 3, "b": 1})
    (root / "b" / "bad.jpg").write_text("junk")
    args = ["--config", "configs/demo.yaml", "--data", "freeze_embed.data.ImageFolders",
            "--data.init_args.train", str(root), "--data.init_args.id_val", str(root), "--json"]
    status = main([*args, "--check_images"])
    info = json.loads(capsys.readouterr().out)
    assert status == 1
    assert info["splits"]["train"] == {"size": 5, "groups": {}, "classes": {"a": 3, "b": 2}}
    assert info["imbalance"] == 1.5 and info["transforms"]["preprocess"]["input_size"] == [3, 32, 32]
    assert info["unreadable"] == [{"image": str(root / "b" / "bad.jpg"),
                                   "reason": f"UnidentifiedImageError: cannot identify image file "
                                             f"'{root / 'b' / 'bad.jpg'}'"}]
