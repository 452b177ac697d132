"""L2-SP (Li et al., ICML 2018): the penalty and its gradient against hand computations, frozen parameters, the
composition with FreezeEmbed, theta_0 surviving a checkpoint round trip, and a real tiny fit."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from freeze_embed.errors import FreezeEmbedError
from freeze_embed.module import FineTuner
from freeze_embed.strategies import L2SP, LPFT, FreezeEmbed, FullFineTune, LinearProbe, Strategy

from helpers import results, run_cli, tiny_demo_args

TINY = dict(img_size=16, patch_size=8, depth=2, embed_dim=8, num_heads=2)


def model(strategy, head_init: str = "random") -> FineTuner:
    m = FineTuner(backbone="timm:vit_tiny_patch16_224", backbone_kwargs=dict(TINY), num_classes=3, strategy=strategy)
    m.hparams.head_init = head_init  # what pretrained_head reads (a real zero-shot head needs CLIP)
    m.freeze_for(0)
    strategy.on_fit_start(m)  # captures theta_0, as fit does
    return m


def perturb(m: FineTuner, deltas: dict[str, float]) -> None:
    params = dict(m.named_parameters())
    with torch.no_grad():
        for name, d in deltas.items():
            params[name].add_(d)


def test_penalty_is_the_hand_computation_and_its_gradient():
    m = model(L2SP(alpha=0.1, beta=0.02))
    params = dict(m.named_parameters())
    head_w, head_b = m.anatomy.head  # head.weight (3 x 8), head.bias (3)
    assert (head_w, head_b) == ("head.weight", "head.bias")
    with torch.no_grad():
        params[head_w].fill_(0.5)
        params[head_b].fill_(-2.0)
    assert m.tuning.penalty(m).item() == pytest.approx(0.5 * 0.02 * (24 * 0.25 + 3 * 4.0))  # 0.18: theta = theta_0
    qkv, fc2 = "backbone.blocks.0.attn.qkv.weight", "backbone.blocks.1.mlp.fc2.bias"
    assert params[qkv].numel() == 24 * 8 and params[fc2].numel() == 8
    perturb(m, {qkv: 0.3, fc2: -1.0})
    expected = 0.5 * 0.1 * (192 * 0.09 + 8 * 1.0) + 0.18  # alpha/2 ||theta - theta_0||^2 + beta/2 ||w||^2 = 1.444
    penalty = m.tuning.penalty(m)
    assert penalty.item() == pytest.approx(expected) and expected == pytest.approx(1.444)
    penalty.backward()
    assert torch.allclose(params[qkv].grad, torch.full_like(params[qkv], 0.1 * 0.3))  # alpha (theta - theta_0)
    assert torch.allclose(params[fc2].grad, torch.full_like(params[fc2], 0.1 * -1.0))
    assert torch.allclose(params[head_w].grad, torch.full_like(params[head_w], 0.02 * 0.5))  # beta w
    assert torch.allclose(params[head_b].grad, torch.full_like(params[head_b], 0.02 * -2.0))
    untouched = params["backbone.blocks.0.norm1.weight"].grad
    assert untouched is not None and torch.count_nonzero(untouched) == 0  # at theta_0: no pull


def test_frozen_parameters_get_no_term_and_freeze_embed_is_unchanged():
    plain, wrapped = model(FreezeEmbed()), model(L2SP(alpha=1.0, beta=0.0, strategy=FreezeEmbed()))
    a = plain.anatomy
    assert wrapped.tuning.frozen(a) == FreezeEmbed().frozen(a) == a.embed
    assert wrapped.trained_in(0) == plain.trained_in(0) and wrapped.ever_trained() == plain.ever_trained()
    assert wrapped.groups_in_epoch(0) == plain.groups_in_epoch(0)
    theta0 = wrapped.tuning.state_dict()["theta0"]
    assert set(theta0) == set(plain.ever_trained()) - set(a.head) and not set(theta0) & set(a.embed)
    assert wrapped.tuning.penalty(wrapped).item() == 0.0
    perturb(wrapped, {"backbone.patch_embed.proj.weight": 5.0})  # frozen: not penalised (and never moves in fit)
    assert wrapped.tuning.penalty(wrapped).item() == 0.0
    perturb(wrapped, {"backbone.norm.bias": 0.5})  # trained: 8 entries of 0.25, times alpha / 2
    assert wrapped.tuning.penalty(wrapped).item() == pytest.approx(0.5 * 8 * 0.25)


class Stateful(Strategy):
    """An inner strategy with run state, to check that L2SP passes it through."""

    def __init__(self):
        self.fitted = 0

    def on_fit_start(self, module):
        self.fitted += 1

    def state_dict(self):
        return {"fitted": self.fitted}

    def load_state_dict(self, state):
        self.fitted = state["fitted"]


def test_state_round_trip_keeps_theta_0_and_the_inner_state():
    m = model(L2SP(alpha=0.5, beta=0.0, strategy=Stateful()))
    perturb(m, {"backbone.blocks.1.mlp.fc2.bias": 2.0})  # training moved the weights, then the run was interrupted
    state = m.tuning.state_dict()
    assert state["strategy"] == {"fitted": 1}
    resumed = L2SP(alpha=0.5, beta=0.0, strategy=Stateful())
    resumed.load_state_dict(state)  # the FineTuner restores it before on_fit_start
    m.tuning = resumed
    resumed.on_fit_start(m)  # must not take the moved weights as theta_0
    assert resumed.strategy.fitted == 2
    assert resumed.penalty(m).item() == pytest.approx(0.5 * 0.5 * 8 * 4.0)
    assert all(torch.equal(state["theta0"][n], t) for n, t in resumed.state_dict()["theta0"].items())


def test_defaults_and_bad_values():
    s = L2SP()
    assert (s.alpha, s.beta, type(s.strategy)) == (0.01, 0.01, FullFineTune)
    with pytest.raises(FreezeEmbedError, match="alpha >= 0 and beta >= 0"):
        L2SP(alpha=-1.0)
    with pytest.raises(FreezeEmbedError, match="no beta term"):
        L2SP(beta=0.01, form="authors")
    assert L2SP(form="authors").beta == 0.0
    m = FineTuner(backbone="timm:vit_tiny_patch16_224", backbone_kwargs=dict(TINY), num_classes=3, strategy=s)
    with pytest.raises(RuntimeError, match="on_fit_start"):
        s.penalty(m)


@pytest.mark.slow
def test_tiny_fit_logs_the_penalty_and_keeps_theta_0_in_checkpoints(tmp_path):
    run_cli(tiny_demo_args(tmp_path, epochs=1, extra=["--config", "configs/method/l2sp_freeze_embed.yaml",
                                                      "--model.optimizer.init_args.lr", "0.01"]))
    assert 0 <= results(tmp_path)["best"]["best/paper/ood"] <= 1
    metrics = pd.read_csv(next((tmp_path / "logs").rglob("metrics.csv")))
    logged = metrics["train/penalty_epoch"].dropna()
    assert len(logged) == 1 and logged.iloc[0] > 0  # the head starts at beta/2 ||w||^2 > 0
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    theta0 = ckpt["strategy_state"]["theta0"]
    assert "backbone.patch_embed.proj.weight" not in theta0 and "backbone.blocks.0.attn.qkv.weight" in theta0
    moved = ckpt["state_dict"]["backbone.blocks.0.attn.qkv.weight"]
    assert not torch.equal(moved, theta0["backbone.blocks.0.attn.qkv.weight"])  # theta_0 is not the trained value


def get_l2_dist(weight_dict1, weight_dict2, ignore=".fc."):
    """AnanyaKumar/transfer_learning ``unlabeled_extrapolation/baseline_train.py`` (on CPU: no ``.cuda()``)."""
    l2_dist = torch.tensor(0.0)
    for key in weight_dict1:
        if ignore not in key:
            l2_dist += torch.sum(torch.square(weight_dict1[key] - weight_dict2[key]))
    return l2_dist


def test_authors_form_is_their_l2sp_weight_times_get_l2_dist_head_included():
    m = model(L2SP(alpha=0.01, form="authors"))
    initial = {n: p.detach().clone() for n, p in m.named_parameters()}  # their weight_dict_initial
    qkv = "backbone.blocks.0.attn.qkv.weight"
    perturb(m, {qkv: 0.3, "head.weight": 0.5, "head.bias": -2.0})
    params = dict(m.named_parameters())
    expected = 0.01 * (192 * 0.09 + 24 * 0.25 + 3 * 4.0)  # no 1/2, the head pulled to its start, no beta term
    penalty = m.tuning.penalty(m)
    assert penalty.item() == pytest.approx(expected)
    assert penalty.item() == pytest.approx(0.01 * get_l2_dist(initial, params).item())
    penalty.backward()
    assert torch.allclose(params[qkv].grad, torch.full_like(params[qkv], 2 * 0.01 * 0.3))
    assert torch.allclose(params["head.weight"].grad, torch.full_like(params["head.weight"], 2 * 0.01 * 0.5))


def test_a_zero_shot_head_is_pretrained_so_alpha_pulls_it_to_theta_0():
    m = model(L2SP(alpha=0.1, beta=0.02), head_init="zeroshot")
    assert {"head.weight", "head.bias"} <= set(m.tuning.state_dict()["theta0"])
    assert m.tuning.penalty(m).item() == 0.0  # at theta_0, and no beta / 2 ||w||^2 on a pretrained head
    perturb(m, {"head.bias": -2.0})
    assert m.tuning.penalty(m).item() == pytest.approx(0.5 * 0.1 * 3 * 4.0)


class FixedProbe(LinearProbe):
    """Stands for the logistic-regression fit: the head it leaves behind."""

    def on_fit_start(self, module):
        with torch.no_grad():
            module.head.weight.fill_(0.7)


@pytest.mark.parametrize("make", [lambda: L2SP(alpha=1.0, form="authors", strategy=LPFT(probe=FixedProbe())),
                                  lambda: LPFT(finetune=L2SP(alpha=1.0, form="authors"), probe=FixedProbe())],
                         ids=["L2SP(LPFT)", "LPFT(L2SP)"])
def test_theta_0_is_the_probed_head_in_either_order(make):
    m = model(make())
    l2sp = m.tuning if isinstance(m.tuning, L2SP) else m.tuning.finetune
    assert torch.equal(l2sp.state_dict()["theta0"]["head.weight"], torch.full((3, 8), 0.7))
    assert m.tuning.penalty(m).item() == 0.0
