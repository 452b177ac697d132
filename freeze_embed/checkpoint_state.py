"""What a FineTuner checkpoint holds besides the weights: exact resume, and all that predict and export need."""
from __future__ import annotations

from freeze_embed.run.rng import rng_states


class CheckpointState:
    """The FineTuner's ``on_save_checkpoint`` / ``on_load_checkpoint`` (a mixin of ``FineTuner``)."""

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """RNG states and the strategy's run state (e.g. "the probe was fitted"), so a resumed run neither redoes
        nor loses what it did once; the preprocessing and the class names (label order), so predict and export
        need nothing but the checkpoint."""
        checkpoint["rng_states"] = rng_states()
        checkpoint["strategy_state"] = self.tuning.state_dict()
        checkpoint["preprocess"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.preprocess.items()}
        checkpoint["class_names"] = self.class_names()
        checkpoint["started_epoch"] = self._started_epoch

    def class_names(self) -> list[str]:
        """The datamodule's class names in label order, or the label indices as names when it has none."""
        dm = self.trainer.datamodule if self._trainer is not None else None
        names = getattr(dm, "class_names", None)
        if names is not None and len(names) == self.head.out_features:
            return [str(n) for n in names]
        return [str(i) for i in range(self.head.out_features)]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "rng_states" in checkpoint:
            self._resumed_rng.load(checkpoint["rng_states"])
        self.tuning.load_state_dict(checkpoint.get("strategy_state") or {})
        self._started_epoch = checkpoint.get("started_epoch", -1)
