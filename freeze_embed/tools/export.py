"""Export a checkpoint as a model that needs neither Lightning nor this package.

    python -m freeze_embed.tools.export --ckpt_path runs/x/checkpoints/best.ckpt --out exported/ [--onnx]

Writes ``<out>/model.safetensors`` and ``<out>/config.json`` (``backbone``: our spec string; ``library`` and
``architecture``: what to build; ``backbone_kwargs``: the library constructor's keyword arguments; ``class_names``;
``preprocess``: the test-time transform under timm's ``pretrained_cfg`` names), and with ``--onnx`` ``model.onnx``
(input ``image``, output ``logits``, dynamic batch). The weights fit the library's own model: a timm or torchvision
backbone gets our head in its own classifier slot (``timm.create_model(architecture, num_classes=K,
checkpoint_path=...)``); open_clip, whose image tower has no classifier, gets ``backbone.*`` (the image tower) and
``head.*``. Before writing, the rebuilt model's logits are checked against the checkpoint's.
"""
from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

import torch
from torch import nn

from freeze_embed.backbones import parse_spec
from freeze_embed.errors import FreezeEmbedError, run_command
from freeze_embed.files import atomic_write, load_strict, write_json
from freeze_embed.inference import CONFIG, ONNX, WEIGHTS, from_checkpoint, stock_model

TOLERANCE = 1e-5  # the rebuilt model's logits against the checkpoint's (absolute and relative)


class ExportError(FreezeEmbedError):
    """A checkpoint whose model the backbone's library cannot rebuild on its own."""


def classifier_slots(model: nn.Module, library: str) -> list[str]:
    """Names of the stock model's classifier layer(s): timm's ``pretrained_cfg['classifier']``, torchvision's last
    Linear (the layer ``backbones.create_backbone`` replaced by our head)."""
    if library == "timm":
        slots = model.pretrained_cfg.get("classifier") or "head"
        return [slots] if isinstance(slots, str) else list(slots)
    return [[name for name, m in model.named_modules() if isinstance(m, nn.Linear)][-1]]


def library_config(hparams: dict, class_names: list[str], preprocess: dict) -> dict:
    spec = parse_spec(hparams["backbone"])
    kwargs = dict(hparams.get("backbone_kwargs") or {})
    config = {"backbone": str(spec), "library": spec.library, "architecture": spec.name, "backbone_kwargs": kwargs,
              "class_names": list(class_names), "preprocess": dict(preprocess)}
    if spec.library == "timm":
        if "stem" in kwargs:
            raise ExportError(f"Backbone kwarg stem: {kwargs['stem']!r} has no stock timm equivalent, so this "
                              "checkpoint cannot be exported; use it with python -m freeze_embed.tools.predict "
                              "instead.")
        config["architecture"] = f"{spec.name}.{spec.tag}" if spec.tag else spec.name  # as backbones._timm builds it
    elif spec.library == "open_clip":
        kwargs["force_quick_gelu"] = spec.tag == "openai"  # as backbones.open_clip_model builds it
        config["normalize_features"] = hparams.get("head_init") == "zeroshot"
    return config


def library_weights(state: dict[str, torch.Tensor], config: dict, stock: nn.Module) -> dict[str, torch.Tensor]:
    """The FineTuner's ``backbone.*``/``head.*`` weights under the names of ``stock`` (``inference.stock_model``)."""
    if config["library"] == "open_clip":
        return dict(state)
    weights = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    shapes = {k: v.shape for k, v in stock.state_dict().items()}
    for slot in classifier_slots(stock, config["library"]):
        for part in ("weight", "bias"):
            key = f"{slot}.{part}"
            if key not in shapes or shapes[key].numel() != state[f"head.{part}"].numel():
                raise ExportError(f"The {config['architecture']} classifier '{slot}' is not a linear layer of our "
                                  "head's shape, so this checkpoint cannot be exported; use it with python -m "
                                  "freeze_embed.tools.predict instead.")
            weights[key] = state[f"head.{part}"].reshape(shapes[key])  # ResNetV2's head is a 1x1 conv
    return weights


def check_logits(reference: nn.Module, rebuilt: nn.Module, preprocess: dict) -> None:
    x = torch.randn(2, *preprocess["input_size"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = reference(x), rebuilt(x)
    if not torch.allclose(got, want, rtol=TOLERANCE, atol=TOLERANCE):
        raise RuntimeError(f"The rebuilt model's logits differ from the checkpoint's by up to "
                           f"{(got - want).abs().max().item():.3g}: the weight mapping is wrong for this backbone.")


def export(ckpt_path: str, out: str, onnx: bool = False) -> list[str]:
    """Write the export into ``out``; returns the files written."""
    if onnx:
        try:
            import onnxscript  # noqa: F401 - only checks it is installed: torch.onnx's exporter needs it
        except ImportError as err:
            raise ExportError("--onnx needs the export extra: pip install 'freeze-embed[export]' (onnx, onnxscript, "
                              "onnxruntime).") from err
    loaded = from_checkpoint(ckpt_path)
    config = library_config(dict(loaded.model.hparams), loaded.class_names, loaded.preprocess)
    rebuilt = stock_model(config)
    weights = {k: v.detach().clone().contiguous() for k, v in
               library_weights(loaded.model.state_dict(), config, rebuilt).items()}
    load_strict(rebuilt, weights, lambda detail: ExportError(
        f"The stock {config['architecture']} does not take this checkpoint's weights ({detail}); use it with "
        "python -m freeze_embed.tools.predict instead."))
    rebuilt.eval()
    check_logits(loaded.model, rebuilt, config["preprocess"])
    from safetensors.torch import save
    with atomic_write(os.path.join(out, WEIGHTS)) as f:
        f.write(save(weights, metadata={"format": "pt"}))
    write_json(os.path.join(out, CONFIG), config)
    written = [WEIGHTS, CONFIG]
    if onnx:
        write_onnx(rebuilt, config["preprocess"], os.path.join(out, ONNX))
        written.append(ONNX)
    return [os.path.join(out, name) for name in written]


def write_onnx(model: nn.Module, preprocess: dict, path: str) -> None:
    """``model.onnx``: input ``image`` (batch, 3, H, W), output ``logits`` (batch, K), the batch dynamic."""
    x = torch.zeros(2, *preprocess["input_size"])
    program = torch.onnx.export(model, (x,), input_names=["image"], output_names=["logits"],
                                dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True, verbose=False)
    with atomic_write(path) as f:
        f.write(program.model_proto.SerializeToString())  # one file (protobuf's limit: models under 2 GB)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m freeze_embed.tools.export", description=__doc__.split("\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--ckpt_path", required=True, help="checkpoint written by train.py")
    parser.add_argument("--out", required=True, help="folder for model.safetensors, config.json (and model.onnx)")
    parser.add_argument("--onnx", action="store_true", help="also write model.onnx (needs the export extra)")
    args = parser.parse_args(argv)
    written = export(args.ckpt_path, args.out, args.onnx)
    print(f"Wrote {', '.join(os.path.basename(p) for p in written)} to {os.path.abspath(args.out)}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command(main))
