"""Which parameters weight decay skips (``model.no_weight_decay``): one group builder for the standard step, the
in-backward step and ``parts``; ``adamw_layer_decay`` equals MAE's ``param_groups_lrd``; nothing else exempts."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import yaml

from freeze_embed.tools import parts
from freeze_embed.errors import FreezeEmbedError
from freeze_embed.module import FineTuner
from freeze_embed.optim import AdamW
from freeze_embed.strategies import FreezeEmbed, LayerDecay

from helpers import ROOT, mae_get_layer_id_for_vit

TINY = dict(img_size=16, patch_size=8, depth=2, embed_dim=8, num_heads=2)


def mae_param_groups_lrd(model, weight_decay=0.05, no_weight_decay_list=[], layer_decay=.75):  # noqa: B006 - MAE's signature verbatim
    """facebookresearch/mae ``util/lr_decay.py`` (commit efb2a80), verbatim but for the unused name bookkeeping."""
    param_groups = {}
    num_layers = len(model.blocks) + 1
    layer_scales = list(layer_decay ** (num_layers - i) for i in range(num_layers + 1))
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim == 1 or n in no_weight_decay_list:
            g_decay, this_decay = "no_decay", 0.
        else:
            g_decay, this_decay = "decay", weight_decay
        layer_id = mae_get_layer_id_for_vit(n, num_layers)
        group_name = "layer_%d_%s" % (layer_id, g_decay)
        if group_name not in param_groups:
            param_groups[group_name] = {"lr_scale": layer_scales[layer_id], "weight_decay": this_decay,
                                        "params": [], "names": []}
        param_groups[group_name]["params"].append(p)
        param_groups[group_name]["names"].append(n)
    return list(param_groups.values())


def method(name: str) -> dict:
    return yaml.safe_load((ROOT / "configs/method" / f"{name}.yaml").read_text())["model"]


def as_sets(groups, rename=lambda n: n):
    """{frozenset(names): (lr_scale, weight_decay)}: groups compared whatever their order."""
    return {frozenset(rename(n) for n in g["names"]): (pytest.approx(g["lr_scale"], rel=1e-12), g["weight_decay"])
            for g in groups}


def test_adamw_layer_decay_equals_maes_param_groups_lrd_on_vit_b16():
    cfg = method("adamw_layer_decay")
    decay = cfg["strategy"]["init_args"]["decay"]
    m = FineTuner(backbone="timm:vit_base_patch16_224", num_classes=5, strategy=LayerDecay(decay),
                  optimizer=lambda p: AdamW(p, lr=1e-3, weight_decay=0.05),
                  no_weight_decay=cfg.get("no_weight_decay") or ())
    optimizer = m.make_optimizer()
    strip = lambda n: n[len("backbone."):] if n.startswith("backbone.") else n  # noqa: E731 - MAE's names
    mae_model = SimpleNamespace(blocks=m.backbone.blocks,
                                named_parameters=lambda: [(strip(n), p) for n, p in m.named_parameters()])
    mae = mae_param_groups_lrd(mae_model, 0.05, m.backbone.no_weight_decay(), decay)  # main_finetune.py's call
    assert m.backbone.no_weight_decay() >= {"cls_token", "pos_embed"}
    assert as_sets(optimizer.param_groups, strip) == as_sets(mae)
    assert len(optimizer.param_groups) == len(mae) == 2 * 14  # layers 0..13, each decayed and not
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(1e-3 * group["lr_scale"], rel=1e-12)


def test_only_adamw_layer_decay_exempts_anything():
    """The paper's methods keep what the authors ran: their ``baseline_train.py`` builds the optimizer on
    ``net.parameters()``, one group, weight decay on every tensor."""
    exempting = {p.stem for p in (ROOT / "configs/method").glob("*.yaml") if method(p.stem).get("no_weight_decay")}
    assert exempting == {"adamw_layer_decay"}
    assert method("adamw_layer_decay")["no_weight_decay"] == ["norms_and_biases", "tokens"]


def tiny(**kwargs) -> FineTuner:
    return FineTuner(backbone="timm:vit_tiny_patch16_224", backbone_kwargs=dict(TINY), num_classes=3,
                     optimizer=lambda p: AdamW(p, lr=1e-3, weight_decay=0.1), **kwargs)


def exempt_names(m: FineTuner) -> set[str]:
    return {n for n, p in m.named_parameters() if p.ndim <= 1} | {"backbone.cls_token", "backbone.pos_embed"}


@pytest.mark.parametrize("embed_tokens", [False, True])
def test_standard_step_exempts_norms_biases_and_tokens_and_decays_the_rest(embed_tokens):
    m = tiny(no_weight_decay=["norms_and_biases", "tokens"], embed_tokens=embed_tokens)
    decays = {n: g["weight_decay"] for g in m.make_optimizer().param_groups for n in g["names"]}
    assert decays == {n: 0.0 if n in exempt_names(m) else 0.1 for n, _ in m.named_parameters()}
    assert decays["backbone.blocks.0.attn.qkv.weight"] == 0.1 and decays["head.bias"] == 0.0
    assert {n: g["weight_decay"] for g in tiny().make_optimizer().param_groups for n in g["names"]} == {
        n: 0.1 for n, _ in m.named_parameters()}  # by default nothing is exempt


def test_in_backward_step_exempts_the_same_parameters():
    m = tiny(no_weight_decay=["tokens"], optimizer_in_backward=True, strategy=FreezeEmbed())
    opt = m.make_optimizer()
    decays = {n: o.param_groups[0]["weight_decay"] for n, o in opt.per_param.items()}
    frozen = set(m.anatomy.embed)
    assert decays == {n: 0.0 if n in ("backbone.cls_token", "backbone.pos_embed") else 0.1
                      for n, _ in m.named_parameters() if n not in frozen}
    assert {n: g["weight_decay"] for g in opt.param_groups for n in g["names"]} == decays


def test_in_backward_weights_equal_the_standard_step_with_exemptions():
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 3, (4,))
    models = [tiny(no_weight_decay=["norms_and_biases", "tokens"], optimizer_in_backward=b) for b in (False, True)]
    models[1].load_state_dict(models[0].state_dict())
    for m in models:
        opt = m.make_optimizer()
        loss = torch.nn.functional.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
    for (n, a), (_, b) in zip(*(m.named_parameters() for m in models), strict=True):
        assert torch.allclose(a, b, atol=1e-7), n


def test_parts_shows_which_groups_skip_weight_decay(capsys):
    base = ["timm:vit_tiny_patch16_224", "--strategy", "FullFineTune", "--json", "--backbone-kwargs", json.dumps(TINY)]
    assert parts.main(base + ["--no-weight-decay", "norms_and_biases", "tokens"]) == 0
    groups = json.loads(capsys.readouterr().out)["epochs"][0]
    exempt = [g for g in groups if g["no_weight_decay"]]
    assert len(groups) == 2 and len(exempt) == 1
    assert set(exempt[0]["names"]) == exempt_names(tiny())
    assert parts.main(base) == 0
    assert [g["no_weight_decay"] for g in json.loads(capsys.readouterr().out)["epochs"][0]] == [False]


def test_an_unknown_kind_is_one_sentence():
    with pytest.raises(FreezeEmbedError, match="no_weight_decay.*norms_and_biases, tokens"):
        tiny(no_weight_decay=["biases"])
