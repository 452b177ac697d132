"""``python -m freeze_embed.tools.subtuning``: see :mod:`freeze_embed.tools.subtuning.command`."""
import sys

from freeze_embed.tools.subtuning.command import main

sys.exit(main())
