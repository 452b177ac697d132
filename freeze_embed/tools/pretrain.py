"""Supervised pretraining, SGD or AdamW (Appendix E, Tables 13-14, Figures 3-5):

    python -m freeze_embed.tools.pretrain fit --config configs/pretrain/demo_resnet_sgd.yaml

The code lives in :mod:`freeze_embed.pretraining`; this is the entry point, as ``train.py`` is for fine-tuning.
"""
from freeze_embed.errors import run_command
from freeze_embed.pretraining.cli import main

if __name__ == "__main__":
    raise SystemExit(run_command(main))
