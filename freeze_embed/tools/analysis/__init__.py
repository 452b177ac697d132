"""Analyses of the paper: layer-wise gradient norms at the pretrained initialisation (Section 3.2, Figure 2).

``grad_norms`` computes eq. 3.1 per layer; ``plots`` draws Figure 2 style plots from its CSVs.
``similarity``: domain similarity of pretraining and fine-tuning data (Li et al., 2020; Cui et al., 2018).
"""
