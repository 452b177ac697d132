"""The optimizer step inside backward (``model.optimizer_in_backward``): the same weights as the standard step, an
exact resume, DDP, the refused settings, and the gradient bytes it saves."""
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import yaml

from freeze_embed.run import methods
from freeze_embed.tools.bench import memory
from helpers import ROOT, results, run_cli, tiny_demo_args

IN_BACKWARD = ["--model.optimizer_in_backward", "true"]
KEEP_EVERY_EPOCH = ["--checkpoint.save_top_k", "-1"]  # best-epoch00.ckpt is epoch 0's, whichever epoch is best
VIT = "timm:vit_tiny_patch16_224"
TINY = dict(img_size=16, patch_size=8, depth=2, embed_dim=16, num_heads=2)


def last_weights(run_dir):
    return torch.load(run_dir / "run/checkpoints/last.ckpt", weights_only=False)["state_dict"]


def assert_same_weights(a, b, moved_from=None):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=0, atol=1e-6), key
    if moved_from is not None:  # the runs trained: equality is not two untouched models
        assert any(not torch.equal(a[k], moved_from[k]) for k in a)


METHODS = {  # the standard step's configuration; each runs once as it is and once in backward
    "sgd_freeze_embed": [],  # the demo: SGD momentum 0.9, FreezeEmbed, per-step cosine
    "adamw": ["--model.optimizer", "freeze_embed.optim.AdamW", "--model.optimizer.init_args.lr", "1e-4",
              "--model.strategy", "freeze_embed.strategies.FullFineTune"],
    # 3 epochs: blocks unfreeze between epochs and the per-epoch LR factor changes
    "gradual": ["--model.strategy", "freeze_embed.strategies.GradualUnfreeze"],
    "embed_lr": ["--model.strategy", "freeze_embed.strategies.EmbedLRScale"],  # two LR scales
    # one group per tensor, rescaled from gradients each epoch, optimizer state reset each epoch
    "auto_rgn": ["--model.strategy", "freeze_embed.strategies.AutoRGN"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(METHODS))
def test_same_weights_as_the_standard_step(tmp_path, name):
    epochs = 3 if name == "gradual" else 2
    run_cli(tiny_demo_args(tmp_path / "standard", epochs=epochs, extra=METHODS[name]))
    run_cli(tiny_demo_args(tmp_path / "in_backward", epochs=epochs, extra=[*METHODS[name], *IN_BACKWARD]))
    standard, fused = last_weights(tmp_path / "standard"), last_weights(tmp_path / "in_backward")
    assert_same_weights(standard, fused)
    pretrained = torch.load(ROOT / "freeze_embed/assets/demo_vit_tiny.pth")
    assert not torch.equal(fused["backbone.blocks.3.attn.qkv.weight"], pretrained["blocks.3.attn.qkv.weight"])
    ckpt = torch.load(tmp_path / "in_backward/run/checkpoints/last.ckpt", weights_only=False)
    assert ckpt["global_step"] == epochs * 4  # 64 images in batches of 16: Lightning counted every step
    metrics = (tmp_path / "in_backward/logs/demo/version_0/metrics.csv").read_text()
    assert "optimizer/peak_grad_bytes" in metrics and "optimizer/state_bytes" in metrics


@pytest.mark.slow
def test_gradual_unfreezing_steps_only_the_parameters_trained_in_the_epoch(tmp_path):
    """A block frozen in epoch 0 stays at its pretrained values and has no optimizer state after it."""
    extra = [*METHODS["gradual"], *KEEP_EVERY_EPOCH]
    run_cli(tiny_demo_args(tmp_path, epochs=3, extra=[*extra, *IN_BACKWARD]))
    first = torch.load(tmp_path / "run/checkpoints/best-epoch00.ckpt", weights_only=False)
    pretrained = torch.load(ROOT / "freeze_embed/assets/demo_vit_tiny.pth")
    assert torch.equal(first["state_dict"]["backbone.blocks.0.attn.qkv.weight"], pretrained["blocks.0.attn.qkv.weight"])
    names = [n for n, s in first["optimizer_states"][0]["in_backward"].items() if s["state"]]
    assert "head.weight" in names and "backbone.blocks.0.attn.qkv.weight" not in names  # no state while frozen


@pytest.mark.slow
def test_resume_equals_the_uninterrupted_run(tmp_path):
    """The per-parameter optimizers' state travels in the checkpoint by parameter name."""
    base = [*IN_BACKWARD, "--data.init_args.train_size", "48"]
    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    run_cli(tiny_demo_args(whole, epochs=3, extra=base))
    crashed.mkdir()
    crash = crashed / "crash.yaml"
    crash.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor"},
        {"class_path": "my_strategies.CrashAtEpoch", "init_args": {"epoch": 2}}]}}))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_cli(tiny_demo_args(crashed, epochs=3, extra=[*base, "--config", str(crash)]))
    saved = torch.load(crashed / "run/checkpoints/last.ckpt", weights_only=False)
    momentum = saved["optimizer_states"][0]["in_backward"]["head.weight"]["state"][0]["momentum_buffer"]
    assert momentum.abs().sum() > 0  # the state a resume must not lose
    run_cli(tiny_demo_args(crashed, epochs=3, extra=[*base, "--ckpt_path", str(crashed / "run/checkpoints/last.ckpt")]))
    assert_same_weights(last_weights(whole), last_weights(crashed), moved_from=saved["state_dict"])
    assert results(crashed)["last"] == pytest.approx(results(whole)["last"], abs=1e-6)


def _callbacks_config(path, *callbacks):
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": f"my_strategies.{name}", "init_args": args} for name, args in callbacks]}}))
    return str(path)


@pytest.mark.slow
def test_mid_epoch_resume_under_auto_rgn_keeps_the_epochs_scales(tmp_path):
    """A checkpoint written mid-epoch (``every_n_train_steps``) holds this epoch's Auto-RGN scales: the resumed run
    steps at the uninterrupted run's LRs, and does not score the epoch again. (The weights differ: a plain DataLoader
    restarts its epoch on resume, as Lightning warns.)"""
    base = [*IN_BACKWARD, *METHODS["auto_rgn"], "--data.init_args.train_size", "48",
            "--last_checkpoint.every_n_train_steps", "1"]  # 3 steps an epoch
    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    whole.mkdir(), crashed.mkdir()
    record = _callbacks_config(whole / "record.yaml", ("RecordLRs", {"out": str(whole / "lrs.jsonl")}))
    run_cli(tiny_demo_args(whole, epochs=2, extra=[*base, "--config", record]))
    crash = _callbacks_config(crashed / "crash.yaml", ("RecordLRs", {"out": str(crashed / "lrs.jsonl")}),
                              ("CrashAtStep", {"step": 4}))  # after epoch 1's first step
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_cli(tiny_demo_args(crashed, epochs=2, extra=[*base, "--config", crash]))
    record = _callbacks_config(crashed / "record.yaml", ("RecordLRs", {"out": str(crashed / "lrs.jsonl")}))
    run_cli(tiny_demo_args(crashed, epochs=2, extra=[
        *base, "--config", record, "--ckpt_path", str(crashed / "run/checkpoints/last.ckpt")]))
    expected = [json.loads(line) for line in (whole / "lrs.jsonl").read_text().splitlines()]
    resumed = [json.loads(line) for line in (crashed / "lrs.jsonl").read_text().splitlines()]
    assert [r["step"] for r in expected] == [r["step"] for r in resumed] == [1, 2, 3, 4, 5, 6]
    assert len(set(expected[3]["lrs"])) > 2  # epoch 1 rescaled the tensors
    for want, got in zip(expected, resumed):
        assert got["lrs"] == pytest.approx(want["lrs"], rel=1e-12, abs=0), want["step"]
        assert got["scales"] == want["scales"], want["step"]


@pytest.mark.slow
def test_two_process_ddp_equals_the_standard_step_under_ddp(tmp_path):
    """DDP all-reduces before each in-backward step; gradual unfreezing's frozen blocks (which keep requires_grad
    under DDP) neither move nor gain optimizer state."""
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
           *METHODS["gradual"], *KEEP_EVERY_EPOCH]
    for tag, extra in (("standard", ddp), ("in_backward", [*ddp, *IN_BACKWARD])):
        args = tiny_demo_args(tmp_path / tag, epochs=2, extra=extra)
        proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_weights(last_weights(tmp_path / "standard"), last_weights(tmp_path / "in_backward"))
    first = torch.load(tmp_path / "in_backward/run/checkpoints/best-epoch00.ckpt", weights_only=False)
    state = first["optimizer_states"][0]["in_backward"]
    assert state["head.weight"]["state"] and not state["backbone.blocks.0.attn.qkv.weight"]["state"]
    assert first["global_step"] == 2  # 64 images, 2 processes, batches of 16


def _cli_error(tmp_path, capsys, extra):
    with pytest.raises(SystemExit) as exc:
        run_cli(tiny_demo_args(tmp_path, extra=[*IN_BACKWARD, *extra]))
    assert exc.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: model.optimizer_in_backward cannot") and line.count(". ") == 0
    return line


def test_16_mixed_is_refused(tmp_path, capsys):
    assert "use precision bf16-mixed" in _cli_error(tmp_path, capsys, ["--trainer.precision", "16-mixed"])


def test_gradient_clipping_is_refused(tmp_path, capsys):
    assert "remove gradient_clip_val" in _cli_error(tmp_path, capsys, ["--trainer.gradient_clip_val", "1.0"])


def test_gradient_accumulation_is_refused(tmp_path, capsys):
    assert "larger data.batch_size" in _cli_error(tmp_path, capsys, ["--trainer.accumulate_grad_batches", "2"])


@pytest.mark.slow
def test_bf16_mixed_trains_in_backward(tmp_path):
    run_cli(tiny_demo_args(tmp_path, epochs=1, extra=[*IN_BACKWARD, "--trainer.precision", "bf16-mixed"]))
    weights = last_weights(tmp_path)
    pretrained = torch.load(ROOT / "freeze_embed/assets/demo_vit_tiny.pth")
    assert not torch.equal(weights["backbone.blocks.3.attn.qkv.weight"], pretrained["blocks.3.attn.qkv.weight"])
    assert torch.equal(weights["backbone.patch_embed.proj.weight"], pretrained["patch_embed.proj.weight"])


def test_peak_gradient_bytes_are_one_parameter_not_all():
    """On the demo's 4-block ViT: gradients are freed as each parameter steps, so backward holds at most the
    largest one at a time; the standard step holds every trainable gradient at once."""
    torch.manual_seed(0)
    module, opt, name = methods.build_module("sgd_freeze_embed_in_backward", VIT,
                                             dict(img_size=32, patch_size=4, depth=4, embed_dim=96, num_heads=3))
    assert name == "SGD (freeze-embed) (in backward)"
    trainable = [p for p in module.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    opt.begin_backward()
    F.cross_entropy(module(torch.randn(2, 3, 32, 32)), torch.tensor([0, 1])).backward()
    all_grads = sum(4 * p.numel() for p in trainable)
    assert opt.grad_bytes.peak == max(4 * p.numel() for p in trainable) < all_grads / 10
    assert all(p.grad is None for p in module.parameters())
    assert all(not torch.equal(a, p) for a, p in zip(before, trainable))  # every trained parameter stepped


def test_bench_memory_json_for_an_in_backward_key(monkeypatch, capsys):
    monkeypatch.setattr(memory, "run_child", lambda m, a: memory.measure(m, a.backbone, a.backbone_kwargs, a.batch,
                                                                          a.image_size, steps=2, device="cpu"))
    args = ["--backbone", VIT, "--backbone-kwargs", json.dumps(TINY), "--image-size", "16", "--json",
            "--methods", "sgd_freeze_embed_no_momentum,sgd_freeze_embed_no_momentum_in_backward,adamw_in_backward"]
    memory.run(args)
    out = json.loads(capsys.readouterr().out)["methods"]
    standard, fused = out["sgd_freeze_embed_no_momentum"], out["sgd_freeze_embed_no_momentum_in_backward"]
    assert list(fused) == [*memory.KEYS, "baseline_bytes", "name"]
    assert fused["name"] == "SGD (freeze-embed, no momentum) (in backward)"
    assert fused["state_bytes"] == 0 and fused["param_bytes"] == standard["param_bytes"]
    assert fused["grad_bytes"] * 4 < standard["grad_bytes"]  # the peak held at once, not every trainable gradient
    assert out["adamw_in_backward"]["state_bytes"] > 2 * out["adamw_in_backward"]["param_bytes"] - 100


def test_unknown_in_backward_key_is_refused():
    with pytest.raises(SystemExit):
        memory.run(["--methods", "adam_in_backward"])


def _trainer_with(strategy):
    from types import SimpleNamespace
    return SimpleNamespace(strategy=strategy, precision_plugin=None, precision="32-true", gradient_clip_val=None,
                           accumulate_grad_batches=1)


@pytest.mark.parametrize("name", ["FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy", "XLAStrategy"])
def test_distributed_strategies_but_ddp_are_refused(name):
    import lightning.pytorch.strategies as strategies
    from freeze_embed.in_backward import InBackwardUnsupported, check_trainer
    cls = getattr(strategies, name)
    strategy = cls.__new__(cls)  # DeepSpeed and XLA need their packages to construct; the check reads the class
    with pytest.raises(InBackwardUnsupported) as err:
        check_trainer(_trainer_with(strategy))
    line = str(err.value)
    assert line.startswith(f"model.optimizer_in_backward cannot run under {name}: ") and line.count(". ") == 0
    assert "use trainer.strategy ddp" in line


def test_ddp_and_one_device_are_served():
    from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
    from freeze_embed.in_backward import check_trainer
    check_trainer(_trainer_with(DDPStrategy()))
    check_trainer(_trainer_with(SingleDeviceStrategy("cpu")))


def _unused_parameters_worker(rank, world, port, out):
    """One rank of a 2-process gloo run: ``used`` trains on both ranks, ``rank0`` only on rank 0 (all-reduced,
    so it steps everywhere), ``unused`` on none (no gradient: the standard step skips it)."""
    import os
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel
    from freeze_embed.in_backward import InBackward
    from freeze_embed.optim import build_optimizer, param_groups
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.rank0, self.unused = nn.Linear(3, 2), nn.Linear(3, 2), nn.Linear(3, 2)

        def forward(self, x):
            return self.used(x) + (self.rank0(x) if rank == 0 else 0)

    def factory(params):
        return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.1)

    weights = {}
    for kind in ("standard", "in_backward"):
        torch.manual_seed(0)
        net = Net()
        named = dict(net.named_parameters())
        plan = {n: 1.0 for n in named}
        opt = (InBackward(named, plan, factory) if kind == "in_backward"
               else build_optimizer(factory, param_groups(named, plan)))
        ddp = DistributedDataParallel(net, find_unused_parameters=True)
        if kind == "in_backward":
            opt.use_ddp(ddp)
        for step in range(2):
            x = torch.randn(4, 3, generator=torch.Generator().manual_seed(10 * step + rank))
            loss = ddp(x).square().mean()
            if kind == "in_backward":
                opt.begin_backward()
                loss.backward()
                opt.free_grads()
            else:
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
        states = opt.per_param if kind == "in_backward" else {n: opt for n in named}
        weights[kind] = {n: p.detach().clone() for n, p in named.items()}
        weights[kind + "_state"] = {n: bool(states[n].state.get(p)) for n, p in named.items()}
    torch.save(weights, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_ddp_with_unused_parameters_skips_what_had_no_gradient(tmp_path):
    """With find_unused_parameters, DDP's bucket holds zeros for a parameter no rank used; a zero-gradient step
    would still move it (weight decay, momentum) and give it state: the standard step skips it, so must this."""
    import socket
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_unused_parameters_worker, args=(2, port, str(tmp_path)), nprocs=2)
    torch.manual_seed(0)
    for rank in (0, 1):
        w = torch.load(tmp_path / f"rank{rank}.pt")
        assert_same_weights(w["standard"], w["in_backward"])
        assert w["standard_state"] == w["in_backward_state"] == {
            "used.weight": True, "used.bias": True, "rank0.weight": True, "rank0.bias": True,
            "unused.weight": False, "unused.bias": False}
