"""A run's ``results.json``, read in one place: what ``train.py fit`` wrote (:mod:`freeze_embed.run.cli`) when it
finished, a value per metric at each tested checkpoint (``best/<metric>``, ``last/<metric>``), or ``"diverged":
true``. The sweep, its summary, SubTuning's trials and the studies ask it "metric m at tag best|last".
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from freeze_embed.files import read_json
from freeze_embed.paper import SELECTION_METRIC

RESULTS = "results.json"
TAGS = ("best", "last")  # the best epoch by the selection metric (early stopping), the last epoch


@dataclass(frozen=True)
class RunResults:
    data: dict = field(default_factory=dict)  # results.json as written; empty for a run without one

    @classmethod
    def read(cls, run_dir: str | os.PathLike) -> Optional[RunResults]:
        """The run's results, or None while it has no results.json (not finished, or failed)."""
        path = Path(run_dir) / RESULTS
        return cls(read_json(path)) if path.exists() else None

    @property
    def diverged(self) -> bool:
        return bool(self.data.get("diverged"))

    @property
    def selection_metric(self) -> str:
        """The dataset's metric that picks the epoch and the LR (files written without one: the paper's)."""
        return self.data.get("selection_metric") or SELECTION_METRIC

    def value(self, metric: str, tag: str = "best") -> Optional[float]:
        """``<tag>/<metric>`` (e.g. ``best/paper/ood``), None where the run has none (diverged, not tested)."""
        return (self.data.get(tag) or {}).get(f"{tag}/{metric}")

    def selection(self, tag: str = "best") -> Optional[float]:
        """The selection metric at ``tag``: what the sweep and the search compare."""
        return self.value(self.selection_metric, tag)
