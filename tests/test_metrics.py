"""The paper's accuracies on a hand-computed example, and each dataset's metric built from its description."""
from __future__ import annotations

import pytest
import torch

from freeze_embed.data import (CIFAR10, Camelyon17, DemoShift, DomainNet, FMoW, Living17,
                               ShiftDataModule, Waterbirds)
from freeze_embed.metrics import GroupAccuracy, metrics_for

# Groups a (2 examples, 1 right), b (4, 3 right), other (1, 0 right), empty (none).
GROUPS = ["a", "b", "other", "empty"]
TARGET = torch.tensor([0, 1, 1, 0, 1, 0, 1])
PREDS = torch.tensor([0, 0, 1, 0, 1, 1, 0])
GROUP = torch.tensor([0, 0, 1, 1, 1, 1, 2])


def computed(metric: GroupAccuracy, preds=PREDS) -> dict[str, float]:
    metric.update(preds, TARGET, GROUP)
    return {k: float(v) for k, v in metric.compute().items()}


def test_accuracy_per_group_worst_and_weighted():
    out = computed(GroupAccuracy(GROUPS, weights=[1, 3, 4, 100], exclude=["other"]))
    assert out == pytest.approx({
        "acc": 4 / 7, "acc_a": 0.5, "acc_b": 0.75, "acc_other": 0.0,  # no acc_empty: it has no example
        "worst_group_acc": 0.5,  # "other" (0.0) is excluded, "empty" has nothing to score
        "weighted_acc": (1 * 0.5 + 3 * 0.75 + 4 * 0.0) / (1 + 3 + 4),  # empty's weight 100 does not count
    }, abs=1e-7)
    assert list(out) == ["acc", "acc_a", "acc_b", "acc_other", "worst_group_acc", "weighted_acc"]


def test_without_exclusion_weights_or_groups():
    out = computed(GroupAccuracy(GROUPS, worst_name="worst_region_acc"))
    assert out["worst_region_acc"] == 0.0 and "worst_group_acc" not in out and "weighted_acc" not in out
    assert computed(GroupAccuracy()) == {"acc": pytest.approx(4 / 7)}  # no groups: plain accuracy only


def test_logits_and_merged_processes():
    logits = torch.nn.functional.one_hot(PREDS, 2).float()
    whole, a, b = (GroupAccuracy(GROUPS, weights=[1, 3, 4, 100], exclude=["other"]) for _ in range(3))
    a.update(logits[:3], TARGET[:3], GROUP[:3])
    b.update(logits[3:], TARGET[3:], GROUP[3:])
    a.merge_state(b)  # what DDP's sum-reduction does
    assert {k: float(v) for k, v in a.compute().items()} == computed(whole)


PROTOCOL = ["num_classes", "train_split", "eval_names", "groups", "group_names", "group_weights", "excluded_groups",
            "worst_group_name", "id_metric", "ood_metric", "selection_metric", "paper_epochs", "split"]
DATAMODULES = [DemoShift, Waterbirds, FMoW, Camelyon17, DomainNet, Living17, CIFAR10]


@pytest.mark.parametrize("cls", DATAMODULES, ids=lambda c: c.__name__)
def test_every_datamodule_describes_and_none_measures(cls):
    assert issubclass(cls, ShiftDataModule) and all(hasattr(cls, attr) for attr in PROTOCOL)
    assert not hasattr(cls, "metric")  # metrics are built in one place, metrics_for


# (datamodule, expected group names, excluded groups, worst-group key) for the datasets needing no data on disk
DESCRIBED = {
    "demo": (DemoShift(), ["aligned", "conflicting"], set(), "worst_group_acc"),
    "fmow": (FMoW(), ["Asia", "Europe", "Africa", "Americas", "Oceania", "Other"], {"Other"}, "worst_region_acc"),
    "camelyon17": (Camelyon17(), [f"hospital_{i}" for i in range(5)], set(), "worst_group_acc"),
    "living17": (Living17(), [], set(), "worst_group_acc"),
    "cifar10": (CIFAR10(), [], set(), "worst_group_acc"),
}


@pytest.mark.parametrize("name", list(DESCRIBED))
def test_metrics_for_reads_the_protocol(name):
    dm, groups, exclude, worst = DESCRIBED[name]
    metric = metrics_for(dm, "ood_test")
    assert (metric.group_names, metric.exclude, metric.worst_name, metric.weights) == (groups, exclude, worst, None)


def test_fmow_worst_region_leaves_out_other():
    out = computed(metrics_for(FMoW(), "ood_test"))  # groups 0-2 are Asia, Europe, Africa here
    assert "worst_group_acc" not in out and out["worst_region_acc"] == 0.0  # Africa 0/1; "Other" has no example
    regions = torch.tensor([0, 0, 1, 1, 1, 1, 5])  # the wrong example in "Other": excluded, as WILDS does
    metric = metrics_for(FMoW(), "ood_test")
    metric.update(PREDS, TARGET, regions)
    assert float(metric.compute()["worst_region_acc"]) == 0.5


def test_waterbirds_weights_are_its_training_counts(waterbirds_dro):
    dm = Waterbirds(root=str(waterbirds_dro))
    for split in ("id_val", "test"):  # selection and the paper's ID number weight alike
        metric = metrics_for(dm, split)
        assert metric.weights.tolist() == [4, 2, 1, 3] == dm.train_group_counts()  # the fixture's training set
        assert metric.group_names == ["landbird_land", "landbird_water", "waterbird_land", "waterbird_water"]
    out = computed(metrics_for(dm, "test"))  # groups 0-2: accuracies 0.5, 0.75, 0.0
    assert out["weighted_acc"] == pytest.approx((4 * 0.5 + 2 * 0.75 + 1 * 0.0) / 7)
    assert out["worst_group_acc"] == 0.0 and "worst_region_acc" not in out


def test_domainnet_scores_plain_accuracy(tmp_path):
    metric = metrics_for(DomainNet(root=str(tmp_path)), "ood_test")  # no layout is read to describe the metric
    assert metric.group_names == [] and metric.weights is None
