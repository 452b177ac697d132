"""Dataset fixtures in each benchmark's real on-disk format (written by formats.py)."""
from formats import (camelyon_root, domainnet_root, domainnet_wilds_root, fmow_root, imagenet_root,  # noqa: F401
                     waterbirds_dro, waterbirds_wilds)
