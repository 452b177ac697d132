"""User-facing errors: bad input the user can fix. Every command prints their one sentence, not a traceback.

The one convention of every command (each module of :mod:`freeze_embed.tools` run with ``python -m``, and
``train.py``): the module has ``main(argv: Optional[Sequence[str]] = None) -> int`` that returns its exit status (0 on
success) and raises a :class:`FreezeEmbedError` for a user's mistake, never calling ``sys.exit`` itself; its
``__main__`` block is ``raise SystemExit(run_command(main))``. Tests call ``main([...])`` and see the return value or
the exception.
"""
from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence


class FreezeEmbedError(Exception):
    """Base of every error whose message tells the user what to do."""


def one_line(err: BaseException, limit: int = 300) -> str:
    """A library's (often multi-line) message, as one line a sentence can quote."""
    return " ".join(str(err).split())[:limit]


def user_error(err: Optional[BaseException]) -> Optional[FreezeEmbedError]:
    """The FreezeEmbedError behind ``err``, also when a library wrapped it (jsonargparse wraps errors raised while
    it instantiates linked classes, e.g. the data root check)."""
    while err is not None and not isinstance(err, FreezeEmbedError):
        err = err.__cause__ or err.__context__
    return err


def _print_user_error(err: Exception) -> bool:
    """Print the user's error behind ``err`` as one sentence; False if there is none (a bug: let it raise)."""
    cause = user_error(err)
    if cause is not None:
        print(f"error: {cause}", file=sys.stderr)
    return cause is not None


def exit_on_user_error(fn, *args):
    """``fn(*args)``; a user's error (a FreezeEmbedError, wrapped or not) ends the program with its one sentence."""
    try:
        return fn(*args)
    except Exception as err:  # only the user's errors become one sentence; the rest re-raise
        if not _print_user_error(err):
            raise
        sys.exit(2)


def run_command(main: Callable[[Optional[Sequence[str]]], Optional[int]], argv: Optional[Sequence[str]] = None) -> int:
    """Run a command's ``main``: its status (None counts as 0), or 2 after one sentence for a user's error."""
    try:
        status = main(argv)
    except Exception as err:  # only the user's errors become one sentence; the rest re-raise
        if not _print_user_error(err):
            raise
        return 2
    return 0 if status is None else int(status)
