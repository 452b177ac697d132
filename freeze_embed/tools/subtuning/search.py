"""SubTuning's greedy subset search, as ``GreedySubsetSearch`` in ``talswisa/SubTuning``
``src/greedy_subset_selection.py``.

Pure: it decides which block subsets to score and which one wins; a scorer (:mod:`.trials` trains them, tests fake
them) gives each round's scores. The official algorithm, with its names:

* start ``forward`` (theirs ``non``: the linear probe, no block trained), ``backward`` (``all``: every block trained)
  or ``best`` (theirs ``best``: score both, start from the better, the linear probe on a tie);
* each round scores every neighbour of the current subset (forward: one block added, backward: one removed), in block
  order, and moves to the round's best (the first one on a tie);
* the round's best becomes the best so far when it beats it; the search stops when it is more than ``epsilon``
  below the best so far (a round within epsilon goes on, without becoming the best), or when no neighbour is left;
* it returns the best subset seen.

Ours beyond theirs: ``max_blocks`` caps the size of the returned subset (a forward search stops growing at it; a
backward one walks down to it, and only subsets that fit can become the best); a failed trial (score None) is no
candidate; the official round-best starts at accuracy 0 (a round of zeros would add block ``None``), ours at -inf.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from freeze_embed.errors import FreezeEmbedError

Subset = tuple[int, ...]
Scorer = Callable[[Sequence[Subset]], Sequence[Optional[float]]]  # one round's subsets -> their scores
STARTS = ("forward", "backward", "best")


class SearchError(FreezeEmbedError, ValueError):
    """A search that cannot go on (e.g. its start failed to train); the message says why."""


@dataclass
class Trial:
    round: int  # 0 = the start
    subset: Subset
    score: Optional[float]
    move: str  # "start", "+3" (block 3 added) or "-3" (removed)


@dataclass
class SearchResult:
    best: Subset
    best_score: float
    start: str  # "forward" or "backward": where the search went from
    trials: list[Trial] = field(default_factory=list)
    path: list[Subset] = field(default_factory=list)  # the subset after each round, the start first
    stopped: str = ""  # why it stopped


def subset_name(subset: Sequence[int]) -> str:
    """``blocks_0-3-5`` or ``blocks_none``: a trial's label and run directory."""
    return "blocks_" + ("-".join(str(i) for i in sorted(subset)) or "none")


def greedy_search(num_blocks: int, score: Scorer, start: str = "forward", epsilon: float = 0.01,
                  max_blocks: Optional[int] = None,
                  on_round: Optional[Callable[[list[Trial]], None]] = None) -> SearchResult:
    """The greedy search over subsets of ``range(num_blocks)``; ``on_round`` sees each round's trials as scored."""
    if start not in STARTS:
        raise SearchError(f"--start is one of {', '.join(STARTS)}, not {start!r}.")
    cap = num_blocks if max_blocks is None else max_blocks
    if cap < 0:
        raise SearchError(f"--max_blocks must be 0 or more, not {max_blocks}.")
    everything, nothing = tuple(range(num_blocks)), ()
    trials: list[Trial] = []

    def run_round(rnd: int, subsets: list[Subset], moves: list[str]) -> list[Optional[float]]:
        scores = list(score(subsets))
        new = [Trial(rnd, s, None if x is None else float(x), m) for s, x, m in zip(subsets, scores, moves)]
        trials.extend(new)
        if on_round:
            on_round(new)
        return [t.score for t in new]

    starts = {"forward": [nothing], "backward": [everything], "best": [everything, nothing]}[start]
    start_scores = run_round(0, starts, ["start"] * len(starts))
    if any(s is None for s in start_scores):
        raise SearchError(f"the start ({', '.join(subset_name(s) for s in starts)}) did not train; see its log.")
    if start == "best":  # theirs: all if all_acc > non_acc else non
        start = "backward" if start_scores[0] > start_scores[1] else "forward"
        current, current_score = (everything, start_scores[0]) if start == "backward" else (nothing, start_scores[1])
    else:
        current, current_score = starts[0], start_scores[0]
    forward = start == "forward"
    fits = len(current) <= cap
    best, best_score = (current, current_score) if fits else (None, -math.inf)
    path, stopped = [current], f"no neighbour left after {num_blocks} rounds"

    for rnd in range(1, num_blocks + 1):
        if forward and len(current) >= cap:
            stopped = f"max_blocks={cap} reached"
            break
        blocks = [b for b in range(num_blocks) if (b not in current) == forward]
        candidates = [tuple(sorted(set(current) | {b})) if forward else tuple(b2 for b2 in current if b2 != b)
                      for b in blocks]
        scores = run_round(rnd, candidates, [f"{'+' if forward else '-'}{b}" for b in blocks])
        scored = [(s, c) for s, c in zip(scores, candidates) if s is not None]
        if not scored:
            stopped = f"every trial of round {rnd} failed"
            break
        round_score, current = max(scored, key=lambda sc: sc[0])  # max keeps the first of equal scores
        path.append(current)
        if len(current) <= cap and round_score > best_score:
            best, best_score = current, round_score
        elif best is not None and round_score < best_score - epsilon:
            stopped = f"round {rnd} scored {round_score:.4f}, more than epsilon={epsilon:g} below the best " \
                      f"{best_score:.4f}"
            break
    if best is None:
        raise SearchError(f"no subset of at most {cap} blocks was scored.")
    return SearchResult(best, best_score, start, trials, path, stopped)
