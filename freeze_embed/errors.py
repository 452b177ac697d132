"""User-facing errors: bad input the user can fix. The CLI prints their one-sentence message, not a traceback."""


class FreezeEmbedError(Exception):
    """Base of every error whose message tells the user what to do."""
