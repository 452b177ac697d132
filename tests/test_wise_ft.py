"""WiSE-FT: the exact interpolation, which parts are interpolated, and a run on the tiny demo through the real CLI."""
from __future__ import annotations

import csv

import pytest
import torch

from freeze_embed.tools.wise_ft import WiseFTError, interpolate, kept, main
from helpers import ROOT, results, run_cli, tiny_demo_args


def thetas():
    g = torch.Generator().manual_seed(0)
    theta0 = {"backbone.w": torch.randn(3, 4, generator=g), "head.weight": torch.randn(2, 4, generator=g),
              "head.bias": torch.randn(2, generator=g), "backbone.bn.num_batches_tracked": torch.tensor(0)}
    theta1 = {"backbone.w": torch.randn(3, 4, generator=g), "head.weight": torch.randn(2, 4, generator=g),
              "head.bias": torch.randn(2, generator=g), "backbone.bn.num_batches_tracked": torch.tensor(7)}
    return theta0, theta1


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_every_float_weight_is_the_convex_combination(alpha):
    theta0, theta1 = thetas()
    theta = interpolate(theta0, theta1, alpha)
    for name in ("backbone.w", "head.weight", "head.bias"):
        assert torch.equal(theta[name], (1 - alpha) * theta0[name] + alpha * theta1[name]), name
    assert theta["backbone.bn.num_batches_tracked"].item() == 7  # integer buffers: the fine-tuned model's
    ends = {0.0: theta0, 1.0: theta1}
    if alpha in ends:  # the end points are the two models exactly
        assert all(torch.equal(theta[k], ends[alpha][k]) for k in ("backbone.w", "head.weight"))


def test_backbone_only_keeps_the_fine_tuned_head():
    theta0, theta1 = thetas()
    theta = interpolate(theta0, theta1, 0.3, keep=("head.",))
    assert torch.equal(theta["head.weight"], theta1["head.weight"])
    assert torch.equal(theta["head.bias"], theta1["head.bias"])
    assert torch.equal(theta["backbone.w"], 0.7 * theta0["backbone.w"] + 0.3 * theta1["backbone.w"])


def test_head_is_interpolated_only_when_both_heads_started_zero_shot():
    zs, rnd = {"head_init": "zeroshot"}, {"head_init": "random"}
    assert kept(zs, zs) == ()
    assert kept(zs, zs, backbone_only=True) == ("head.",)
    assert kept(rnd, zs) == kept(zs, rnd) == kept({}, {}) == ("head.",)  # old checkpoints have no head_init


def test_different_models_are_refused_in_one_sentence():
    theta0, theta1 = thetas()
    with pytest.raises(WiseFTError, match=r"'head.weight' has shape \(2, 4\) in the zero-shot model and \(5, 4\)"):
        interpolate(theta0, {**theta1, "head.weight": torch.zeros(5, 4)}, 0.5)
    with pytest.raises(WiseFTError, match=r"only in the fine-tuned one: \['extra'\]"):
        interpolate(theta0, {**theta1, "extra": torch.zeros(1)}, 0.5)


def test_a_missing_zeroshot_checkpoint_names_the_build_option(tmp_path):
    with pytest.raises(WiseFTError, match=r"^--zeroshot 'nope.ckpt' does not exist: .*, or --zeroshot zeroshot to"):
        main(["--zeroshot", "nope.ckpt", "--finetuned", "x.ckpt", "--out", str(tmp_path)])


def test_alphas_outside_0_1_are_refused(tmp_path):
    with pytest.raises(WiseFTError, match="--alphas must be numbers between 0 and 1"):
        main(["--zeroshot", "zeroshot", "--finetuned", "x.ckpt", "--alphas", "1.5", "--out", str(tmp_path)])


@pytest.mark.slow
def test_wise_ft_on_the_demo_writes_csv_plot_and_loadable_checkpoints(tmp_path):
    run_cli(tiny_demo_args(tmp_path, epochs=1))
    finetuned = results(tmp_path)["last_checkpoint"]
    out = tmp_path / "wise"
    data = ["--config", str(ROOT / "configs/demo.yaml"), "--data.init_args.train_size", "64",
            "--data.init_args.eval_size", "32", "--data.init_args.batch_size", "16",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    main([*data, "--zeroshot", "zeroshot", "--finetuned", finetuned, "--alphas", "0", "0.3", "1",
          "--out", str(out), "--save"])

    rows = list(csv.DictReader(open(out / "wise_ft.csv")))
    assert [float(r["alpha"]) for r in rows] == [0.0, 0.3, 1.0]
    assert {"paper/id", "paper/ood", "id_val/acc", "ood_test/acc", "id_test/worst_group_acc"} <= set(rows[0])
    # alpha = 1 is the fine-tuned model itself: the numbers train.py reported for it
    assert float(rows[2]["paper/id"]) == results(tmp_path)["last"]["last/paper/id"]
    assert float(rows[2]["paper/ood"]) == results(tmp_path)["last"]["last/paper/ood"]
    assert (out / "wise_ft.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the demo's head is random: the backbone is interpolated from the pretrained weights, the head is fine-tuned
    pretrained = torch.load(ROOT / "freeze_embed/assets/demo_vit_tiny.pth", map_location="cpu")
    fine = torch.load(finetuned, map_location="cpu", weights_only=False)["state_dict"]
    mixed = torch.load(out / "alpha_0.3.ckpt", map_location="cpu", weights_only=False)
    assert mixed["wise_ft"]["alpha"] == 0.3 and "optimizer_states" not in mixed
    for name, w in pretrained.items():
        if w.is_floating_point():
            assert torch.equal(mixed["state_dict"][f"backbone.{name}"], 0.7 * w + 0.3 * fine[f"backbone.{name}"])
    assert torch.equal(mixed["state_dict"]["head.weight"], fine["head.weight"])
    # train.py test loads it as it loads any checkpoint
    run_cli(["test", *data, "--trainer.logger", "false", "--ckpt_path", str(out / "alpha_0.3.ckpt")])
