"""Helpers shared by the tests: the repo root and tiny demo runs through the real CLI."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
