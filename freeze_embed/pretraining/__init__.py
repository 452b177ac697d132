"""Supervised pretraining for Appendix E (SGD vs AdamW, standard vs patchify stem).

Run it with `python -m freeze_embed.tools.pretrain`.
"""
from freeze_embed.pretraining.data import ImageFolderPretrain, PretrainData, SyntheticPretrain
from freeze_embed.pretraining.module import Pretrainer, PretrainError, export_backbone

__all__ = ["ImageFolderPretrain", "PretrainData", "Pretrainer", "PretrainError", "SyntheticPretrain", "export_backbone"]
