"""Freezing strategies: one file per paper method, all subclasses of :class:`Strategy`.

Add your own by subclassing and naming it in YAML (``class_path: my_module.MyStrategy``); no registry.
"""
from freeze_embed.strategies.auto_rgn import AutoRGN
from freeze_embed.strategies.base import Strategy
from freeze_embed.strategies.embed_lr import EmbedLRScale
from freeze_embed.strategies.freeze_embed import FreezeEmbed
from freeze_embed.strategies.full import FullFineTune
from freeze_embed.strategies.gradual import GradualUnfreeze
from freeze_embed.strategies.l2sp import L2SP
from freeze_embed.strategies.linear_probe import LinearProbe
from freeze_embed.strategies.layer_decay import LayerDecay
from freeze_embed.strategies.lp_ft import LPFT
from freeze_embed.strategies.train_blocks import TrainBlocks
from freeze_embed.strategies.wrapper import Wrapper

__all__ = ["Strategy", "FullFineTune", "FreezeEmbed", "EmbedLRScale", "GradualUnfreeze", "LinearProbe", "LPFT",
           "TrainBlocks", "LayerDecay", "AutoRGN", "L2SP", "Wrapper"]
