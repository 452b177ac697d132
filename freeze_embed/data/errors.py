"""The errors a data set-up can raise, each one sentence naming what was looked for where and how to fix it.

A run that dies after an hour on a missing folder, or trains on a silently wrong label, wastes a GPU day; so each
loader checks its layout before touching a library and raises one of these instead of a library's stack trace.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

from freeze_embed.errors import FreezeEmbedError


class DataRootError(FreezeEmbedError, FileNotFoundError):
    """The data root is missing or has the wrong layout; the message names the layout and how to get the data."""


class DataFormatError(FreezeEmbedError, ValueError):
    """A metadata or split file does not say what it should (e.g. a label that disagrees with its class folder)."""


class ImageReadError(FreezeEmbedError, OSError):
    """An image file is missing, truncated or not an image; the message names the file."""


def missing_root(dataset: str, root: Optional[str], layout: str, how: str) -> DataRootError:
    """One sentence: what was looked for where, and how to get it (``root`` as the user gave it)."""
    where = f"'{root}'" if root else "no root (set data.init_args.root)"
    return DataRootError(f"{dataset} data not found at {where}: expected {layout}; {how}.")


def missing_files(directory: str, names: Sequence[str]) -> list[str]:
    """The entries of ``names`` (files or folders) that ``directory`` lacks."""
    return [n for n in names if not os.path.exists(os.path.join(directory, n))]
