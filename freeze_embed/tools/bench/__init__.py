"""Benchmarks of the paper's methods: peak training memory (``memory``, Section 5 Table 4) and speed (``speed``).

A method is a file of the registry ``configs/method/<key>.yaml`` (:mod:`freeze_embed.run.methods`), built by the
parser ``train.py`` uses and set up by the FineTuner's own ``make_optimizer``: the benchmarks measure what training
does, with the optimizer and arguments the method file names (LARS with its trust ratio or without, as it says).
"""

PAPER_METHODS = ("sgd", "sgd_freeze_embed", "sgd_freeze_embed_no_momentum", "adamw")  # Table 4's rows
