"""``python -m freeze_embed.tools.sweep``: see :mod:`freeze_embed.tools.sweep.command`."""
import sys

from freeze_embed.tools.sweep.command import main

sys.exit(main())
