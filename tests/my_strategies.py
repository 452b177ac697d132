"""A user's own strategy and helpers, named from YAML by class_path (no registry), as the README shows."""
import lightning as L

from freeze_embed.strategies import FreezeEmbed


class FreezeEmbedAndFirstBlock(FreezeEmbed):
    """Freeze the embedding and the lowest transformer block."""

    def frozen(self, anatomy):
        return super().frozen(anatomy) + anatomy.blocks[0]


class CrashAtEpoch(L.Callback):
    """Simulates a crash (pre-emption, OOM) at the start of ``epoch``."""

    def __init__(self, epoch: int = 1):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")
