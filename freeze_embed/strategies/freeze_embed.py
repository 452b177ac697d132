"""SGD (freeze-embed), Section 3.4: freeze the embedding layer at its pretrained values, tune the rest."""
from __future__ import annotations

from typing import Optional, Sequence

from freeze_embed.anatomy import Anatomy, EmbedNotFound
from freeze_embed.strategies.base import Strategy


class FreezeEmbed(Strategy):
    """Freeze ``anatomy.embed``.

    Args:
        freeze_norm: also freeze norm layers inside the embedding (CLIP's ``ln_pre``). ``False`` is the paper's
            "freeze-embed, not layer-norm" ablation (Appendix B, Tables 7-8).
        parts: freeze only these embed modules, e.g. ``[stem]`` for ConvNeXt's "freeze-stem" ablation
            (Appendix C); ``None`` freezes the whole embedding.
    """

    def __init__(self, freeze_norm: bool = True, parts: Optional[Sequence[str]] = None):
        self.freeze_norm = freeze_norm
        self.parts = list(parts) if parts is not None else None

    def frozen(self, anatomy: Anatomy) -> list[str]:
        names = anatomy.embed
        if not names:
            raise EmbedNotFound("This backbone's anatomy has an empty embedding; list its parameter prefixes in "
                                "`model.embed`.")
        if self.parts is not None:
            prefixes = [f"backbone.{p}" for p in self.parts]
            missing = [p for p, full in zip(self.parts, prefixes)
                       if not any(n == full or n.startswith(full + ".") for n in names)]
            if missing:
                raise EmbedNotFound(f"FreezeEmbed parts {missing} are not in the embedding; it is made of "
                                    f"{anatomy.embed_modules}.")
            names = [n for n in names if any(n.startswith(p + ".") for p in prefixes)]
        if not self.freeze_norm:
            names = [n for n in names if n not in anatomy.norms]
        return list(names)
