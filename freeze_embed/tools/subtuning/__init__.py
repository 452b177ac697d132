"""SubTuning's greedy search of the blocks to fine-tune (Kaplun et al., "Less is More: Selective Layer Finetuning
with SubTuning"), as the official code does it (``talswisa/SubTuning``, ``src/greedy_subset_selection.py``).

    python -m freeze_embed.tools.subtuning --config configs/demo.yaml --out runs/subtuning/demo \\
        [--start forward|backward|best] [--epsilon 0.01] [--max_blocks k] [--score last|best] [--folds K] \\
        [--include_embed_blocks] [--profile_only] [--launcher local|slurm] \\
        [train.py overrides, e.g. --trainer.max_epochs 2]

Every trial is an ordinary, resumable ``train.py fit`` of ``TrainBlocks(blocks=<subset>)`` in ``DIR/trials/``,
launched like the sweep's runs (one per GPU here, or one SLURM job each): the same command finishes an interrupted
search, and trials never rerun once they have a results.json. Each trial is scored on the dataset's ID validation
metric (``selection_metric``) after its last epoch, as the official search reads ``callback_metrics["pred_acc"]``
after fit (``--score best``: at its best epoch instead). ``--folds K`` scores each subset as the official
``greedy_cross_val`` does: the mean over K folds of the training set, each trial trained on the other K-1.

* :mod:`.search`: the greedy algorithm, pure (:func:`greedy_search` takes any scorer);
* :mod:`.trials`: trials as runs (:class:`TrialRunner`, the scorer that trains), ``search.csv`` (:class:`SearchLog`);
* :mod:`.profile`: the fine-tuning profile figure (each single block's score, SubTuning's Figure 1);
* :mod:`.command`: the command line (:func:`main`).
"""
from freeze_embed.tools.subtuning.command import main, parse_args
from freeze_embed.tools.subtuning.profile import plot_profile
from freeze_embed.tools.subtuning.search import STARTS, SearchError, SearchResult, Trial, greedy_search, subset_name
from freeze_embed.tools.subtuning.trials import Pending, SearchLog, TrialRunner, count_blocks, trial_config

__all__ = ["main", "parse_args", "plot_profile", "STARTS", "SearchError", "SearchResult", "Trial", "greedy_search",
           "subset_name", "Pending", "SearchLog", "TrialRunner", "count_blocks", "trial_config"]
