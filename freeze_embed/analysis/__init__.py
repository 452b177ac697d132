"""Analyses of the paper: layer-wise gradient norms at the pretrained initialisation (Section 3.2, Figure 2).

``grad_norms`` computes eq. 3.1 per layer; ``plots`` draws Figure 2 style plots from its CSVs.
"""
