"""The one way to build anything from YAML: ``train.py``'s own parser (LightningCLI / jsonargparse), never a copy.

Every tool that reads the configs goes through here, so ``class_path`` resolution, defaults and argument links
(``model.backbone`` -> the data's normalisation, ``data.num_classes`` -> the head, the dataset's selection metric ->
the checkpoint) are the same as in training:

* :func:`compose`: the complete ``train.py fit`` config as a dict (what ``--print_config`` shows; nothing is built);
* :func:`parse`: the parsed and checked config, nothing built;
* :func:`build`: model, datamodule and trainer instantiated as ``train.py`` would, not run;
* :func:`build_data`: only the datamodule (no model is built, no weights downloaded).

The method registry (``configs/method/*.yaml``) and the FineTuner of one method, built here, are
:mod:`freeze_embed.run.methods`.
"""
from __future__ import annotations

import contextlib
import shlex
import sys
from pathlib import Path
from typing import Sequence

import yaml

from freeze_embed.errors import FreezeEmbedError, one_line
from freeze_embed.run.cli import FreezeEmbedCLI

REPO = Path(__file__).resolve().parents[2]  # the checkout: train.py, configs/
CONFIGS = REPO / "configs"
DEMO_CONFIG = CONFIGS / "demo.yaml"
# Parse errors become a ConfigError here, not jsonargparse's usage text and exit (the subcommand parser has its own).
_RAISE = {"exit_on_error": False, "fit": {"exit_on_error": False}}


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


class _CLI(FreezeEmbedCLI):
    """``train.py``'s CLI that runs no subcommand and says a parse error in one sentence (ConfigError); with
    ``build=False`` it stops once the arguments are parsed (and, with ``check``, checked as ``fit`` checks them):
    nothing is seeded or built. ``parsed``: the config as parsed, before any check."""

    def __init__(self, args: list[str], build: bool = True, check: bool = True):
        self.build, self.check = build, check
        with _quiet_argv(), contextlib.redirect_stdout(sys.stderr):  # Lightning's notes: stdout stays the result
            super().__init__(args=args, run=args[:1] == ["fit"], parser_kwargs=_RAISE)

    def parse_arguments(self, parser, args) -> None:
        from jsonargparse import ArgumentError
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            given = args[1:] if args[:1] == ["fit"] else args
            raise ConfigError(f"train.py cannot parse {shlex.join(given)}: {one_line(err, 600)}") from err
        self.parsed = self.config.clone()
        if not self.build:  # nothing runs, so nothing is seeded (and Lightning logs no "Seed set")
            key = self.config.get("subcommand")
            (self.config[key] if key else self.config)["seed_everything"] = False

    def before_instantiate_classes(self) -> None:
        if self.check:
            super().before_instantiate_classes()
        self.subcommand = None  # LightningCLI runs a subcommand only when there is one

    def instantiate_classes(self) -> None:
        if self.build:
            super().instantiate_classes()


def compose(configs: Sequence[str], overrides: Sequence[str] = ()) -> dict:
    """The complete ``train.py fit`` config from the real CLI parser (``--print_config``'s); nothing is built."""
    cli = _CLI(["fit", *_args(configs, overrides)], build=False, check=False)
    return yaml.safe_load(cli.parser.dump(cli.parsed, skip_unset=False))["fit"]


def parse(configs: Sequence[str], overrides: Sequence[str] = ()):
    """The parsed config (a jsonargparse Namespace, argument links on parse applied, checked as ``fit`` checks it),
    before anything is built."""
    return _CLI(_args(configs, overrides), build=False).config


def build(configs: Sequence[str], overrides: Sequence[str] = ()):
    """``train.py``'s CLI with model, datamodule and trainer instantiated as ``fit`` would, not run."""
    return _CLI(_args(configs, overrides))


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
