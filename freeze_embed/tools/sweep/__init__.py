"""Learning-rate x seed sweeps, the paper's protocol (Section 4, Appendix A), optionally x momentum.

    python -m freeze_embed.tools.sweep --config configs/data/waterbirds.yaml \\
        --config configs/backbone/clip_vit_b16.yaml --config configs/method/sgd_freeze_embed.yaml \\
        [train.py overrides] [--lrs paper] [--seeds 0 1 2] [--out DIR]

Each (LR, seed) is one ``train.py fit`` subprocess in ``DIR/lr<lr>_seed<seed>/`` (its config, logs, checkpoints and
results.json), so a crashing run does not stop the sweep. Runs with a results.json are skipped and runs with a
last.ckpt resume from it: the same command finishes an interrupted sweep. The LR with the best mean ID validation
accuracy wins; each run counts at its best epoch by ID validation (early stopping); DIR/summary.json gets the mean
+- 1.645 * std / sqrt(n) over seeds (Table 5's 90% CI), with the sample std (ddof=1; the paper does not say which).

Momentum x effective LR (Li et al., "Rethinking the Hyperparameters for Fine-tuning", ICLR 2020, Sec. 3.1):
``--momenta 0 0.9 0.99 --lrs effective`` runs the method's grid as effective LRs lr / (1 - momentum) for every
momentum (the optimizer gets effective LR x (1 - momentum)) in ``DIR/m<momentum>_lr<lr>_seed<seed>/``, and chooses
the LR per momentum; summary.json's ``per_momentum`` holds each, its top level the best momentum's.

LR grids live with the methods: ``--lrs paper`` (the default) runs the composed config's ``method.lr_grid``, which
each ``configs/method/*.yaml`` sets to the authors' grid (see :mod:`freeze_embed.run.methods`). The selection metric is
the dataset's (``selection_metric`` of its datamodule, recorded in each run's results.json).

One module per concern:

* :mod:`.plan`: the LR grid, each run's config, the W&B group and ids;
* :mod:`.run`: one run (:class:`Run`), its ``train.py`` command, :func:`execute` (``_call`` starts the process);
* :mod:`.launchers`: many runs, here (threads, one per GPU) or on SLURM (submitit), through the one :func:`launch`
  and :func:`add_launch_arguments` that SubTuning's search uses too; no sweep logic;
* :mod:`.summary`: the chosen LR and the 90% CIs (``summary.json``);
* :mod:`.command`: the command line (``python -m freeze_embed.tools.sweep``, :func:`main`).

The names below are re-exported for convenience; to replace one in a test, patch the module that looks it up
(e.g. ``freeze_embed.tools.sweep.run._call``, ``freeze_embed.tools.sweep.command.compose``), not this package.
"""
from freeze_embed.tools.sweep.command import main, parse_args
from freeze_embed.tools.sweep.launchers import (Launched, RunJob, add_launch_arguments, add_slurm_arguments,
                                                devices_per_run, launch, launch_local, launch_slurm, local_slots,
                                                slurm_parameters, to_launch, visible_gpus)
from freeze_embed.tools.sweep.plan import (SweepError, actual_lr, check_momenta, default_group, effective_lr,
                                           momentum_grid, resolve_lrs, run_config, wandb_id)
from freeze_embed.tools.sweep.run import RUN_CONFIG, TRAIN_PY, Run, execute, prepare, read_results, train_command
from freeze_embed.tools.sweep.summary import format_momenta, format_summary, stats, summarize, summarize_momenta

__all__ = ["main", "parse_args", "Launched", "RunJob", "add_launch_arguments", "launch", "to_launch",
           "add_slurm_arguments", "devices_per_run", "launch_local", "launch_slurm", "local_slots", "slurm_parameters",
           "visible_gpus", "SweepError", "actual_lr", "check_momenta",
           "default_group", "effective_lr", "momentum_grid", "resolve_lrs", "run_config", "wandb_id",
           "RUN_CONFIG", "TRAIN_PY", "Run", "execute", "prepare", "read_results", "train_command", "format_summary",
           "stats", "summarize", "format_momenta", "summarize_momenta"]
