"""``python -m freeze_embed.tools.sweep``: see :mod:`freeze_embed.tools.sweep.command`."""
from freeze_embed.errors import run_command
from freeze_embed.tools.sweep.command import main

raise SystemExit(run_command(main))
