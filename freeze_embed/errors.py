"""User-facing errors: bad input the user can fix. The CLI prints their one-sentence message, not a traceback."""


class FreezeEmbedError(Exception):
    """Base of every error whose message tells the user what to do."""


def one_line(err: BaseException, limit: int = 300) -> str:
    """A library's (often multi-line) message, as one line a sentence can quote."""
    return " ".join(str(err).split())[:limit]
