"""Surgical fine-tuning (Lee et al., ICLR 2023) and SubTuning's subsets: train only some of the anatomy's blocks."""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np

from freeze_embed.anatomy import Anatomy
from freeze_embed.errors import FreezeEmbedError
from freeze_embed.strategies.base import Strategy

BlockSpec = Union[int, str]
PRESETS = ("first", "middle", "last")


class BlockSpecError(FreezeEmbedError, ValueError):
    """A ``TrainBlocks.blocks`` entry that names no block of this backbone."""


def select_blocks(spec: Union[BlockSpec, Sequence[BlockSpec]], num_blocks: int) -> list[int]:
    """Indices (sorted, bottom = 0) that ``spec`` names among ``num_blocks`` blocks.

    ``spec`` is a preset (``first``, ``middle``, ``last``: the bottom, middle and top third of the blocks, split as
    ``numpy.array_split``), or a list of block indices (negative counts from the top, ``-1`` is the top block) and
    ``"a:b"`` ranges (Python slices, end excluded, e.g. ``"0:3"``, ``"-2:"``).
    """
    if isinstance(spec, str) and spec in PRESETS:
        thirds = np.array_split(np.arange(num_blocks), 3)
        return [int(i) for i in thirds[PRESETS.index(spec)]]
    items = [spec] if isinstance(spec, (int, str)) else list(spec)
    chosen: set[int] = set()
    for item in items:
        if isinstance(item, str) and ":" in item:
            try:
                start, stop = (int(s) if s.strip() else None for s in item.split(":"))
            except ValueError:
                raise BlockSpecError(f"TrainBlocks range '{item}' is not 'a:b' with integers "
                                     "(e.g. '0:3', '-2:').") from None
            chosen.update(range(num_blocks)[slice(start, stop)])
            continue
        try:
            index = int(item)
        except (TypeError, ValueError):
            raise BlockSpecError(f"TrainBlocks entry {item!r} is not a block index, an 'a:b' range or one of "
                                 f"{list(PRESETS)}.") from None
        if not -num_blocks <= index < num_blocks:
            raise BlockSpecError(f"TrainBlocks block {index} does not exist: this backbone has {num_blocks} blocks "
                                 f"(0..{num_blocks - 1}, or -{num_blocks}..-1 from the top).")
        chosen.add(index % num_blocks)
    return sorted(chosen)


class TrainBlocks(Strategy):
    """Train only the named blocks (plus the head, and the embedding if ``embed``); freeze everything else.

    Surgical fine-tuning's finding is that the best block to tune depends on the shift (input-level shifts: the first
    block; output-level: the last), and SubTuning searches the subset greedily
    (``python -m freeze_embed.tools.subtuning``, which writes its pick as a TrainBlocks config). ``blocks: []`` with
    ``head: true`` trains the head alone with the run's optimizer (SubTuning's linear-probe start).

    Presets: ``first`` / ``middle`` / ``last`` are the bottom / middle / top third of the anatomy's blocks. Lee et
    al. tune ResNet "Block 1" together with the stem (``first_two_block`` = ``conv1`` + ``block1`` in
    ``anniesch/surgical-finetuning`` ``main.py``): add ``embed: true`` for that.

    ``embed_blocks: true`` counts the blocks inside the embedding's first stage (ResNets' ``layer1``, BiT's and
    ConvNeXt's ``stages.0``: ``Anatomy.embed_blocks``) first, then the anatomy's blocks: SubTuning's ResNet candidates
    are every block, ``layer1``'s included, and the stem stays frozen.
    """

    def __init__(self, blocks: Union[BlockSpec, list[BlockSpec]] = "last", embed: bool = False, head: bool = True,
                 embed_blocks: bool = False):
        self.blocks = blocks
        self.embed = embed
        self.head = head
        self.embed_blocks = embed_blocks

    def candidates(self, anatomy: Anatomy) -> list[list[str]]:
        """The blocks indices count over: the anatomy's, after the embedding's own with ``embed_blocks``."""
        return (anatomy.embed_blocks if self.embed_blocks else []) + anatomy.blocks

    def block_indices(self, anatomy: Anatomy) -> list[int]:
        return select_blocks(self.blocks, len(self.candidates(anatomy)))

    def frozen(self, anatomy: Anatomy) -> list[str]:
        candidates = self.candidates(anatomy)
        trained = {n for i in self.block_indices(anatomy) for n in candidates[i]}
        if self.embed:
            trained.update(anatomy.embed)
        if self.head:
            trained.update(anatomy.head)
        return [n for n in anatomy.names if n not in trained]
