"""The linear probe follows the authors' ``log_reg_sk.py``: scalar standardisation, warm-started C sweep picked on a
named validation split, weights mapped back to raw features, and one head for every DDP rank."""
import csv
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import sklearn.linear_model
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from freeze_embed import probe
from freeze_embed.probe import PAPER_C_GRID, feature_stats, fit_logistic_regression, head_weights, probe_head
from freeze_embed.zeroshot import NormalizedLinear
from helpers import ROOT, run_cli, tiny_demo_args


def blobs(n, k, d=5, seed=0, present=None):
    """Gaussian blobs with an offset and uneven scale, so that standardisation matters; labels from ``present``."""
    rng = np.random.default_rng(seed)
    present = list(range(k)) if present is None else present
    centers = rng.normal(size=(max(present) + 1, d)) * 1.5
    y = np.array([present[i % len(present)] for i in range(n)])
    x = (centers[y] + rng.normal(size=(n, d))) * 3.0 + 5.0
    return x.astype(np.float32), y


def standardise(x, ref):
    return (x.astype(np.float64) - ref.astype(np.float64).mean()) / ref.astype(np.float64).std()


def fitted_head(x, y, num_classes, Cs=(1e-2, 1.0)):
    mean, std = feature_stats(x)
    clf, C, _ = fit_logistic_regression(standardise(x, x), y, standardise(x, x), y, Cs)
    weight, bias = head_weights(clf, mean, std, num_classes)
    head = nn.Linear(x.shape[1], num_classes)
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(weight)), head.bias.copy_(torch.as_tensor(bias))
    return clf, weight, bias, head


@pytest.mark.parametrize("k, present", [(3, None), (4, [0, 1, 3])])
def test_multiclass_head_reproduces_decision_function(k, present):
    x, y = blobs(90, k, present=present)
    clf, weight, bias, head = fitted_head(x, y, k)
    decision = clf.decision_function(standardise(x, x))
    logits = x.astype(np.float64) @ weight.T + bias
    cols = [int(c) for c in clf.classes_]
    np.testing.assert_allclose(logits[:, cols], decision, rtol=1e-9, atol=1e-9)
    torch_logits = head(torch.as_tensor(x)).detach().double().numpy()
    np.testing.assert_allclose(torch_logits[:, cols], decision, rtol=1e-4, atol=1e-4)
    far = np.random.default_rng(1).normal(size=(500, x.shape[1])) * 100  # absent classes lose on any input
    far_logits = far @ weight.T + bias
    for c in set(range(k)) - set(cols):
        assert (far_logits[:, c] <= far_logits[:, cols].max(1) - probe.ABSENT_MARGIN + 1e-6).all()
        assert (logits.argmax(1) != c).all()


@pytest.mark.parametrize("k, present", [(2, None), (3, [0, 2])])
def test_binary_head_reproduces_decision_function(k, present):
    x, y = blobs(60, k, present=present)
    clf, weight, bias, head = fitted_head(x, y, k)
    decision = clf.decision_function(standardise(x, x))
    lo, hi = [int(c) for c in clf.classes_]
    logits = x.astype(np.float64) @ weight.T + bias
    np.testing.assert_allclose(logits[:, hi] - logits[:, lo], decision, rtol=1e-9, atol=1e-9)
    torch_logits = head(torch.as_tensor(x)).detach().double().numpy()
    np.testing.assert_allclose(torch_logits[:, hi] - torch_logits[:, lo], decision, rtol=1e-4, atol=1e-4)
    assert (logits.argmax(1) == clf.predict(standardise(x, x))).all()


def test_one_scalar_mean_and_std_over_all_training_entries():
    x = np.array([[1.0, 100.0], [3.0, 300.0], [2.0, 200.0]], dtype=np.float32)
    hand = x.sum() / x.size, (((x - x.sum() / x.size) ** 2).sum() / x.size) ** 0.5
    assert feature_stats(x) == pytest.approx(hand, rel=1e-12)


# --- probe_head on a fake module: identity backbone, so features are the split tensors themselves -----------------
class _Identity(nn.Module):
    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x


class _DM:
    train_split, eval_names, root = "train", ["id_val", "ood_val"], "/fake"

    def __init__(self, splits):
        self.splits = splits

    def split(self, name, train=False):
        assert not train, "the probe uses test-time transforms"
        x, y = self.splits[name]
        return TensorDataset(torch.as_tensor(x), torch.as_tensor(y))

    def loader(self, dataset, shuffle):
        return DataLoader(dataset, batch_size=7, shuffle=shuffle)


def _module(splits, num_classes, head=nn.Linear):
    trainer = SimpleNamespace(datamodule=_DM(splits), global_rank=0, world_size=1,
                              strategy=SimpleNamespace(broadcast=lambda obj, src=0: obj))
    d = splits["train"][0].shape[1]
    return SimpleNamespace(trainer=trainer, backbone=_Identity(), head=head(d, num_classes),
                           hparams=SimpleNamespace(backbone="fake", pretrained=None))


def _majority_vs_truth_splits():
    """Separable training data, 90% class 0. ``id_val`` says class 0 everywhere (only a C so small that the probe
    predicts the prior gets it all right); ``ood_val`` holds the true labels (a large C gets it all right)."""
    y = (np.arange(200) % 10 == 0).astype(np.int64)
    x = (np.where(y[:, None] == 1, 4.0, -4.0) + np.random.default_rng(3).normal(size=(200, 3))).astype(np.float32)
    x = x * 3.0 + 5.0
    val = x[::2]
    return {"train": (x, y), "id_val": (val, np.zeros(len(val), np.int64)), "ood_val": (val, y[::2])}


@pytest.mark.parametrize("select_on", ["id_val", "ood_val"])
def test_c_is_picked_on_the_named_split(select_on):
    splits = _majority_vs_truth_splits()
    result = probe_head(_module(splits, 2), select_on=select_on)
    # an independent run of the protocol: warm-started sweep small to large, first best validation accuracy
    (x, y), (xv, yv) = splits["train"], splits[select_on]
    clf = sklearn.linear_model.LogisticRegression(random_state=0, warm_start=True, max_iter=200)
    accs = []
    for C in PAPER_C_GRID:
        clf.C = C
        accs.append(np.mean(clf.fit(standardise(x, x), y).predict(standardise(xv, x)) == yv))
    assert result["C"] == pytest.approx(PAPER_C_GRID[int(np.argmax(accs))], rel=1e-12)
    assert result["val_acc"] == 1.0 and result["select_on"] == select_on
    if select_on == "id_val":  # the prior wins on id_val: the first (smallest) C, not the best training accuracy
        assert result["C"] == PAPER_C_GRID[0] and result["id_val_acc"] == 1.0
    else:
        assert result["C"] > 1e-3 and result["id_val_acc"] == pytest.approx(np.mean(yv == 0))
    assert all(type(v) in (float, str) for v in result.values())


def test_head_from_probe_head_equals_an_independent_fit(tmp_path):
    x, y = blobs(120, 3, seed=4)
    xv, yv = blobs(60, 3, seed=5)
    splits = {"train": (x, y), "id_val": (xv, yv), "ood_val": (xv, yv)}
    module = _module(splits, 4)  # class 3 never appears
    result = probe_head(module, Cs=PAPER_C_GRID[::5], cache_dir=str(tmp_path))
    clf = sklearn.linear_model.LogisticRegression(random_state=0, warm_start=True, max_iter=200)
    best, best_acc = None, -1.0
    for C in PAPER_C_GRID[::5]:
        clf.C = C
        clf.fit(standardise(x, x), y)
        acc = np.mean(clf.predict(standardise(xv, x)) == yv)
        if acc > best_acc:
            best, best_acc = clf.decision_function(standardise(xv, x)), acc
    logits = module.head(torch.as_tensor(xv)).detach().double().numpy()
    np.testing.assert_allclose(logits[:, :3], best, rtol=1e-4, atol=1e-4)
    assert (logits.argmax(1) != 3).all()
    # the cache: one file per split, and a second probe reads it instead of running the backbone
    assert len(list(tmp_path.glob("*.npz"))) == 2
    again = _module(splits, 4)
    again.backbone.forward = lambda x: pytest.fail("features should come from the cache")
    assert probe_head(again, Cs=PAPER_C_GRID[::5], cache_dir=str(tmp_path)) == result
    assert torch.equal(again.head.weight, module.head.weight) and torch.equal(again.head.bias, module.head.bias)


@pytest.mark.parametrize("head", [nn.Linear, NormalizedLinear])
def test_each_heads_logits_are_the_decision_function_of_the_features_it_sees(head):
    """A zero-shot head (``model.head_init: zeroshot``) L2-normalises its input: the probe fits on those features,
    so the head it fills (LP, LP-FT) computes the chosen classifier's decision function, as the plain head does."""
    x, y = blobs(120, 3, seed=4)
    xv, yv = blobs(60, 3, seed=5)
    module = _module({"train": (x, y), "id_val": (xv, yv), "ood_val": (xv, yv)}, 3, head)
    result = probe_head(module, Cs=PAPER_C_GRID[::5])
    seen = (lambda a: a / np.linalg.norm(a.astype(np.float64), axis=1, keepdims=True)) if head is NormalizedLinear \
        else (lambda a: a)
    clf, C, _ = fit_logistic_regression(standardise(seen(x), seen(x)), y, standardise(seen(xv), seen(x)), yv,
                                        PAPER_C_GRID[::5])
    assert result["C"] == C
    logits = module.head(torch.as_tensor(xv)).detach().double().numpy()
    decision = clf.decision_function(standardise(seen(xv), seen(x)))
    np.testing.assert_allclose(logits, decision, rtol=1e-4, atol=1e-3 * np.abs(decision).max())


def test_sklearn_gets_the_authors_settings_and_ties_keep_the_first(monkeypatch):
    calls, fits = [], []

    class Recording(sklearn.linear_model.LogisticRegression):
        def fit(self, X, y):
            fits.append((self.C, X.copy()))
            return super().fit(X, y)

    def factory(**kwargs):
        calls.append(kwargs)
        return Recording(**kwargs)

    monkeypatch.setattr(sklearn.linear_model, "LogisticRegression", factory)
    splits = _majority_vs_truth_splits()
    probe_head(_module(splits, 2), Cs=[1e-7, 1e-6, 1e2])
    assert calls == [{"random_state": 0, "warm_start": True, "max_iter": 200}]
    assert [c for c, _ in fits] == [1e-7, 1e-6, 1e2]  # one warm-started classifier, C small to large
    x = splits["train"][0].astype(np.float64)
    np.testing.assert_allclose(fits[0][1], (x - x.mean()) / x.std(), rtol=1e-12, atol=1e-12)
    calls.clear()
    result = probe_head(_module(splits, 2), Cs=[1e-7, 1e-6], max_iter=7, random_state=3)
    assert calls == [{"random_state": 3, "warm_start": True, "max_iter": 7}]
    assert result["C"] == 1e-7  # both C predict the prior: 100% on id_val each, the first one wins


# --- DDP: the whole training set, one head --------------------------------------------------------------------
def _fit_metric(run, key):
    with open(run / "logs/demo/version_0/metrics.csv") as f:
        return next(float(row[key]) for row in csv.DictReader(f) if row.get(key))


@pytest.mark.slow
def test_two_process_ddp_probe_equals_single_process(tmp_path):
    """63 training and 33 validation images: the two ranks' shards differ and are uneven. The paper's probe trains
    no step (``train_head: false``), which DDP runs too: the checkpointed head is exactly the probed one."""
    def args(sub, ddp):
        extra = ["--model.strategy", "freeze_embed.strategies.LinearProbe",
                 "--model.strategy.init_args.feature_cache", str(tmp_path / sub / "cache"),
                 "--data.init_args.train_size", "63", "--data.init_args.eval_size", "33"]
        if ddp:
            extra += ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
        return tiny_demo_args(tmp_path / sub, epochs=1, extra=extra)

    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args("ddp", True)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_cli(args("single", False))
    heads = [torch.load(tmp_path / sub / "run/checkpoints/last.ckpt", weights_only=False)["state_dict"]
             for sub in ("single", "ddp")]
    for name in ("head.weight", "head.bias"):
        assert torch.allclose(heads[0][name], heads[1][name], atol=1e-5), name
    # rank 1 holds the same head: in fit's validation each rank scores its shard with its live head
    # (results.json cannot show it: its test runs reload rank 0's checkpoint on every rank)
    for key in ("id_val/acc", "id_test/acc", "ood_test/acc"):
        assert _fit_metric(tmp_path / "single", key) == pytest.approx(_fit_metric(tmp_path / "ddp", key), abs=1e-6)
    # rank 0 wrote the gathered features in dataset order: the same cache as the single process's
    for single in sorted((tmp_path / "single/cache").glob("*.npz")):
        a, b = np.load(single), np.load(tmp_path / "ddp/cache" / single.name)
        assert np.array_equal(a["y"], b["y"]) and np.allclose(a["x"], b["x"], atol=1e-5)
    assert len(list((tmp_path / "ddp/cache").glob("*.npz"))) == 2
