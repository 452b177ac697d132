"""The loader: the paper's transforms give the same tensors as before the speed-ups, reduced JPEG decoding is an
option that does what it says, and bench.data_throughput reports workers per GPU from its measurements."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2 as T

from freeze_embed.data.base import ShiftDataModule
from freeze_embed.data.images import ImageSamples, load_rgb
from freeze_embed.data.transforms import PAPER_TRANSFORMS, Contiguous, paper_transform
from freeze_embed.run.values import BadValueError
from freeze_embed.tools.bench import data_throughput

MEAN, STD = (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)
SIZES = {"fmow": (224, 224), "camelyon17": (96, 96), "cifar10": (32, 32)}  # the rest: ImageNet's 500x375 JPEGs


def smooth_image(size, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8))
    return coarse.resize(size, Image.BICUBIC)


@pytest.mark.parametrize("dataset", sorted(PAPER_TRANSFORMS))
@pytest.mark.parametrize("train", [True, False])
def test_transforms_give_the_tensors_of_the_plain_v2_pipeline(dataset, train):
    """Same image, same seed: exactly the tensor of ToImage, ToDtype, Normalize (the pipeline before Contiguous)."""
    tf = paper_transform(dataset, train, MEAN, STD)
    geometric = [t for t in tf.transforms if not isinstance(t, (T.ToImage, Contiguous, T.ToDtype, T.Normalize))]
    plain = T.Compose(geometric + [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(list(MEAN),
                                                                                                   list(STD))])
    image = smooth_image(SIZES.get(dataset, (500, 375)))
    for seed in range(3):
        torch.manual_seed(seed)
        ours = tf(image)
        torch.manual_seed(seed)
        theirs = plain(image)
        assert ours.shape == (3, 224, 224) and torch.equal(ours, theirs)
        assert ours.is_contiguous() and not theirs.is_contiguous()  # the layout is what changed


def test_decode_min_side_picks_the_smallest_libjpeg_scale_that_keeps_the_shorter_side(tmp_path):
    smooth_image((1024, 768)).save(tmp_path / "big.jpg", quality=90)
    smooth_image((1024, 768)).save(tmp_path / "big.png")
    smooth_image((300, 200)).save(tmp_path / "small.jpg", quality=90)
    assert load_rgb(str(tmp_path / "big.jpg")).size == (1024, 768)  # off by default: the paper's full decode
    assert load_rgb(str(tmp_path / "big.jpg"), 256).size == (512, 384)  # 1/4 would be 256x192, below 256
    assert load_rgb(str(tmp_path / "big.jpg"), 96).size == (128, 96)  # 1/8
    assert load_rgb(str(tmp_path / "big.png"), 256).size == (1024, 768)  # only JPEGs
    assert load_rgb(str(tmp_path / "small.jpg"), 256).size == (300, 200)  # nothing to gain
    reduced = np.asarray(load_rgb(str(tmp_path / "big.jpg"), 256), dtype=np.float64)
    full = np.asarray(load_rgb(str(tmp_path / "big.jpg")).resize((512, 384), Image.BILINEAR), dtype=np.float64)
    assert 0 < np.abs(reduced - full).mean() < 2  # slightly different pixels: why it is an option


class Paths(ShiftDataModule):
    def __init__(self, paths, **kwargs):
        super().__init__(**kwargs)
        self.paths = paths

    def make_split(self, name, train):
        return ImageSamples(self.paths, [0] * len(self.paths), None, paper_transform("living17", train, MEAN, STD))


def test_the_datamodule_passes_decode_min_side_to_its_image_samples(tmp_path):
    smooth_image((1024, 768)).save(tmp_path / "big.jpg", quality=90)
    paths = [str(tmp_path / "big.jpg")]
    assert Paths(paths).split("train", train=True).load(0).size == (1024, 768)
    assert Paths(paths, decode_min_side=256).split("id_val").load(0).size == (512, 384)
    with pytest.raises(BadValueError, match="decode_min_side must be an integer of at least 1"):
        Paths(paths, decode_min_side=0)


def test_workers_per_gpu_is_the_gpu_rate_over_the_per_worker_rate(monkeypatch):
    """Rates as measured (here fixed): workers per GPU = ceil(GPU images/s / loader images/s per worker)."""
    monkeypatch.setattr(data_throughput, "loader_rate", lambda loader, passes: 200.0)  # 2 workers: 100 each
    monkeypatch.setattr(data_throughput, "decode_rate", lambda paths, passes, min_side=None: 160.0)
    (row,) = data_throughput.formats_table(["camelyon17"], n=2, workers=2, batch_size=2, passes=1)
    assert row["train"] == row["eval"] == 100.0 and row["decode"] == 160.0 and row["file"] == "PNG 96x96"
    assert row["workers"] == {"ViT-B/16": 4, "ViT-L/14": 1, "ConvNeXt-B": 4, "BiT-R50": 6}


def test_the_benchmark_reads_the_files_through_the_real_loader(capsys):
    data_throughput.main(["--formats", "fmow", "camelyon17", "--images", "2", "--workers", "0", "--passes", "1",
                          "--batch_size", "2"])
    out = capsys.readouterr().out
    assert "\nfmow " in out and "PNG 224x224" in out and "\ncamelyon17 " in out and "PNG 96x96" in out
    assert "ViT-B/16" in out and "living17" not in out


@pytest.mark.slow
def test_the_benchmark_reads_every_format(capsys):
    data_throughput.main(["--images", "2", "--workers", "1", "--passes", "1", "--batch_size", "2"])
    out = capsys.readouterr().out
    assert all(f"\n{name} " in out for name in data_throughput.FORMATS) and "JPEG 2048x1536" in out


def test_your_own_folders_and_their_folds_decode_reduced_when_asked(tmp_path):
    from freeze_embed.data import ImageFolders
    from freeze_embed.data.folds import HoldOutFold
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for k in range(3):
            smooth_image((1024, 768)).save(tmp_path / c / f"{k}.jpg", quality=90)
    assert ImageFolders(str(tmp_path)).split("train", train=True).load(0).size == (1024, 768)
    folders = ImageFolders(str(tmp_path), val_fraction=0.34, decode_min_side=256)  # 1 of 3 per class to id_val
    assert folders.split("train", train=True).load(0).size == (512, 384)
    assert folders.split("id_val").load(0).size == (512, 384)
    assert HoldOutFold(folders, fold=0, folds=2).decode_min_side == 256
