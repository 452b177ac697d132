"""The paper's linear-probing protocol (Appendix B), as the authors' ``log_reg_sk.py`` runs it.

Features come from the frozen backbone with test-time transforms; scikit-learn's ``LogisticRegression`` is fit for
every C in ``logspace(-7, 2, 50)`` on standardised features and the C with the best validation accuracy wins. The
winning classifier, mapped back to the features the head sees (:func:`head_inputs`), becomes the FineTuner's linear
head (LP, and the start of LP-FT).
Under DDP every rank extracts its shard, rank 0 fits on the whole training set and broadcasts the head.
"""
from __future__ import annotations

import copy
import datetime
import hashlib
import os
import zipfile
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from freeze_embed.zeroshot import NormalizedLinear

PAPER_C_GRID = tuple(np.logspace(-7, 2, 50).tolist())
ABSENT_MARGIN = 10.0  # logits of classes absent from training sit this far below the mean of the present ones


@torch.no_grad()
def extract_features(backbone: nn.Module, loader, desc: str = "features") -> tuple[np.ndarray, np.ndarray]:
    device = next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    for batch in tqdm(loader, desc=desc, leave=False):
        x, y = batch[0], batch[1]
        feats.append(backbone(x.to(device)).float().cpu())
        labels.append(torch.as_tensor(y).cpu())
    backbone.train(was_training)
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def feature_stats(x_train: np.ndarray) -> tuple[float, float]:
    """One scalar mean and std over every entry of the training features (``log_reg_sk.normalize_features``: the
    authors standardise so that one C grid suits every dataset; a scalar, not per-feature, is their choice)."""
    x = np.asarray(x_train, dtype=np.float64)  # lbfgs works in float64 anyway
    return float(x.mean()), float(x.std())


def fit_logistic_regression(x_train, y_train, x_val, y_val, Cs: Sequence[float] = PAPER_C_GRID,
                            max_iter: int = 200, random_state: int = 0):
    """``log_reg_sk.test_log_reg_warm_starting``: one warm-started classifier swept over C from small to large; the
    first C with the best validation accuracy wins (strict >). Features are already standardised.
    Returns (best classifier, its C, validation accuracy per C)."""
    from sklearn.linear_model import LogisticRegression
    clf = LogisticRegression(random_state=random_state, warm_start=True, max_iter=max_iter)
    best, best_C, best_acc, accs = None, None, -1.0, []
    for C in tqdm(list(Cs), desc="logistic regression C sweep", leave=False):
        clf.C = C
        clf.fit(x_train, y_train)
        acc = float(np.mean(clf.predict(x_val) == y_val))  # log_reg_sk.get_acc
        accs.append(acc)
        if acc > best_acc:
            best, best_C, best_acc = copy.deepcopy(clf), float(C), acc
    return best, best_C, accs


def head_weights(clf, mean: float, std: float, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A (num_classes, d) head on RAW features whose logits reproduce ``clf.decision_function`` on standardised ones.

    ``log_reg_sk.inv_normalize_weights``: W / std and b - W @ (mean / std * 1). Binary sklearn keeps one row, the
    decision for ``classes_[1]``: logits (0, w.x + b) differ by it. Classes absent from training (the authors'
    ``pad_head`` gives them zeros, which can win when every present logit is negative) get the mean of the present
    rows minus ``ABSENT_MARGIN``: at least that far below the best present logit for every input, so never predicted.
    """
    coef, intercept = np.asarray(clf.coef_, np.float64), np.asarray(clf.intercept_, np.float64)
    w, b = coef / std, intercept - coef.sum(axis=1) * (mean / std)
    classes = [int(c) for c in clf.classes_]
    if len(classes) == 2:
        w, b = np.concatenate([np.zeros_like(w), w]), np.concatenate([[0.0], b])
    weight, bias = np.zeros((num_classes, coef.shape[1])), np.zeros(num_classes)
    absent = np.setdiff1d(np.arange(num_classes), classes)
    weight[absent], bias[absent] = w.mean(axis=0), b.mean() - ABSENT_MARGIN
    weight[classes], bias[classes] = w, b
    return weight, bias


def fit_probe(x_train, y_train, x_val, y_val, num_classes: int, Cs: Sequence[float] = PAPER_C_GRID,
              max_iter: int = 200, random_state: int = 0, extra: Optional[dict] = None) -> dict:
    """The whole protocol on feature arrays: standardise, sweep C, map back. ``extra`` maps split names to (x, y)
    scored by the chosen classifier. Returns weight, bias (numpy), C, val_acc, accs and ``{name}_acc`` per extra."""
    mean, std = feature_stats(x_train)
    norm = lambda x: (np.asarray(x, dtype=np.float64) - mean) / std  # noqa: E731 - one line, used on each split
    clf, C, accs = fit_logistic_regression(norm(x_train), y_train, norm(x_val), y_val, Cs, max_iter, random_state)
    weight, bias = head_weights(clf, mean, std, num_classes)
    out = {"weight": weight, "bias": bias, "C": C, "val_acc": max(accs), "accs": accs, "mean": mean, "std": std}
    for name, (x, y) in (extra or {}).items():
        out[f"{name}_acc"] = float(np.mean(clf.predict(norm(x)) == y))
    return out


def head_inputs(head: nn.Module, x: np.ndarray) -> np.ndarray:
    """The features the head's linear map sees: a zero-shot head (``NormalizedLinear``) L2-normalises its input, so
    the probe fits on normalised features and the head's logits stay the classifier's decision function."""
    if isinstance(head, NormalizedLinear):
        x = np.asarray(x, dtype=np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _cache_path(cache_dir: Optional[str], key: str) -> Optional[str]:
    return os.path.join(cache_dir, hashlib.sha1(key.encode()).hexdigest()[:16] + ".npz") if cache_dir else None


def read_cache(path: str) -> tuple[np.ndarray, np.ndarray]:
    """A cache file's features and labels: plain arrays only (``allow_pickle=False``: an object array, which only
    pickle can rebuild, is refused, never unpickled); a bad file is one sentence."""
    from freeze_embed.files import UnreadableFileError, UnsafeFileError
    try:
        with np.load(path, allow_pickle=False) as data:
            return data["x"], data["y"]
    except ValueError as err:
        if "pickle" in str(err):
            raise UnsafeFileError(f"The probe's feature cache '{path}' holds pickled Python objects, which are never "
                                  "read (they could run code); delete the file and the features are extracted "
                                  "again.") from err
        raise UnreadableFileError(f"Cannot read the probe's feature cache '{path}' ({err}); delete the file and the "
                                  "features are extracted again.") from err
    except (OSError, KeyError, EOFError, zipfile.BadZipFile, TypeError) as err:
        raise UnreadableFileError(f"Cannot read the probe's feature cache '{path}' ({type(err).__name__}); delete "
                                  "the file and the features are extracted again.") from err


def write_cache(path: str, x: np.ndarray, y: np.ndarray) -> None:
    """Written atomically (``files.atomic_write``): runs of a sweep may share the cache, and a killed run leaves no
    half-written file."""
    from freeze_embed.files import atomic_write
    with atomic_write(path) as f:
        np.savez(f, x=x, y=y)


def split_features(module, name: str, key: str, cache_dir: Optional[str] = None):
    """Features and labels of split ``name`` (test-time transforms) in dataset order on rank 0, None elsewhere.

    Each rank extracts what its loader's sampler gives it (``UnrepeatedDistributedSampler`` under DDP); rank 0
    gathers the shards with their indices and puts them back in dataset order. With ``cache_dir`` (features are the
    same for every LR and seed of a sweep) rank 0 alone reads and writes them, so a cache hit costs other ranks
    nothing.
    """
    trainer, dm = module.trainer, module.trainer.datamodule
    dataset = dm.split(name, train=False)
    path, rank0 = _cache_path(cache_dir, f"{key}|{name}|n={len(dataset)}"), trainer.global_rank == 0
    if trainer.strategy.broadcast(bool(rank0 and path and os.path.exists(path)), src=0):
        if not rank0:
            return None
        return read_cache(path)
    loader = dm.loader(dataset, shuffle=False)
    x, y = extract_features(module.backbone, loader, f"probe features: {name}")
    shards = [(np.fromiter(iter(loader.sampler), dtype=np.int64), x, y)]
    if trainer.world_size > 1 and torch.distributed.is_initialized():
        mine, shards = shards[0], [None] * trainer.world_size if rank0 else None
        torch.distributed.gather_object(mine, shards, dst=0)
    if not rank0:
        return None
    idx = np.concatenate([s[0] for s in shards])
    order = np.argsort(idx, kind="stable")
    if not np.array_equal(idx[order], np.arange(len(dataset))):
        raise RuntimeError(f"probe features of '{name}': the ranks' shards do not cover the split exactly once")
    x, y = np.concatenate([s[1] for s in shards])[order], np.concatenate([s[2] for s in shards])[order]
    if path:
        write_cache(path, x, y)
    return x, y


def _waiting_group(trainer):
    """Under DDP, a gloo group to broadcast rank 0's fit on: the C sweep on a large training set can outlast the
    main process group's timeout (30 min) that the other ranks would otherwise wait under."""
    if trainer.world_size == 1 or not torch.distributed.is_initialized():
        return None
    return torch.distributed.new_group(backend="gloo", timeout=datetime.timedelta(days=7))


def probe_head(module, Cs: Sequence[float] = PAPER_C_GRID, cache_dir: Optional[str] = None,
               select_on: str = "id_val", max_iter: int = 200, random_state: int = 0) -> dict:
    """Fit the FineTuner's head by the paper's protocol on its datamodule's whole training set; every rank ends up
    with the same head.

    ``select_on`` is the split whose accuracy picks C: ID validation by default (the paper's protocol); the authors'
    scripts used ``ood_val`` for FMoW and Camelyon17 (their ``val_metric``), available here as an option.
    Returns plain Python: ``C``, ``select_on``, ``val_acc`` (on ``select_on``) and ``id_val_acc``.
    """
    trainer, dm = module.trainer, module.trainer.datamodule
    key = f"{module.hparams.backbone}|{module.hparams.pretrained}|{type(dm).__name__}|{dm.root}"
    names = [dm.train_split, select_on] + (["id_val"] if select_on != "id_val" and "id_val" in dm.eval_names else [])
    feats = {n: split_features(module, n, key, cache_dir) for n in dict.fromkeys(names)}
    group, fit, failure = _waiting_group(trainer), None, None
    if trainer.global_rank == 0:
        feats = {n: (head_inputs(module.head, x), y) for n, (x, y) in feats.items()}
        extra = {"id_val": feats["id_val"]} if "id_val" in feats and select_on != "id_val" else None
        try:
            fit = fit_probe(*feats[dm.train_split], *feats[select_on], num_classes=module.head.out_features,
                            Cs=Cs, max_iter=max_iter, random_state=random_state, extra=extra)
            fit = {k: v for k, v in fit.items() if k != "accs"}
        except Exception as err:  # noqa: BLE001 - re-raised after the broadcast below, which the other ranks wait on
            fit, failure = {"error": f"{type(err).__name__}: {err}"}, err
    if group is not None:  # identical heads on every rank by construction
        box = [fit]
        torch.distributed.broadcast_object_list(box, src=0, group=group)
        torch.distributed.destroy_process_group(group)
        fit = box[0]
    if "error" in fit:
        raise failure or RuntimeError(f"the linear probe failed on rank 0: {fit['error']}")
    with torch.no_grad():
        module.head.weight.copy_(torch.as_tensor(fit["weight"], dtype=module.head.weight.dtype))
        module.head.bias.copy_(torch.as_tensor(fit["bias"], dtype=module.head.bias.dtype))
    id_val_acc = fit["val_acc"] if select_on == "id_val" else fit.get("id_val_acc")  # None: no id_val split
    return {"C": float(fit["C"]), "select_on": select_on, "val_acc": float(fit["val_acc"]),
            "id_val_acc": None if id_val_acc is None else float(id_val_acc)}
