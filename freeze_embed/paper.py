"""The paper's vocabulary: its statistics, its default selection metric, its dataset and model names.

One place for what Kumar et al. (ICLR 2024) call things, read by the sweep (:mod:`freeze_embed.tools.sweep`) and the
results tables (:mod:`freeze_embed.tools.results`):

* :data:`Z90`, :data:`STD_NOTE`, :data:`CI_NOTE`: Table 5's 90% confidence interval, mean +- 1.645 * std / sqrt(n)
  over seeds, with the sample std (ddof=1; the paper does not say which);
* :data:`SELECTION_METRIC`: the metric that picks the epoch and the LR when a run does not name its own. Each dataset
  names its own as its datamodule's ``selection_metric`` (e.g. Waterbirds' ``id_val/weighted_acc``), recorded in
  every run's results.json; this is the default there, for results.json files written without one;
* :data:`DATASETS`, :func:`dataset_name`: dataset keys -> the tables' column names, in the paper's order;
* :data:`MODELS`, :func:`model_name`: backbone configs (``configs/backbone/<stem>.yaml``) -> the paper's model names.

Method names are not here: each method file says its own (``method.name`` in ``configs/method/*.yaml``).
"""
from __future__ import annotations

from freeze_embed.backbones import PAPER_BACKBONES

Z90 = 1.645  # two-sided 90% normal quantile
STD_NOTE = "sample standard deviation over seeds (ddof=1)"
CI_NOTE = "90% CI half-width = 1.645 * std / sqrt(n)"

SELECTION_METRIC = "id_val/acc"  # Section 4: ID validation accuracy (datasets may name another, see above)

# Dataset keys (config stems, or a word in the datamodule's class name) -> column names, in the paper's order.
DATASETS = {"living17": "Living-17", "waterbirds": "Waterbirds", "domainnet": "DomainNet", "fmow": "FMoW",
            "camelyon": "Camelyon", "cifar10": "CIFAR-10", "demo": "Demo"}
# configs/backbone/<stem>.yaml (= PAPER_BACKBONES keys) -> the paper's names, in Tables 1-2's order.
MODELS = {"clip_vit_b16": "CLIP ViT-B/16", "clip_vit_l14": "CLIP ViT-L/14", "vit_b16_in21k": "ViT-B/16",
          "dino_vit_b16": "DINO ViT-B/16", "convnext_b_in22k": "ConvNeXt-B", "bit_resnet50_in21k": "BiT ResNet-50",
          "bit_resnet101_in21k": "BiT ResNet-101"}


def dataset_name(key: str) -> str:
    """``waterbirds`` or ``Waterbirds`` (a datamodule class) -> ``Waterbirds``; unknown keys pass through."""
    flat = "".join(c for c in key.lower() if c.isalnum())
    return next((name for k, name in DATASETS.items() if k in flat), key)


def model_name(spec: str) -> str:
    """A backbone spec string or PAPER_BACKBONES key -> the paper's model name; unknown specs pass through."""
    by_spec = {s: MODELS[k] for k, s in PAPER_BACKBONES.items() if k in MODELS}
    return MODELS.get(spec) or by_spec.get(spec, spec)
