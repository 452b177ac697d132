"""Benchmarks: exact memory accounting per method, the --json schema, the speed script and its fair baseline."""
import json
import subprocess
import sys

from pathlib import Path

import pytest
import torch

from freeze_embed.run.config import ConfigError

from freeze_embed.run import methods
from freeze_embed.tools.bench import gpu_report, memory, speed

ROOT = Path(__file__).resolve().parents[1]

TINY = dict(img_size=16, patch_size=8, depth=2, embed_dim=16, num_heads=2)
VIT = "timm:vit_tiny_patch16_224"
ARGS = ["--backbone", VIT, "--backbone-kwargs", json.dumps(TINY), "--image-size", "16"]


def sizes(method):
    """(all parameter bytes, trainable bytes, trainable tensors) counted from the anatomy, not from the bench."""
    module, _, _ = methods.build_module(method, VIT, TINY)
    named = dict(module.named_parameters())
    frozen = set(module.anatomy.embed) if "freeze_embed" in method else set()
    trainable = [p for n, p in named.items() if n not in frozen]
    return (4 * sum(p.numel() for p in named.values()), 4 * sum(p.numel() for p in trainable), len(trainable))


@pytest.mark.parametrize("method", ["sgd", "sgd_freeze_embed", "sgd_freeze_embed_no_momentum", "adamw",
                                    "adamw_freeze_embed"])
def test_memory_accounting_is_exact(method):
    r = memory.measure(method, VIT, TINY, batch=2, image_size=16, steps=2, device="cpu")
    params, trainable, tensors = sizes(method)
    assert params > trainable if "freeze_embed" in method else params == trainable
    assert r["param_bytes"] == params and r["grad_bytes"] == trainable  # only trainable parameters get gradients
    expected_state = {"sgd": trainable, "sgd_freeze_embed": trainable,  # momentum buffer per parameter
                      "sgd_freeze_embed_no_momentum": 0,
                      # exp_avg + exp_avg_sq, and `step`: one float32 scalar tensor per parameter (torch >= 1.12)
                      "adamw": 2 * trainable + 4 * tensors, "adamw_freeze_embed": 2 * trainable + 4 * tensors}[method]
    assert r["state_bytes"] == expected_state
    assert r["peak_bytes"] > 0


def test_json_schema(monkeypatch, capsys):
    monkeypatch.setattr(memory, "run_child", lambda m, a: memory.measure(m, a.backbone, a.backbone_kwargs, a.batch,
                                                                          a.image_size, steps=2, device="cpu"))
    memory.run(ARGS + ["--methods", "sgd_freeze_embed,adamw", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["methods"] and list(out["methods"]) == ["sgd_freeze_embed", "adamw"]
    for r in out["methods"].values():
        assert list(r) == [*memory.KEYS, "baseline_bytes", "name"]
        assert all(isinstance(r[k], int) and r[k] >= 0 for k in (*memory.KEYS, "baseline_bytes"))
    assert [r["name"] for r in out["methods"].values()] == ["SGD (freeze-embed)", "AdamW"]  # from the method files
    assert out["methods"]["adamw"]["state_bytes"] > out["methods"]["sgd_freeze_embed"]["state_bytes"]


@pytest.mark.slow
def test_each_method_runs_in_a_fresh_process():
    out = subprocess.run([sys.executable, "-m", "freeze_embed.tools.bench.memory", *ARGS,
                          "--methods", "sgd_freeze_embed_no_momentum", "--steps", "2", "--json"],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout
    r = json.loads(out)["methods"]["sgd_freeze_embed_no_momentum"]
    assert r["state_bytes"] == 0 and r["grad_bytes"] < r["param_bytes"] and r["peak_bytes"] > r["param_bytes"]


def test_ratios_read_like_the_paper():
    res = {"sgd_freeze_embed": {"peak_bytes": 100, "name": "SGD (freeze-embed)"}, "adamw": {"peak_bytes": 116},
           "sgd_freeze_embed_no_momentum": {"peak_bytes": 85, "name": "SGD (freeze-embed, no momentum)"},
           "lamb": {"peak_bytes": 120, "name": "LAMB"}}
    assert memory.ratios(res) == ["AdamW uses 16% more than SGD (freeze-embed)",
                                  "AdamW uses 36% more than SGD (freeze-embed, no momentum)",
                                  "AdamW uses 3% less than LAMB"]
    assert memory.ratios({"sgd": {"peak_bytes": 1}}) == []


def test_unknown_method_is_refused():
    with pytest.raises(SystemExit):
        memory.run(ARGS + ["--methods", "sgd,adam"])
    assert set(memory.PAPER_METHODS) <= set(methods.keys())


def test_speed_script_reports_images_per_second_of_its_median_step(capsys, monkeypatch):
    res = speed.run(ARGS + ["--batch", "4", "--steps", "2", "--warmup", "1", "--methods", "sgd_freeze_embed", "--json"])
    out = json.loads(capsys.readouterr().out)["methods"]["sgd_freeze_embed"]
    assert out == res["sgd_freeze_embed"]
    assert out["hand_img_s"] == pytest.approx(4 / out["hand_step_s"])
    assert out["lightning_img_s"] == pytest.approx(4 / out["lightning_step_s"])
    assert out["overhead"] == pytest.approx(out["lightning_step_s"] / out["hand_step_s"] - 1)
    seen = {}
    monkeypatch.setattr(speed, "measure", lambda m, backbone, kwargs, batch, steps, warmup, size, *a, **k:
                        seen.update(backbone=backbone, kwargs=kwargs, size=size) or {})
    speed.run(["--methods", "sgd", "--json"])  # no --backbone: the demo ViT, as configs/demo.yaml defines it
    assert seen == {"backbone": "timm:vit_tiny_patch16_224", "size": 32,
                    "kwargs": {"img_size": 32, "patch_size": 4, "depth": 4, "embed_dim": 96, "num_heads": 3}}


@pytest.mark.parametrize("method", ["sgd_freeze_embed", "adamw"])
def test_hand_loop_trains_exactly_like_the_finetuner(method):
    """The baseline is fair: same init, data, updates and LR schedule give the same weights."""
    loader = speed._loader(4, 3, 16, 10)
    dev = torch.device("cpu")
    _, hand = speed.hand_loop(method, loader, dev, VIT, TINY, "32", 10)
    _, light = speed.lightning_loop(method, loader, dev, VIT, TINY, "32", 10)
    moved = 0
    for (n, a), b in zip(hand.named_parameters(), light.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=n)
    torch.manual_seed(0)  # as both loops seed before building: this is their starting point
    init, _, _ = methods.build_module(method, VIT, TINY)
    for (n, a), b in zip(init.named_parameters(), hand.parameters()):
        moved += not torch.equal(a, b)
        if n in init.anatomy.embed and method == "sgd_freeze_embed":
            assert torch.equal(a, b), n
    assert moved > 0


@pytest.mark.parametrize("method", ["lars", "lars_timm", "lamb", "lamb_timm", "sgd_5x_lower_lr_embed"])
def test_bench_builds_the_method_file_not_a_table_of_its_own(method):
    """The optimizer a benchmark measures is the class and arguments of configs/method/<method>.yaml (a bench LARS
    without its trust ratio is the bug this guards against), with the strategy's LR scales applied."""
    import importlib

    import yaml
    spec = yaml.safe_load(methods.path(method).read_text())["model"]["optimizer"]
    module_name, _, cls_name = spec["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), cls_name)
    _, opt, name = methods.build_module(method, VIT, TINY)
    assert type(opt) is cls and name == yaml.safe_load(methods.path(method).read_text())["method"]["name"]
    for key, value in spec["init_args"].items():
        if key != "lr":  # torch_optimizer.Lamb keeps clamp_value / adam / debias as attributes, not defaults
            held = opt.defaults[key] if key in opt.defaults else getattr(opt, key)
            assert held == (tuple(value) if isinstance(value, list) else value), key
    lrs = sorted({g["lr"] for g in opt.param_groups})
    assert lrs == pytest.approx([spec["init_args"]["lr"]] if method != "sgd_5x_lower_lr_embed"
                                else [0.2 * spec["init_args"]["lr"], spec["init_args"]["lr"]])


def test_data_throughput_normalises_with_the_backbones_statistics(monkeypatch, tmp_path):
    """Built by train.py's parser: the backbone config's CLIP mean/std reach the data, not ImageNet's."""
    from freeze_embed.tools.bench import data_throughput
    seen = []
    monkeypatch.setattr(data_throughput, "measure", lambda dm, passes: seen.append(dm) or (1.0, 1))
    data_throughput.main(["--config", str(ROOT / "configs/data/living17.yaml"), "--config",
                          str(ROOT / "configs/backbone/clip_vit_b16.yaml"), "--data.root", str(tmp_path)])
    data_throughput.main(["--config", str(ROOT / "configs/data/living17.yaml"), "--data.root", str(tmp_path)])
    # alone, the data config's own (ViT-B/16 ImageNet-21k) statistics
    import open_clip
    assert seen[0].mean == tuple(open_clip.OPENAI_DATASET_MEAN) and seen[0].batch_size == 64
    assert seen[1].mean == (0.5, 0.5, 0.5)  # augreg_in21k's own, not ImageNet's (0.485, 0.456, 0.406)


def test_epoch_rate_is_the_median_timed_epoch():
    """Epoch 0 (workers, allocations) is not timed; the median of the others gives images/s."""
    assert speed._epoch_rates([0.0, 9.0, 11.0, 14.0, 16.0], 100, warmup=1) == pytest.approx(100 / 2.0)
    assert speed._median_step([0.0, 5.0, 6.0, 8.0], warmup=1) == pytest.approx(1.5)


def test_end_to_end_images_are_what_image_folders_reads(tmp_path):
    from freeze_embed.data import ImageFolders
    speed.write_images(str(tmp_path), 23, classes=4, size=16)
    dm = ImageFolders(train=str(tmp_path), val_fraction=0.25, num_workers=0)
    assert dm.class_names == ["class_0", "class_1", "class_2", "class_3"]
    assert sorted(dm._labels["train"].tolist()) == sorted(i % 4 for i in range(23))
    x, y, _ = dm.split("train", train=True)[0]
    assert x.shape == (3, 224, 224) and 0 <= y < 4


def test_end_to_end_refuses_what_it_cannot_time():
    with pytest.raises(SystemExit):
        speed.run(["--end_to_end", "--epochs", "1"])
    with pytest.raises(SystemExit):
        speed.run(["--end_to_end", "--without", "validation"])


def test_real_run_is_train_pys_with_validation_off(tmp_path):
    speed.write_images(str(tmp_path / "train"), 20)
    cli = speed.real_run("sgd_freeze_embed", str(tmp_path / "train"), str(tmp_path / "out"), 3, 8, 0, "32",
                         without=("StopOnDivergence",))
    names = [type(c).__name__ for c in cli.trainer.callbacks]
    assert "StopOnDivergence" not in names and "ModelCheckpoint" in names and "LearningRateMonitor" in names
    assert cli.trainer.limit_val_batches == 0 and cli.trainer.max_epochs == 3 and cli.datamodule.batch_size == 8
    assert type(cli.datamodule).__name__ == "ImageFolders" and cli.model.head.out_features == 10


@pytest.mark.slow
def test_end_to_end_reports_both_loops():
    r = speed.end_to_end("sgd_freeze_embed", epochs=2, images=60, batch=8, workers=0)
    assert r["images_per_epoch"] == 50  # of each class's 6 images, round(10%) = 1 held out as id_val
    assert r["ratio"] == pytest.approx(r["lightning_img_s"] / r["hand_img_s"])
    assert r["overhead"] == pytest.approx(r["hand_img_s"] / r["lightning_img_s"] - 1)


def test_model_args_reach_train_pys_parser():
    """compile / channels_last go through ``--model.<key>``: an option the FineTuner lacks fails to parse."""
    module, _, _ = speed.build_module("sgd", VIT, TINY, 10, model_args={"channels_last": True})
    assert module.hparams.channels_last is True
    with pytest.raises(ConfigError, match="no_such_option"):
        speed.build_module("sgd", VIT, TINY, 10, model_args={"no_such_option": True})


def test_gpu_report_without_cuda_is_one_sentence(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(gpu_report.NoCudaError, match="needs a CUDA GPU"):
        gpu_report.main(["--out", str(tmp_path)])
    assert not list(tmp_path.iterdir())


def test_gpu_report_cells_uncompiled_first():
    got = gpu_report.cells({"a": None, "b": None}, (False, True))
    assert len(got) == 2 * 2 * 2 * len(gpu_report.METHODS)
    assert [c["compiled"] for c in got] == [False] * (len(got) // 2) + [True] * (len(got) // 2)
    assert set(gpu_report.METHODS) == {"sgd", "sgd_freeze_embed", "adamw", "sgd_freeze_embed_no_momentum_in_backward"}


def test_gpu_report_dry_run_writes_table_csv_and_chart(monkeypatch, tmp_path):
    import csv
    monkeypatch.setattr(gpu_report, "METHODS", ("sgd_freeze_embed_no_momentum_in_backward",))
    monkeypatch.setattr(gpu_report, "PRECISIONS", ("32",))
    assert gpu_report.main(["--dry_run", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "gpu_report.csv")))
    assert [(r["method"], r["compiled"]) for r in rows] == [("sgd_freeze_embed_no_momentum_in_backward", "False"),
                                                            ("sgd_freeze_embed_no_momentum_in_backward", "True")]
    assert float(rows[0]["img_s"]) > 0 and float(rows[1]["img_s"]) > 0 and rows[0]["batch"] == "2"
    md = (tmp_path / "gpu_report.md").read_text()
    assert "| demo ViT | sgd_freeze_embed_no_momentum_in_backward | 32 | no | 2 |" in md and "Loader:" in md
    assert (tmp_path / "gpu_report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_report.csv", "gpu_report.md", "gpu_report.png"]


def test_gpu_report_skips_cells_past_its_budget(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_report, "loader_rate", lambda *a: 123.0)
    gpu_report.main(["--dry_run", "--budget_s", "-1", "--out", str(tmp_path)])
    md = (tmp_path / "gpu_report.md").read_text()
    assert md.count("skipped: time budget") == 2 * 2 * len(gpu_report.METHODS) and "Loader: 123 images/s" in md
