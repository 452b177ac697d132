"""A user's own strategy and helpers, named from YAML by class_path (no registry), as docs/extending.md shows."""
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


class RecordScales(L.Callback):
    """Writes each process's per-tensor LR scales at its first step of every epoch (AutoRGN under DDP)."""

    def __init__(self, out: str):
        self.out = out

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            import json
            from pathlib import Path
            lrs = {g["names"][0]: g["lr"] for g in pl_module.optimizers().optimizer.param_groups}
            path = Path(self.out) / f"rank{trainer.global_rank}_epoch{trainer.current_epoch}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"scales": pl_module.tuning.scales, "lrs": lrs}))


class CrashAtStep(L.Callback):
    """Simulates a crash before optimizer step ``step`` (mid-epoch when it is not a multiple of the epoch's steps)."""

    def __init__(self, step: int = 1):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


class RecordLRs(L.Callback):
    """Appends each optimizer step's group LRs and the strategy's scales to ``out`` (one JSON line per step)."""

    def __init__(self, out: str):
        self.out = out

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        import json
        optimizer = pl_module.optimizers()
        groups = getattr(optimizer, "optimizer", optimizer).param_groups
        line = {"step": trainer.global_step, "lrs": [g["lr"] for g in groups],
                "scales": getattr(pl_module.tuning, "scales", None)}
        with open(self.out, "a") as f:
            f.write(json.dumps(line) + "\n")


class RecordRNG(L.Callback):
    """Appends, at each epoch's start and first training batch, a digest of the global torch RNG state and of the
    batch's labels to ``out`` (one JSON line each)."""

    def __init__(self, out: str):
        self.out = out

    def _write(self, line: dict) -> None:
        import json
        with open(self.out, "a") as f:
            f.write(json.dumps(line) + "\n")

    def on_train_epoch_start(self, trainer, pl_module):
        import hashlib
        import torch
        self._write({"epoch": trainer.current_epoch, "at": "epoch_start",
                     "rng": hashlib.sha1(torch.get_rng_state().numpy().tobytes()).hexdigest()})

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        import hashlib
        import torch
        if batch_idx == 0:
            self._write({"epoch": trainer.current_epoch, "at": "first_batch",
                         "rng": hashlib.sha1(torch.get_rng_state().numpy().tobytes()).hexdigest(),
                         "labels": batch[1].tolist()})


class DrawsAtEpochStart(FreezeEmbed):
    """FreezeEmbed whose epoch start draws from the global RNG (as a strategy that samples something might)."""

    def on_train_epoch_start(self, module, epoch):
        import torch
        torch.rand(1)


class PoisonAt(L.Callback):
    """Makes one process's training batch NaN at ``step`` (a diverging loss), and writes each process's global step
    when training stops (``rank<r>.json`` under ``out``): all processes must stop at the same step."""

    def __init__(self, step: int, rank: int = 0, out: str = ""):
        self.step, self.rank, self.out = step, rank, out

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step and trainer.global_rank == self.rank:
            batch[0].fill_(float("nan"))

    def on_exception(self, trainer, pl_module, exception):
        if self.out:
            import json
            from pathlib import Path
            Path(self.out).mkdir(parents=True, exist_ok=True)
            (Path(self.out) / f"rank{trainer.global_rank}.json").write_text(json.dumps(
                {"step": trainer.global_step, "error": type(exception).__name__,
                 "weights_finite": all(bool(p.isfinite().all()) for p in pl_module.parameters())}))
