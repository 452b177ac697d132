"""The paper's linear-probing protocol (Appendix B): logistic regression on cached features.

Features come from the frozen backbone with test-time transforms; scikit-learn's ``LogisticRegression`` is fit for
every C in ``logspace(-7, 2, 50)`` and the C with the best ID validation accuracy wins. The winning classifier is
copied into the FineTuner's linear head (LP, and the start of LP-FT).
"""
from __future__ import annotations

import copy
import hashlib
import os
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

PAPER_C_GRID = tuple(np.logspace(-7, 2, 50).tolist())


@torch.no_grad()
def extract_features(backbone: nn.Module, loader, desc: str = "features") -> tuple[np.ndarray, np.ndarray]:
    device = next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    for batch in tqdm(loader, desc=desc, leave=False):
        x, y = batch[0], batch[1]
        feats.append(backbone(x.to(device)).float().cpu())
        labels.append(y.cpu())
    backbone.train(was_training)
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def cached_features(backbone: nn.Module, loader, key: str, cache_dir: Optional[str], desc: str):
    """Features are the same for every LR and seed of a sweep: keep them on disk when ``cache_dir`` is set."""
    if not cache_dir:
        return extract_features(backbone, loader, desc)
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, hashlib.sha1(key.encode()).hexdigest()[:16] + ".npz")
    if os.path.exists(path):
        data = np.load(path)
        return data["x"], data["y"]
    x, y = extract_features(backbone, loader, desc)
    tmp = f"{path}.{os.getpid()}.tmp.npz"  # atomic: runs of a sweep may share the cache
    np.savez(tmp, x=x, y=y)
    os.replace(tmp, path)
    return x, y


def fit_logistic_regression(x_train, y_train, x_val, y_val, Cs: Sequence[float] = PAPER_C_GRID,
                            max_iter: int = 1000):
    """Sweep C (warm-started, small to large), pick the best ID-validation accuracy. Returns (clf, C, accs)."""
    from sklearn.linear_model import LogisticRegression
    best, best_acc, accs = None, -1.0, []
    clf = LogisticRegression(warm_start=True, max_iter=max_iter)
    for C in tqdm(list(Cs), desc="logistic regression C sweep", leave=False):
        clf.set_params(C=C)
        clf.fit(x_train, y_train)
        acc = float((clf.predict(x_val) == y_val).mean())
        accs.append(acc)
        if acc > best_acc:
            best, best_acc, best_C = copy.deepcopy(clf), acc, C
    return best, best_C, accs


@torch.no_grad()
def load_into_head(clf, head: nn.Linear) -> None:
    """Copy sklearn's coefficients into the linear head; classes unseen in training get a large negative bias."""
    coef = torch.as_tensor(clf.coef_, dtype=head.weight.dtype)
    intercept = torch.as_tensor(clf.intercept_, dtype=head.bias.dtype)
    classes = [int(c) for c in clf.classes_]
    head.weight.zero_()
    head.bias.fill_(float(intercept.min()) - 10.0 if len(classes) > 2 else -10.0)
    if len(classes) == 2:  # binary sklearn keeps one row: logits (0, w.x+b) give the same softmax
        head.bias[classes[0]] = 0.0
        head.weight[classes[1]] = coef[0]
        head.bias[classes[1]] = intercept[0]
    else:
        for row, c in enumerate(classes):
            head.weight[c] = coef[row]
            head.bias[c] = intercept[row]


def probe_head(module, Cs: Sequence[float] = PAPER_C_GRID, cache_dir: Optional[str] = None) -> dict:
    """Fit the FineTuner's head by the paper's protocol on its datamodule's train and ID validation sets."""
    dm = module.trainer.datamodule
    loaders = dm.probe_dataloaders()
    key = f"{module.hparams.backbone}|{module.hparams.pretrained}|{type(dm).__name__}|{getattr(dm, 'root', '')}"
    x_tr, y_tr = cached_features(module.backbone, loaders["train"], key + "|train", cache_dir, "probe features: train")
    x_va, y_va = cached_features(module.backbone, loaders["id_val"], key + "|id_val", cache_dir, "probe features: id_val")
    clf, C, accs = fit_logistic_regression(x_tr, y_tr, x_va, y_va, Cs)
    load_into_head(clf, module.head)
    return {"C": C, "id_val_acc": max(accs)}
