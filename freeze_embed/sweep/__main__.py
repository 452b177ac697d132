"""``python -m freeze_embed.sweep``: see :mod:`freeze_embed.sweep.command`."""
import sys

from .command import main

sys.exit(main())
