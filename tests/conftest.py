"""Every test runs from the repo root (configs name files relative to it), with W&B offline."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # so YAML can name tests' own modules (a user's strategy, a crash callback)
sys.path.insert(0, str(TESTS / "data"))  # formats.py: the datasets' on-disk formats, for tests here and in data/
pytest_plugins = ["formats"]  # its dataset fixtures (fmow_root, cifar_root, ...), for every test without an import

from helpers import ROOT, replace_training  # noqa: E402 - after the path that finds it


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    """Configs name the demo checkpoint relative to the repo root, as a user running from a clone would."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "offline")
    yield


@pytest.fixture
def fake_training(monkeypatch):
    """Sweeps without training (helpers.replace_training, LR 1e-2 best); the list records every launch."""
    return replace_training(monkeypatch)
