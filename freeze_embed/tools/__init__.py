"""The commands that drive runs around the library: each is one file (or package) here, run with ``python -m``
(``python -m freeze_embed.tools.sweep``), and none of the library imports from this package."""
