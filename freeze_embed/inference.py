"""A trained classifier for inference, from a checkpoint train.py wrote or from a folder ``export`` wrote.

Either way: an eval-mode ``nn.Module`` (images -> logits), the class names in label order and the test-time
preprocessing under timm's ``pretrained_cfg`` names (``timm.data.create_transform(**preprocess)`` rebuilds it).
An export is rebuilt with the backbone's own library only (:func:`library_model`), exactly as docs/own_data.md tells
users to; a checkpoint through the FineTuner, so every head and backbone option it trained with is honoured.
:func:`read_checkpoint` is the one reader of train.py's checkpoints (predict, export and wise_ft read them with it).
"""
from __future__ import annotations

import inspect
import json
import os
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from freeze_embed.errors import FreezeEmbedError
from freeze_embed.files import MODEL_OPT_IN, load_state_dict, load_strict, load_torch

CONFIG, WEIGHTS, ONNX = "config.json", "model.safetensors", "model.onnx"


class ModelFileError(FreezeEmbedError):
    """A checkpoint or export folder this package did not write, or one that is incomplete."""


@dataclass
class Classifier:
    model: nn.Module  # (B, 3, H, W) normalised images -> (B, K) logits, in eval mode
    class_names: list[str]
    preprocess: dict  # timm.data.create_transform(**preprocess) is the test-time transform


@dataclass
class Checkpoint:
    """What train.py saved: the FineTuner's weights and hyper-parameters, and the whole file (``saved``: epoch,
    class names, test-time transform, and the training state a resume needs)."""
    state_dict: dict
    hyper_parameters: dict
    saved: dict

    @property
    def epoch(self) -> int:
        return int(self.saved.get("epoch", 0))


def _not_ours(path: str) -> ModelFileError:
    return ModelFileError(f"'{path}' is not a freeze-embed checkpoint (it has no model hyper-parameters and "
                          "state_dict): give a .ckpt file train.py wrote, e.g. <run_dir>/checkpoints/last.ckpt.")


def check_checkpoint_path(path: str) -> None:
    """One sentence for a checkpoint that is not there, said before anything expensive is built."""
    if not os.path.isfile(path):
        raise ModelFileError(f"Checkpoint '{path}' does not exist: give a .ckpt file train.py wrote, e.g. "
                             "<run_dir>/checkpoints/last.ckpt.")


def read_checkpoint(path: str, trust_pickle: bool = False, opt_in: str = MODEL_OPT_IN) -> Checkpoint:
    """The one reader of a train.py checkpoint: ``weights_only`` unless ``trust_pickle``, so a file that needs
    arbitrary pickle is refused in one sentence naming ``opt_in``, the caller's flag that trusts it."""
    check_checkpoint_path(path)
    saved = load_torch(path, "checkpoint", trust_pickle, opt_in=opt_in)
    if not isinstance(saved, dict) or not isinstance(saved.get("state_dict"), dict):
        raise _not_ours(path)
    hparams = saved.get("hyper_parameters")
    return Checkpoint(saved["state_dict"], dict(hparams) if isinstance(hparams, dict) else {}, saved)


def from_checkpoint(path: str, trust_pickle: bool = False) -> Classifier:
    """The FineTuner a train.py checkpoint holds (random init, then its weights, strictly)."""
    checkpoint = read_checkpoint(path, trust_pickle)
    if "backbone" not in checkpoint.hyper_parameters:
        raise _not_ours(path)
    missing = [key for key in ("class_names", "preprocess") if key not in checkpoint.saved]
    if missing:
        raise ModelFileError(f"The checkpoint '{path}' has no {' and no '.join(missing)} (an older version of "
                             "freeze-embed wrote it, before checkpoints carried them): train it again with this one.")
    from freeze_embed.module import FineTuner
    accepted = inspect.signature(FineTuner.__init__).parameters  # LightningCLI also saves "_instantiator"
    kwargs = {k: v for k, v in checkpoint.hyper_parameters.items() if k in accepted}
    model = FineTuner(**{**kwargs, "pretrained": False})  # the checkpoint's weights replace every parameter
    load_strict(model, checkpoint.state_dict, lambda detail: ModelFileError(
        f"The checkpoint '{path}' does not fit the model its own hyper-parameters build ({detail})."))
    return Classifier(model.eval(), list(checkpoint.saved["class_names"]), dict(checkpoint.saved["preprocess"]))


def library_model(config: dict, weights: dict[str, torch.Tensor]) -> nn.Module:
    """The exported model, built by the backbone's own library from ``config.json`` (docs/own_data.md's recipes)."""
    model = stock_model(config)
    model.load_state_dict(weights, strict=True)
    return model.eval()


def stock_model(config: dict) -> nn.Module:
    """The library's model with random weights: for timm and torchvision their own classifier sized for our classes;
    an open_clip image tower has none, so it is followed by a linear head (``backbone.*``, ``head.*``)."""
    library, arch, kwargs = config["library"], config["architecture"], config["backbone_kwargs"]
    num_classes = len(config["class_names"])
    if library == "timm":
        import timm
        return timm.create_model(arch, num_classes=num_classes, **kwargs)
    if library == "torchvision":
        import torchvision
        return torchvision.models.get_model(arch, num_classes=num_classes, **kwargs)
    if library == "open_clip":
        import open_clip
        from freeze_embed.zeroshot import NormalizedLinear
        visual = open_clip.create_model(arch, **kwargs).visual
        head = (NormalizedLinear if config.get("normalize_features") else nn.Linear)(visual.output_dim, num_classes)
        return nn.Sequential(OrderedDict(backbone=visual, head=head))
    raise ModelFileError(f"Unknown library '{library}' in an export's {CONFIG}: export it again.")


def from_export(folder: str) -> Classifier:
    """The model ``python -m freeze_embed.tools.export`` wrote into ``folder``."""
    config_path, weights_path = os.path.join(folder, CONFIG), os.path.join(folder, WEIGHTS)
    if not (os.path.isfile(config_path) and os.path.isfile(weights_path)):
        raise ModelFileError(f"'{folder}' is not an export folder (it needs {CONFIG} and {WEIGHTS}): give the --out "
                             "folder of python -m freeze_embed.tools.export.")
    try:
        with open(config_path) as f:
            config = json.load(f)
        names, preprocess = list(config["class_names"]), dict(config["preprocess"])
    except (ValueError, KeyError, TypeError) as err:
        raise ModelFileError(f"'{config_path}' is not a freeze-embed export config ({type(err).__name__}: {err}): "
                             "export the checkpoint again.") from err
    return Classifier(library_model(config, load_state_dict(weights_path)), names, preprocess)


def load_classifier(path: str, trust_pickle: bool = False) -> Classifier:
    """A folder is an export, a file a checkpoint."""
    if os.path.isdir(path):
        return from_export(path)
    return from_checkpoint(path, trust_pickle)
