"""Fetching a file or an archive from a URL into the data root (``download: true`` for non-WILDS releases)."""
from __future__ import annotations

import os


def download(url: str, directory: str, extract: bool = False) -> None:
    """Fetch ``url`` into ``directory`` (and unpack an archive there) with torchvision's downloader."""
    from torchvision.datasets.utils import download_and_extract_archive, download_url
    os.makedirs(directory, exist_ok=True)
    if extract:
        download_and_extract_archive(url, download_root=directory, remove_finished=True)
    else:
        download_url(url, directory)
