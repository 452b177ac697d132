"""A training run beyond the model: train.py's command line, the configs it reads, and what keeps a run safe
(checkpoints that survive a kill, a stop at the first non-finite loss, exact RNG on resume, values checked first)."""
