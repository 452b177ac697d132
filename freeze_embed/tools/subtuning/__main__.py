"""``python -m freeze_embed.tools.subtuning``: see :mod:`freeze_embed.tools.subtuning.command`."""
from freeze_embed.errors import run_command
from freeze_embed.tools.subtuning.command import main

raise SystemExit(run_command(main))
