"""Helpers shared by the tests: the repo root, tiny demo runs through the real CLI, sweeps without training."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]


# MAE's util/lr_decay.py, verbatim: the reference LayerDecay is tested against
def mae_get_layer_id_for_vit(name, num_layers):
    if name in ["cls_token", "pos_embed"]:
        return 0
    elif name.startswith("patch_embed"):
        return 0
    elif name.startswith("blocks"):
        return int(name.split(".")[1]) + 1
    else:
        return num_layers


def tiny_demo_args(tmp_path: Path, epochs: int = 2, extra: list[str] = ()) -> list[str]:
    """The demo config at test size: 64 training and 32 evaluation images, logs and checkpoints under tmp_path."""
    return ["fit", "--config", str(ROOT / "configs/demo.yaml"),
            "--data.init_args.train_size", "64", "--data.init_args.eval_size", "32",
            "--data.init_args.batch_size", "16", "--trainer.max_epochs", str(epochs),
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"),
            "--run_dir", str(tmp_path / "run"), *extra]


def run_cli(args: list[str]) -> None:
    from freeze_embed.run.cli import main
    main(args)


def results(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "run" / "results.json").read_text())


# --- sweeps with the training subprocess replaced -----------------------------------------------------------------
SWEEP_CONFIG = {
    "seed_everything": 0, "method": {"name": "SGD (freeze-embed)", "lr_grid": [3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2]},
    "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 2,
                "logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
                           {"class_path": "lightning.pytorch.loggers.WandbLogger",
                            "init_args": {"project": "freeze-embed", "save_dir": "runs"}}]},
    "model": {"backbone": "timm:vit_tiny_patch16_224",
              "strategy": {"class_path": "freeze_embed.strategies.FreezeEmbed"},
              "optimizer": {"class_path": "freeze_embed.optim.SGD", "init_args": {"lr": 0.1, "momentum": 0.9}}},
    "data": {"class_path": "freeze_embed.data.DemoShift"}}


def results_json(id_val: float, id_: float, ood: float, epoch: int = 3) -> dict:
    """A run's results.json as the CLI writes it; ``last`` is offset by -0.1 so tests can tell them apart."""
    def block(tag, shift):
        return {f"{tag}/id_val/acc": id_val + shift, f"{tag}/paper/id": id_ + shift, f"{tag}/paper/ood": ood + shift}
    return {"best_epoch": epoch, "best": block("best", 0.0), "last": block("last", -0.1)}


def lr_scores(cfg: dict) -> tuple[float, float, float]:
    """(id_val, id, ood) of a fake run: LR 1e-2 beats 1e-3 beats any other; a later seed adds 0.01."""
    acc = {1e-3: 0.80, 1e-2: 0.90}.get(cfg["model"]["optimizer"]["init_args"]["lr"], 0.5)
    acc += 0.01 * cfg["seed_everything"]
    return acc, acc - 0.05, acc - 0.3


def replace_training(monkeypatch, scores: Callable[[dict], tuple[float, float, float]] = lr_scores) -> list[dict]:
    """Sweeps without training: composing returns SWEEP_CONFIG and each launched run writes the results.json of
    ``scores(its config)``, except LR 0.666, which crashes (a traceback, exit 1), and 6.66, which diverges.
    Returns the list that records every launch (cmd, run_dir, env, cfg)."""
    import yaml

    from freeze_embed.tools import sweep
    from freeze_embed.tools.sweep import command
    from freeze_embed.tools.sweep import run as one_run

    calls = []
    monkeypatch.setattr(command, "compose", lambda configs, overrides=(): json.loads(json.dumps(SWEEP_CONFIG)))

    def fake_call(cmd, log, env):
        run_dir = Path(cmd[cmd.index("--run_dir") + 1])
        cfg = yaml.safe_load((run_dir / sweep.RUN_CONFIG).read_text())
        calls.append({"cmd": cmd, "run_dir": run_dir, "env": env, "cfg": cfg})
        lr = cfg["model"]["optimizer"]["init_args"]["lr"]
        if lr == 0.666:  # a crashing run: a traceback in its log, exit code 1
            log.write("Traceback (most recent call last):\n  File \"train.py\", line 1\n"
                      "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n\n")
            return 1
        if lr == 6.66:  # a diverging run: train.py records it and exits 0
            (run_dir / "results.json").write_text(json.dumps({
                "diverged": True, "diverged_at": {"epoch": 0, "step": 1, "lr": lr}, "best_epoch": None,
                "selection_metric": "id_val/acc"}))
            return 0
        (run_dir / "results.json").write_text(json.dumps(results_json(*scores(cfg))))
        return 0
    monkeypatch.setattr(one_run, "_call", fake_call)
    return calls
