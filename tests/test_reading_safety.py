"""No file we read can run code: a pickle whose unpickling calls ``os.system`` is handed to every reading path (each
backbone family's ``pretrained`` file, train.py's CLI, WiSE-FT's checkpoints, predict's checkpoint, the probe's
feature cache, CIFAR-10 batches); the marker file it would create never appears and the error is one sentence.
``.safetensors`` weights load for every family; OpenAI's TorchScript CLIP archives load without being run;
``trust_pickle`` reads a benign file that needs full pickle."""
from __future__ import annotations

import dataclasses
import io
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import open_clip
import pytest
import torch
import torchvision
from safetensors.torch import save_file

from freeze_embed.backbones import create_backbone
from freeze_embed.errors import run_command
from freeze_embed.files import UnsafeFileError, load_torch
from freeze_embed.inference import ModelFileError, read_checkpoint
from helpers import ROOT
from model_files import TINY_CLIP, TINY_VIT

CLIP = "open_clip:ViT-B-32"
REFUSED = ("holds Python objects that only arbitrary pickle code can rebuild, so it was not read (reading it could "
           "run code); if you trust the file (e.g. a checkpoint you wrote yourself with an older version), opt in "
           "with {opt_in}.")
MODEL_OPT_IN = "--model.trust_pickle true (or trust_pickle=True)"


class RunsCode:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@dataclasses.dataclass
class TrainArgs:
    """What an old training script saved next to its weights: harmless, but only full pickle rebuilds it."""
    lr: float


def refused(what: str, path, opt_in: str = MODEL_OPT_IN) -> str:
    return f"The {what} '{path}' " + REFUSED.format(opt_in=opt_in)


def source_model(family: str) -> tuple[str, dict, torch.nn.Module]:
    """(spec, kwargs, the library's whole model with random weights): what a weights file of the family holds."""
    torch.manual_seed(0)
    if family == "timm":
        return TINY_VIT[0], TINY_VIT[1], create_backbone(TINY_VIT[0], **TINY_VIT[1]).model
    if family == "torchvision":
        return "torchvision:resnet18", {}, torchvision.models.resnet18()
    return CLIP, TINY_CLIP, open_clip.create_model("ViT-B-32", **TINY_CLIP)


def evil_weights(tmp_path, state: dict):
    """A weights file whose unpickling would create ``tmp_path/marker``: the state dict plus one hostile object."""
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": state, "hook": RunsCode(tmp_path / "marker")}, path)
    return path


@pytest.mark.parametrize("family", ["timm", "torchvision", "open_clip"])
def test_pretrained_pickle_that_runs_code_is_refused_in_one_sentence(tmp_path, family):
    spec, kwargs, model = source_model(family)
    path = evil_weights(tmp_path, model.state_dict())
    with pytest.raises(UnsafeFileError) as err:
        create_backbone(spec, str(path), **kwargs)
    assert str(err.value) == refused("pretrained weights", path)
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize("family", ["timm", "torchvision", "open_clip"])
def test_trust_pickle_reads_a_benign_file_that_needs_full_pickle(tmp_path, family):
    spec, kwargs, model = source_model(family)
    path = tmp_path / "old_training_script.pth"
    torch.save({"state_dict": model.state_dict(), "args": TrainArgs(lr=0.1)}, path)
    with pytest.raises(UnsafeFileError):
        create_backbone(spec, str(path), **kwargs)
    loaded = create_backbone(spec, str(path), trust_pickle=True, **kwargs).model
    _assert_same_weights(loaded, model)


def _assert_same_weights(loaded: torch.nn.Module, source: torch.nn.Module) -> None:
    """Every weight of ``loaded`` equals the source's under the same name (its classifier was removed, and an
    open_clip backbone is the source's image tower)."""
    want = source.state_dict()
    if isinstance(source, open_clip.CLIP):
        want = {k[len("visual."):]: v for k, v in want.items() if k.startswith("visual.")}
    got = loaded.state_dict()
    assert got and set(got) <= set(want)
    for name, value in got.items():
        assert torch.equal(value, want[name]), name


@pytest.mark.parametrize("family", ["timm", "torchvision", "open_clip"])
def test_safetensors_weights_load_for_every_family_as_the_pth_does(tmp_path, family):
    spec, kwargs, model = source_model(family)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "w.pth")
    torch.manual_seed(1)  # a different random init underneath
    from_safetensors = create_backbone(spec, str(tmp_path / "w.safetensors"), **kwargs).model
    from_pth = create_backbone(spec, str(tmp_path / "w.pth"), **kwargs).model
    _assert_same_weights(from_safetensors, model)
    _assert_same_weights(from_pth, model)


def openai_archive(tmp_path):
    """A tiny CLIP saved as OpenAI saved theirs: TorchScript, fp16 weights, QuickGELU."""
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", force_quick_gelu=True, **TINY_CLIP).eval()
    path = tmp_path / "ViT-tiny.pt"
    torch.jit.save(torch.jit.script(model.half()), str(path))
    return model.float(), path


def test_openai_torchscript_archive_loads_without_being_run(tmp_path, monkeypatch):
    model, path = openai_archive(tmp_path)

    def never(*args, **kwargs):
        raise AssertionError("torch.jit.load runs the archive's code")
    monkeypatch.setattr(torch.jit, "load", never)
    backbone = create_backbone(CLIP, str(path), **TINY_CLIP).model.eval()
    _assert_same_weights(backbone, model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the same function too: QuickGELU, as OpenAI's CLIP was trained
        torch.testing.assert_close(backbone(x), model.visual(x), rtol=0, atol=0)


def test_torchscript_archive_with_a_pickle_that_runs_code_is_refused(tmp_path):
    _, path = openai_archive(tmp_path)
    hostile = tmp_path / "hostile.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(hostile, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("/data.pkl"):
                data = pickle.dumps(RunsCode(tmp_path / "marker"), protocol=2)
            dst.writestr(item, data)
    with pytest.raises(UnsafeFileError) as err:
        create_backbone(CLIP, str(hostile), **TINY_CLIP)
    assert str(err.value) == refused("pretrained weights", hostile)
    assert not (tmp_path / "marker").exists()


def demo_fit(tmp_path, *extra: str) -> list[str]:
    return ["fit", "--config", str(ROOT / "configs/demo.yaml"), "--run_dir", str(tmp_path / "run"),
            "--trainer.logger", "false", *extra]


@pytest.mark.slow
def test_train_cli_refuses_a_pretrained_pickle_in_one_line_on_stderr(tmp_path):
    path = evil_weights(tmp_path, torch.load(ROOT / "freeze_embed/assets/demo_vit_tiny.pth"))
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"),
                           *demo_fit(tmp_path, "--model.pretrained", str(path))],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: " + refused("pretrained weights", path)
    assert not (tmp_path / "marker").exists()


@pytest.mark.slow
@pytest.mark.parametrize("family", ["torchvision", "open_clip"])
def test_train_cli_refuses_other_families_pickles(tmp_path, capsys, family):
    from freeze_embed.run.cli import main
    spec, kwargs, model = source_model(family)
    path = evil_weights(tmp_path, model.state_dict())
    import json
    with pytest.raises(SystemExit) as exit_:
        main(demo_fit(tmp_path, "--model.backbone", spec, "--model.backbone_kwargs", json.dumps(kwargs),
                      "--model.pretrained", str(path)))
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: " + refused("pretrained weights", path) + "\n"
    assert not (tmp_path / "marker").exists()


def test_wise_ft_refuses_a_checkpoint_pickle_and_names_its_flag(tmp_path, capsys):
    from freeze_embed.tools import wise_ft
    path = tmp_path / "fine.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": RunsCode(tmp_path / "marker")}, path)
    assert run_command(wise_ft.main, ["--config", str(ROOT / "configs/demo.yaml"), "--zeroshot", "zeroshot",
                                      "--finetuned", str(path), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == "error: " + refused("checkpoint", path, "--trust_pickle") + "\n"
    assert not (tmp_path / "marker").exists()
    benign = tmp_path / "old.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "args": TrainArgs(lr=0.1)}, benign)
    assert read_checkpoint(str(benign), trust_pickle=True).saved["args"].lr == 0.1


def test_the_one_checkpoint_reader_returns_what_callers_need_and_refuses_other_files(tmp_path):
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": {"lr": 0.1}, "epoch": 4}, path)
    checkpoint = read_checkpoint(str(path))
    assert checkpoint.hyper_parameters == {"lr": 0.1} and checkpoint.epoch == 4
    assert list(checkpoint.state_dict) == ["w"] and torch.equal(checkpoint.state_dict["w"], torch.ones(2))
    torch.save({"model": {"w": torch.ones(2)}}, path)
    with pytest.raises(ModelFileError, match=r"is not a freeze-embed checkpoint \(it has no model hyper-parameters"):
        read_checkpoint(str(path))
    with pytest.raises(ModelFileError, match=r"^Checkpoint '.*nope.ckpt' does not exist: give a .ckpt file"):
        read_checkpoint(str(tmp_path / "nope.ckpt"))


def test_predict_refuses_a_checkpoint_pickle(tmp_path):
    from freeze_embed.tools.predict import load_weights
    path = tmp_path / "model.ckpt"
    model = torch.nn.Linear(2, 1)
    torch.save({"state_dict": model.state_dict(), "epoch": 3, "hook": RunsCode(tmp_path / "marker")}, path)
    with pytest.raises(UnsafeFileError) as err:
        load_weights(torch.nn.Linear(2, 1), str(path))
    assert str(err.value) == refused("checkpoint", path)
    assert not (tmp_path / "marker").exists()


def test_predict_reads_a_trusted_checkpoint_when_the_model_says_so(tmp_path):
    from freeze_embed.tools.predict import load_weights
    path = tmp_path / "model.ckpt"
    source = torch.nn.Linear(2, 1)
    torch.save({"state_dict": source.state_dict(), "epoch": 3, "args": TrainArgs(lr=0.1)}, path)
    target = torch.nn.Linear(2, 1)
    target.hparams = {"trust_pickle": True}  # what FineTuner(trust_pickle=True) holds
    assert load_weights(target, str(path)) == 3
    assert torch.equal(target.weight, source.weight)


def test_probe_cache_with_pickled_objects_is_refused(tmp_path):
    from freeze_embed.probe import read_cache, write_cache
    path = tmp_path / "cache.npz"
    np.savez(path, x=np.array([RunsCode(tmp_path / "marker")], dtype=object), y=np.arange(1))
    with pytest.raises(UnsafeFileError) as err:
        read_cache(str(path))
    assert str(err.value) == (f"The probe's feature cache '{path}' holds pickled Python objects, which are never read "
                              "(they could run code); delete the file and the features are extracted again.")
    assert not (tmp_path / "marker").exists()
    write_cache(str(path), np.eye(2, dtype=np.float32), np.arange(2))  # a good cache replaces it atomically
    x, y = read_cache(str(path))
    assert np.array_equal(x, np.eye(2)) and np.array_equal(y, [0, 1])
    assert os.listdir(tmp_path) == ["cache.npz"]


def test_cifar10_batch_that_runs_code_is_refused(tmp_path):
    from freeze_embed.data.cifar10 import unpickle
    from freeze_embed.data.errors import DataFormatError
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": RunsCode(tmp_path / "marker")}, protocol=2))
    with pytest.raises(DataFormatError) as err:
        unpickle(str(path))
    assert str(err.value) == (f"{path} is not a CIFAR-10 python pickle (UnpicklingError: it asks for posix.system, "
                              "which a CIFAR-10 batch never does, and unpickling it could run code); re-download it.")
    assert not (tmp_path / "marker").exists()


def test_load_torch_reads_a_benign_full_pickle_only_when_trusted(tmp_path):
    path = tmp_path / "f.pt"
    buf = io.BytesIO()
    torch.save({"args": TrainArgs(lr=0.1)}, buf)
    path.write_bytes(buf.getvalue())
    with pytest.raises(UnsafeFileError):
        load_torch(path, "file")
    assert load_torch(path, "file", trust_pickle=True)["args"].lr == 0.1


def test_torchvision_download_in_the_cache_that_runs_code_is_refused(tmp_path, monkeypatch):
    """torchvision checks a download's hash only while downloading: a file already in the cache is read as it is."""
    from torchvision.models import ResNet18_Weights
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / os.path.basename(ResNet18_Weights.DEFAULT.url)
    cached.parent.mkdir(parents=True)
    torch.save({"fc.weight": torch.zeros(1), "hook": RunsCode(tmp_path / "marker")}, cached)
    with pytest.raises(UnsafeFileError) as err:
        create_backbone("torchvision:resnet18", True)
    assert str(err.value) == refused("pretrained weights", cached)
    assert not (tmp_path / "marker").exists()
