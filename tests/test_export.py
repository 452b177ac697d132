"""``freeze_embed.tools.export``: the exported weights in the libraries' own models give the checkpoint's logits."""
from __future__ import annotations

import json
import re

import pytest
import timm
import torch

from helpers import ROOT
from model_files import CLASSES, TINY_CLIP, checkpoint

from freeze_embed.errors import run_command
from freeze_embed.tools.export import main as export

# Small variants of the paper's three timm families: ViT (classifier `head`), ConvNeXt (`head.fc`, a Linear) and
# ResNetV2 (`head.fc`, a 1x1 convolution).
TIMM = {"vit": ("timm:vit_tiny_patch16_224", None, 32),
        "convnext": ("timm:convnext_atto", {"depths": [1, 1, 1, 1], "dims": [8, 16, 24, 32]}, 64),
        "resnetv2": ("timm:resnetv2_18", {"layers": [1, 1, 1, 1], "channels": [8, 16, 24, 32]}, 64)}


def images(size: int, n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def exported(tmp_path, *args: str) -> dict:
    export(["--ckpt_path", str(tmp_path / "m.ckpt"), "--out", str(tmp_path / "exported"), *args])
    return json.loads((tmp_path / "exported" / "config.json").read_text())


@pytest.mark.parametrize("family", TIMM)
def test_stock_timm_gives_the_checkpoints_logits(family, tmp_path):
    spec, kwargs, size = TIMM[family]
    model = checkpoint(tmp_path / "m.ckpt", spec, kwargs, size)
    cfg = exported(tmp_path)
    assert cfg["class_names"] == CLASSES and cfg["backbone"] == spec
    assert cfg["preprocess"] == torch.load(tmp_path / "m.ckpt", weights_only=True)["preprocess"]
    stock = timm.create_model(cfg["architecture"], num_classes=len(cfg["class_names"]),
                              checkpoint_path=str(tmp_path / "exported/model.safetensors"),
                              **cfg["backbone_kwargs"]).eval()
    x = images(size)
    with torch.no_grad():
        want, got = model(x), stock(x)
    assert want.std() > 0.1  # logits that differ, not a degenerate head
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def doc_recipe(library_call: str) -> str:
    """The python block of docs/own_data.md that calls ``library_call``, verbatim."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs/own_data.md").read_text(), re.S)
    [block] = [b for b in blocks if library_call in b]
    return block


@pytest.mark.parametrize("library", ["timm", pytest.param("torchvision", marks=pytest.mark.slow), "open_clip",
                                     "open_clip_zeroshot"])
def test_readme_recipe_rebuilds_the_model(library, tmp_path, monkeypatch):
    spec, kwargs, size, head_init, call = {
        "timm": ("timm:convnext_atto", TIMM["convnext"][1], 64, "random", "timm.create_model"),
        # a small model whose classifier slot is nested (classifier.3); the anatomy needs its embedding named
        "torchvision": ("torchvision:mobilenet_v3_small", {}, 32, "random", "torchvision.models.get_model"),
        "open_clip": ("open_clip:ViT-B-32:openai", TINY_CLIP, 32, "random", "open_clip.create_model"),
        "open_clip_zeroshot": ("open_clip:ViT-B-32:openai", TINY_CLIP, 32, "zeroshot", "open_clip.create_model"),
    }[library]
    embed = ["features.0"] if library == "torchvision" else None
    model = checkpoint(tmp_path / "m.ckpt", spec, kwargs, size, head_init=head_init, embed=embed)
    exported(tmp_path)
    monkeypatch.chdir(tmp_path)  # the recipes name exported/ relative to the working folder
    scope: dict = {}
    exec(doc_recipe(call), scope)  # noqa: S102 - our own documentation, run as a user would
    x = images(size)
    with torch.no_grad():
        torch.testing.assert_close(scope["model"](x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_onnx_equals_pytorch(tmp_path, monkeypatch):
    import onnxruntime
    model = checkpoint(tmp_path / "m.ckpt")
    exported(tmp_path, "--onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "exported/model.onnx"))
    for n in (1, 5):  # the batch axis is dynamic
        x = images(32, n)
        with torch.no_grad():
            want = model(x).numpy()
        got = session.run(None, {"image": x.numpy()})[0]
        assert got.shape == (n, len(CLASSES))
        torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(want), rtol=1e-4, atol=1e-4)
    monkeypatch.chdir(tmp_path)
    scope = {"images": images(32, 2)}
    exec(doc_recipe("onnxruntime.InferenceSession"), scope)  # noqa: S102 - runs our own docs' recipe, as a user would
    assert scope["logits"].shape == (2, len(CLASSES))


def one_error(capsys, args: list[str]) -> str:
    status = run_command(export, args)  # what python -m does with the error main raises
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err, err
    [line] = [line for line in err.splitlines() if line.startswith("error: ")]
    return line


def test_not_a_freeze_embed_checkpoint(tmp_path, capsys):
    torch.save({"model": {"w": torch.zeros(1)}}, tmp_path / "other.pt")
    msg = one_error(capsys, ["--ckpt_path", str(tmp_path / "other.pt"), "--out", str(tmp_path / "out")])
    assert msg == (f"error: '{tmp_path / 'other.pt'}' is not a freeze-embed checkpoint (it has no model "
                   "hyper-parameters and state_dict): give a .ckpt file train.py wrote, e.g. "
                   "<run_dir>/checkpoints/last.ckpt.")
    assert not (tmp_path / "out").exists()


def test_patchify_stem_is_refused(tmp_path, capsys):
    checkpoint(tmp_path / "m.ckpt", "timm:resnetv2_18", {**TIMM["resnetv2"][1], "stem": "patchify"}, 64)
    msg = one_error(capsys, ["--ckpt_path", str(tmp_path / "m.ckpt"), "--out", str(tmp_path / "out")])
    assert msg == ("error: Backbone kwarg stem: 'patchify' has no stock timm equivalent, so this checkpoint cannot "
                   "be exported; use it with python -m freeze_embed.tools.predict instead.")
    assert not (tmp_path / "out").exists()
