"""freeze_embed.files: what an atomically written file looks like to its readers."""
from __future__ import annotations

import json
import os
import stat

import pytest

from freeze_embed.files import atomic_write, write_json


def test_an_atomic_write_gets_the_mode_open_would_give(tmp_path):
    """mkstemp creates 0600 files: results and exports must stay readable to the group and others."""
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "results.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "results.json").st_mode) == 0o644


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    write_json(target, {"a": 1})
    with pytest.raises(OSError):
        with atomic_write(target, "w") as f:
            f.write('{"a": ')
            raise OSError(28, "No space left on device")
    assert json.loads(target.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["results.json"]


def test_results_are_strict_json(tmp_path):
    write_json(tmp_path / "r.json", {"loss": float("nan"), "acc": [0.5, float("inf")]})
    text = (tmp_path / "r.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict constant {c}")) == {
        "loss": None, "acc": [0.5, None]}
