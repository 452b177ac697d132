"""Values that used to fail deep inside a library (or silently) end in one sentence before the model is built: one
test per class of bad value."""
import pytest

from helpers import run_cli, tiny_demo_args


def refused(tmp_path, capsys, monkeypatch, extra) -> str:
    """The CLI's one sentence; the model (the backbone) must never have been built."""
    from freeze_embed import module

    def never(*args, **kwargs):
        raise AssertionError("the model was built before the value was checked")
    monkeypatch.setattr(module, "create_backbone", never)
    with pytest.raises(SystemExit) as exc:
        run_cli(tiny_demo_args(tmp_path, extra=extra))
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: ")  # exit 2 with "error: ": a FreezeEmbedError's sentence, no traceback
    return lines[-1]


@pytest.mark.parametrize("lr", ["-0.1", "0"])
def test_learning_rate_must_be_positive(tmp_path, capsys, monkeypatch, lr):
    line = refused(tmp_path, capsys, monkeypatch, ["--model.optimizer.init_args.lr", lr])
    assert line == (f"error: model.optimizer.init_args.lr must be positive, not {float(lr)!r}; give the learning rate, "
                    "e.g. --model.optimizer.init_args.lr 1e-3 (an LR of 0 trains nothing).")


def test_batch_size_must_be_at_least_one(tmp_path, capsys, monkeypatch):
    line = refused(tmp_path, capsys, monkeypatch, ["--data.init_args.batch_size", "0"])
    assert line == ("error: data.init_args.batch_size must be an integer of at least 1, not 0; give the per-process "
                    "batch size, e.g. 64.")


def test_num_workers_must_not_be_negative(tmp_path, capsys, monkeypatch):
    line = refused(tmp_path, capsys, monkeypatch, ["--data.init_args.num_workers", "-1"])
    assert line.startswith("error: data.init_args.num_workers must be an integer of at least 0, not -1;")


@pytest.mark.parametrize("epochs", ["0", "-1"])
def test_max_epochs_must_train(tmp_path, capsys, monkeypatch, epochs):
    line = refused(tmp_path, capsys, monkeypatch, ["--trainer.max_epochs", epochs])
    assert line.startswith(f"error: trainer.max_epochs must be at least 1, not {epochs}")


def test_gradual_unfreezing_needs_two_epochs(tmp_path, capsys, monkeypatch):
    """Also when LP-FT wraps it."""
    gradual = "freeze_embed.strategies.GradualUnfreeze"
    for extra in (["--model.strategy", gradual],
                  ["--model.strategy", "freeze_embed.strategies.LPFT", "--model.strategy.init_args.finetune", gradual]):
        line = refused(tmp_path, capsys, monkeypatch, [*extra, "--trainer.max_epochs", "1"])
        assert line.startswith("error: GradualUnfreeze needs trainer.max_epochs of at least 2 ") and "not 1;" in line


def test_momentum_must_be_in_0_1(tmp_path, capsys, monkeypatch):
    line = refused(tmp_path, capsys, monkeypatch, ["--model.optimizer.init_args.momentum", "1.0"])
    assert line.startswith("error: model.optimizer.init_args.momentum must be in [0, 1), not 1.0;")


def test_weight_decay_and_betas():
    """The optimizer's other ranges (the CLI calls the same check)."""
    from freeze_embed.run.values import BadValueError, check_optimizer
    with pytest.raises(BadValueError, match=r"weight_decay must be 0 or more, not -0.1;"):
        check_optimizer({"lr": 1e-3, "weight_decay": -0.1})
    with pytest.raises(BadValueError, match=r"betas must be two numbers in \[0, 1\), not \[0.9, 1.0\];"):
        check_optimizer({"lr": 1e-3, "betas": [0.9, 1.0]})
    check_optimizer({"lr": 1e-3, "momentum": 0.0, "weight_decay": 0.0, "betas": [0.9, 0.999]})  # the edges pass
