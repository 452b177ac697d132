"""Freezing strategies: one file per paper method, all subclasses of :class:`Strategy`.

Add your own by subclassing and naming it in YAML (``class_path: my_module.MyStrategy``); no registry.
"""
from .auto_rgn import AutoRGN
from .base import Strategy
from .embed_lr import EmbedLRScale
from .freeze_embed import FreezeEmbed
from .full import FullFineTune
from .gradual import GradualUnfreeze
from .l2sp import L2SP
from .linear_probe import LinearProbe
from .layer_decay import LayerDecay
from .lp_ft import LPFT
from .train_blocks import TrainBlocks
from .wrapper import Wrapper

__all__ = ["Strategy", "FullFineTune", "FreezeEmbed", "EmbedLRScale", "GradualUnfreeze", "LinearProbe", "LPFT",
           "TrainBlocks", "LayerDecay", "AutoRGN", "L2SP", "Wrapper"]
