"""Domain similarity (Cui et al., 2018): EMD between class centroids, exp(-0.01 EMD), on hand-computed sets."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from freeze_embed.tools.analysis.similarity import (SimilarityError, class_centroids, domain_similarity, emd, main,
                                              similarity)

# Source: class 0 = two images at (-1, 0) and (1, 0) -> centroid (0, 0), weight 2/8; class 1 = six images around
# (4, 0) -> weight 6/8. Target: one image each at (0, 3) and (4, 3) -> weights 1/2, 1/2.
SOURCE = (torch.tensor([[-1.0, 0], [1, 0]] + [[4, 1], [4, -1]] * 3), torch.tensor([0, 0] + [1] * 6))
TARGET = (torch.tensor([[0.0, 3], [4, 3]]), torch.tensor([5, 9]))


def test_centroids_are_class_means_weighted_by_class_size():
    centroids, weights = class_centroids(*SOURCE)
    assert centroids.tolist() == [[0.0, 0.0], [4.0, 0.0]] and weights.tolist() == [2.0, 6.0]


def test_emd_and_similarity_of_a_hand_computed_pair():
    # Ground distances [[3, 5], [5, 3]]. The optimal flow moves class 0's 1/4 to (0, 3) at cost 3, and class 1's 3/4
    # as 1/4 to (0, 3) at cost 5 and 1/2 to (4, 3) at cost 3: EMD = 0.75 + 1.25 + 1.5 = 3.5.
    d, s = domain_similarity(SOURCE, TARGET)
    assert d == pytest.approx(3.5, abs=1e-12)
    assert s == pytest.approx(math.exp(-0.035), abs=1e-12)
    assert similarity(100.0) == pytest.approx(math.exp(-1))  # gamma = 0.01 (Cui et al.)
    # the authors' filter: a source class with fewer images is dropped (here class 0), the rest renormalised
    d_big, _ = domain_similarity(SOURCE, TARGET, min_source_images=3)
    assert d_big == pytest.approx(0.5 * 5 + 0.5 * 3, abs=1e-12)


def test_identical_sets_have_similarity_one():
    assert domain_similarity(SOURCE, SOURCE) == (0.0, 1.0)


def test_features_of_different_backbones_are_refused():
    with pytest.raises(SimilarityError, match="Source features have 2 dimensions and target features 3"):
        emd(np.zeros((1, 2)), np.ones(1), np.zeros((1, 3)), np.ones(1))


def test_cli_on_class_folders_and_a_data_config(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            image = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(image).save(tmp_path / "imgs" / cls / f"{i}.png")
    folder = str(tmp_path / "imgs")
    out = tmp_path / "sim" / "table.csv"
    main(["--backbone", "configs/demo.yaml", "--source", folder, "--target", folder, "configs/demo.yaml@ood_test",
          "--image_size", "32", "--data.init_args.eval_size", "8", "--out", str(out)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[-3:] == ["0.0000", "similarity", "1.0000"]  # the folder against itself
    assert out.read_text().splitlines()[0] == "source,target,emd,similarity,target_classes,target_images"
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_a_split_the_datamodule_lacks_is_named():
    with pytest.raises(SimilarityError, match=r"DemoShift has no split 'val'; choose one of train, id_val, id_test, "
                                              r"ood_test\."):
        main(["--backbone", "configs/demo.yaml", "--source", "configs/demo.yaml@val", "--target", "nowhere/"])
