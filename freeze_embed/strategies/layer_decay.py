"""Layer-wise LR decay (BEiT; MAE's fine-tuning recipe, ``facebookresearch/mae`` ``util/lr_decay.py``)."""
from __future__ import annotations

from freeze_embed.anatomy import Anatomy
from freeze_embed.strategies.base import Strategy


def layer_ids(anatomy: Anatomy) -> dict[str, int]:
    """MAE's ``get_layer_id_for_vit`` through the anatomy, so it holds for every family: the embedding and the
    class/position tokens are layer 0, block i is layer i + 1, everything after the blocks (final norm, CLIP's
    projection) and the head is layer L + 1."""
    ids = {n: 0 for n in anatomy.embed + anatomy.tokens}
    late = set(anatomy.top) | set(anatomy.head)
    for i, block in enumerate(anatomy.blocks):
        ids.update({n: i + 1 for n in block if n not in ids and n not in late})
    ids.update({n: len(anatomy.blocks) + 1 for n in anatomy.top + anatomy.head})
    return ids


class LayerDecay(Strategy):
    """Train everything; layer ``l`` of ``L + 2`` at ``decay ** (L + 1 - l)`` times the base LR.

    0.65 is MAE's ViT-B value (``main_finetune.py --layer_decay 0.65``; BEiT uses 0.65 to 0.9). The scales are
    ordinary LR scales of our optimizer groups, so the cosine, the sweeps and the in-backward step apply them (timm's
    ``param_groups_layer_decay`` puts them in an ``lr_scale`` key only timm's schedulers read). MAE also exempts
    1-D tensors and the tokens from weight decay: ``model.no_weight_decay``, which ``adamw_layer_decay`` sets.
    """

    def __init__(self, decay: float = 0.65):
        self.decay = decay

    def lr_scales(self, anatomy: Anatomy) -> dict[str, float]:
        ids = layer_ids(anatomy)
        top = len(anatomy.blocks) + 1
        return {n: self.decay ** (top - ids[n]) for n in anatomy.names if ids[n] != top}
