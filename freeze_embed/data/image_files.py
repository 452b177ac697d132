"""Listing a user's image files: class-per-folder trees, plain folders and CSV manifests.

Folders follow torchvision's ``ImageFolder`` convention (``<root>/<class>/.../<file>``), read recursively below each
class folder; files whose extension is not in torchvision's ``IMG_EXTENSIONS`` and hidden files and folders (a
leading ``.``) are skipped. Listings are sorted, so every process of a DDP run sees the same order and class list.
``os.scandir`` reuses the directory entries' types, so 100,000 files list in about a second (no ``stat`` per file).
"""
from __future__ import annotations

import csv
import os
from typing import NamedTuple, Optional

from torchvision.datasets.folder import IMG_EXTENSIONS

from freeze_embed.data.errors import DataFormatError, DataRootError


class ManifestRow(NamedTuple):
    path: str  # absolute
    label: Optional[str]  # a class name or an integer index as written, or None (no label column / empty cell)
    group: Optional[str]


def is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def _walk(directory: str) -> list[str]:
    """Every image file below ``directory`` (unsorted), hidden files and folders skipped."""
    found, dirs = [], []
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                dirs.append(entry.path)
            elif is_image(entry.name):
                found.append(entry.path)
    for sub in dirs:
        found.extend(_walk(sub))
    return found


def _check_dir(root: str) -> str:
    path = os.path.abspath(os.path.expanduser(str(root)))
    if not os.path.isdir(path):
        raise DataRootError(f"Image folder '{root}' does not exist: give a folder with one sub-folder per class "
                            "(<folder>/<class>/<image>) or a CSV manifest with columns path,label.")
    return path


def class_folders(root: str) -> list[str]:
    """The sorted names of ``root``'s non-hidden sub-folders: the classes of an ``ImageFolder`` tree."""
    path = _check_dir(root)
    with os.scandir(path) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def list_folder(root: str) -> list[tuple[str, str]]:
    """``[(absolute path, class name)]`` of a class-per-folder tree, sorted by class then path."""
    path = _check_dir(root)
    classes = class_folders(root)
    if not classes:
        raise DataRootError(f"Image folder '{root}' has no class sub-folders: expected <folder>/<class>/<image> "
                            "(torchvision's ImageFolder layout), or give a CSV manifest with columns path,label.")
    return [(f, c) for c in classes for f in sorted(_walk(os.path.join(path, c)))]


def list_images(root: str) -> list[str]:
    """Every image file below ``root`` (any layout, no labels), sorted."""
    return sorted(_walk(_check_dir(root)))


def read_manifest(path: str) -> list[ManifestRow]:
    """The rows of a CSV manifest with columns ``path`` and optionally ``label`` and ``group``.

    Paths are relative to the CSV's folder unless absolute; empty label or group cells are None.
    """
    csv_path = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isfile(csv_path):
        raise DataRootError(f"Manifest '{path}' does not exist: give a CSV file with columns path,label[,group].")
    base = os.path.dirname(csv_path)
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        if "path" not in columns:
            raise DataFormatError(f"Manifest '{path}' has columns {columns} but needs a 'path' column (and 'label', "
                                  "optionally 'group'): write a header line path,label[,group].")
        reader.fieldnames = columns
        rows = []
        for line, row in enumerate(reader, start=2):
            file = (row.get("path") or "").strip()
            if not file:
                raise DataFormatError(f"Manifest '{path}' line {line} has an empty path.")
            label = (row.get("label") or "").strip() or None
            group = (row.get("group") or "").strip() or None
            rows.append(ManifestRow(os.path.normpath(os.path.join(base, os.path.expanduser(file))), label, group))
    return rows
