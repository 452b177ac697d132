"""SGD (5x lower LR on embed layer), Appendix B: the embedding's gradients are about 5x larger than other layers'."""
from freeze_embed.anatomy import Anatomy
from freeze_embed.strategies.base import Strategy


class EmbedLRScale(Strategy):
    """Train everything, the embedding at ``scale`` times the base LR (0.2 = 5x lower, as in the paper)."""

    def __init__(self, scale: float = 0.2):
        self.scale = scale

    def lr_scales(self, anatomy: Anatomy) -> dict[str, float]:
        return {n: self.scale for n in anatomy.embed}
