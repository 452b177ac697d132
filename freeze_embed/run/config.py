"""The one way to build anything from YAML: ``train.py``'s own parser (LightningCLI / jsonargparse), never a copy.

Every tool that reads the configs goes through here, so ``class_path`` resolution, defaults and argument links
(``model.backbone`` -> the data's normalisation, ``data.num_classes`` -> the head, the dataset's selection metric ->
the checkpoint) are the same as in training:

* :func:`compose`: the complete ``train.py fit`` config as a dict (``--print_config``; nothing is built);
* :func:`build`: model, datamodule and trainer instantiated as ``train.py`` would, not run;
* :func:`parse`: the parsed config, nothing built;
* :func:`build_data`: only the datamodule (no model is built, no weights downloaded).
"""
from __future__ import annotations

import contextlib
import io
import shlex
import sys
from pathlib import Path
from typing import Sequence

import yaml

from freeze_embed.errors import FreezeEmbedError


REPO = Path(__file__).resolve().parents[2]  # the checkout: train.py, configs/
CONFIGS = REPO / "configs"
DEMO_CONFIG = CONFIGS / "demo.yaml"


class ConfigError(FreezeEmbedError):
    """A config that ``train.py`` cannot parse, or a method that does not exist; the message says which."""


def _args(configs: Sequence[str], overrides: Sequence[str]) -> list[str]:
    return [*[a for c in configs for a in ("--config", str(c))], *overrides]


@contextlib.contextmanager
def _quiet_argv():
    """The CLI warns when it is given ``args`` while ``sys.argv`` holds a tool's own arguments."""
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        yield
    finally:
        sys.argv = argv


def compose(configs: Sequence[str], overrides: Sequence[str] = ()) -> dict:
    """The complete ``train.py fit`` config from the real CLI parser; nothing is built."""
    from freeze_embed.run.cli import FreezeEmbedCLI
    args = ["fit", *_args(configs, overrides)]
    out, err, code = io.StringIO(), io.StringIO(), 0
    with _quiet_argv(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            FreezeEmbedCLI(args=args + ["--print_config"])
        except SystemExit as exit_:
            code = exit_.code or 0
    if code or not out.getvalue().strip():
        lines = err.getvalue().strip().splitlines()
        why = "\n".join(lines[next((i for i, x in enumerate(lines) if x.startswith("error:")), 0):])
        raise ConfigError(f"train.py fit cannot parse {shlex.join(args[1:])}:\n{why}")
    return yaml.safe_load(out.getvalue())


def build(configs: Sequence[str], overrides: Sequence[str] = ()):
    """``FreezeEmbedCLI`` with model, datamodule and trainer instantiated as ``train.py`` would, not run.

    Lightning's start-up notes go to stderr, so a command's stdout stays its result (``--json``)."""
    from freeze_embed.run.cli import FreezeEmbedCLI
    with _quiet_argv(), contextlib.redirect_stdout(sys.stderr):
        return FreezeEmbedCLI(args=_args(configs, overrides), run=False)


def parse(configs: Sequence[str], overrides: Sequence[str] = ()):
    """The parsed config (a jsonargparse Namespace, argument links on parse applied), before anything is built."""
    from freeze_embed.run.cli import FreezeEmbedCLI

    class Parsed(Exception):
        pass

    class ParseOnly(FreezeEmbedCLI):
        def instantiate_classes(self) -> None:
            raise Parsed(self.config)

    try:  # nothing runs, so nothing is seeded (and Lightning logs no "Seed set")
        with _quiet_argv(), contextlib.redirect_stdout(sys.stderr):
            ParseOnly(args=[*_args(configs, overrides), "--seed_everything", "false"], run=False)
    except Parsed as done:
        return done.args[0]
    except SystemExit as exit_:
        raise ConfigError(f"train.py cannot parse {shlex.join(_args(configs, overrides))} (see above).") from exit_
    raise AssertionError("LightningCLI instantiated its classes without calling instantiate_classes")


def build_data(configs: Sequence[str], overrides: Sequence[str] = ()):
    """Only the datamodule, resolved and linked (the backbone's normalisation) as the CLI does; no model is built
    or downloaded, so checking a data set-up costs nothing else."""
    from jsonargparse import ArgumentParser
    from freeze_embed.data.base import ShiftDataModule
    data = parse(configs, overrides).get("data")
    if data is None or not data.get("class_path"):
        raise ConfigError("No data class: give --config with a 'data: {class_path: ...}' section "
                          "(e.g. configs/data/waterbirds.yaml) or --data.class_path.")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(ShiftDataModule, "data")
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    return instantiate(parser.parse_object({"data": data.as_dict()})).data


def demo_backbone() -> tuple[str, dict]:
    """(spec, backbone_kwargs) of the demo's tiny ViT: ``configs/demo.yaml`` is the one place that defines it."""
    model = compose([DEMO_CONFIG])["model"]
    return model["backbone"], dict(model["backbone_kwargs"])
