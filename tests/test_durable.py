"""Nothing lost: a save cut short (full disk, SIGKILL) keeps the previous checkpoint and the next ``--ckpt_path last``
resumes to exactly the uninterrupted result; an unreadable last.ckpt falls back to the newest readable checkpoint
(also for a sweep's resumed run); nobody in: a checkpoint whose pickle runs code never runs, and a bad --ckpt_path is
one sentence before the model is built."""
import errno
import io
import json
import os
import signal
import subprocess
import sys

import lightning as L
import pytest
import torch
import yaml

from helpers import ROOT, run_cli

REAL_SAVE = torch.save


def write_half_of(obj, f) -> None:
    """Serialise ``obj`` whole, then write only the first half of its bytes to ``f`` (a file object or a path)."""
    buf = io.BytesIO()
    REAL_SAVE(obj, buf)
    half = buf.getvalue()[: len(buf.getvalue()) // 2]
    if hasattr(f, "write"):
        f.write(half)
        f.flush()
    else:
        with open(f, "wb") as out:
            out.write(half)


class Dying:
    """A file whose first write puts half its bytes on disk, then SIGKILLs the process: a kill mid-write."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(data[: max(1, len(data) // 2)])
        self.f.flush()
        os.fsync(self.f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


class KillWhileWritingLast(L.Callback):
    """From the checkpoint saves of ``epoch`` on, the first write of bytes into a file of the checkpoint folder with
    ``last`` in its name (``last.ckpt`` itself, or a temporary file for it) is cut halfway by a SIGKILL: wherever a
    CheckpointIO stages the bytes, the kill lands while they go to their folder. Copies are made to go through
    Python's ``write`` (no ``sendfile``), so the hook sees them too."""

    def __init__(self, epoch: int = 1):
        self.epoch = epoch

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if trainer.current_epoch != self.epoch or io.open is not REAL_OPEN:
            return
        import builtins
        import shutil
        folder = os.path.realpath(trainer.checkpoint_callback.dirpath)

        def opening(file, mode="r", *args, **kwargs):
            f = REAL_OPEN(file, mode, *args, **kwargs)
            path = os.path.realpath(f"/proc/self/fd/{file}" if isinstance(file, int) else file)
            writing = any(c in mode for c in "wax+")
            if writing and os.path.dirname(path) == folder and "last" in os.path.basename(path):
                return Dying(f)
            return f
        shutil._USE_CP_SENDFILE = False
        io.open = builtins.open = opening


REAL_OPEN = io.open


def failing_save(obj, f, *args, **kwargs):
    """``torch.save`` on a disk that fills up halfway through the second epoch's checkpoint."""
    if isinstance(obj, dict) and obj.get("epoch") == 1:
        write_half_of(obj, f)
        raise OSError(errno.ENOSPC, "No space left on device")
    return REAL_SAVE(obj, f, *args, **kwargs)


def ckpt_files(folder):
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".ckpt")


def loads(path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    """The demo at test size as one config file (a sweep's run_config.yaml can be the same file)."""
    folder = tmp_path_factory.mktemp("durable")
    cfg = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    cfg["data"]["init_args"].update(train_size=32, eval_size=32, batch_size=16)
    cfg["trainer"].update(max_epochs=2, enable_progress_bar=False, enable_model_summary=False)
    cfg["trainer"]["logger"]["init_args"]["save_dir"] = str(folder / "logs")
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def whole(config):
    """The uninterrupted 2-epoch run every interrupted one must equal."""
    run, cwd = config.parent / "whole", os.getcwd()
    os.chdir(ROOT)  # the config names the demo checkpoint relative to the repo root
    try:
        run_cli(["fit", "--config", str(config), "--run_dir", str(run)])
    finally:
        os.chdir(cwd)
    return run


def assert_same_run(run, whole) -> None:
    """Exactly the uninterrupted run: the same results.json and the same final weights, bit for bit."""
    results = [json.loads((r / "results.json").read_text())["last"] for r in (run, whole)]
    assert results[0] == results[1]
    a, b = loads(whole / "checkpoints/last.ckpt"), loads(run / "checkpoints/last.ckpt")
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"])
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


def one_sentence(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ")
    return err[-1]


@pytest.mark.slow
def test_full_disk_mid_save_keeps_the_previous_checkpoint_and_resume_is_exact(config, whole, tmp_path, monkeypatch,
                                                                             capsys):
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(torch, "save", failing_save)
        with pytest.raises(SystemExit) as exc:
            run_cli(["fit", "--config", str(config), "--run_dir", str(run)])
    assert exc.value.code == 2
    msg = one_sentence(capsys)
    assert "No space left on device" in msg and "written before are untouched" in msg and "--ckpt_path last" in msg
    folder = run / "checkpoints"
    assert loads(folder / "last.ckpt")["epoch"] == 0  # the previous epoch's, whole
    assert [p.name for p in folder.iterdir() if p.suffix != ".ckpt"] == []  # no temporary file left behind
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append(os.path.basename(b)), real_replace(a, b))[1])
    run_cli(["fit", "--config", str(config), "--run_dir", str(run), "--ckpt_path", "last"])
    assert_same_run(run, whole)
    assert "results.json" in replaced and "last.ckpt" in replaced  # both landed by os.replace: never half there


@pytest.mark.slow
def test_sigkill_while_saving_keeps_the_previous_checkpoint_and_resume_is_exact(config, whole, tmp_path):
    """A train.py process killed while its epoch-2 last.ckpt is being written. $TMPDIR is put on another filesystem
    than the run (tmpfs /dev/shm vs. the disk), as on a cluster node with a local /tmp: a checkpoint staged in
    $TMPDIR would have to be copied onto last.ckpt, and the kill would cut that copy."""
    run, kill = tmp_path / "run", tmp_path / "kill.yaml"
    callbacks = yaml.safe_load(config.read_text())["trainer"]["callbacks"]
    kill.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        *callbacks, {"class_path": "test_durable.KillWhileWritingLast", "init_args": {"epoch": 1}}]}}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "TMPDIR": "/dev/shm"}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "fit", "--config", str(config), "--config",
                           str(kill), "--run_dir", str(run)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    folder = run / "checkpoints"
    assert loads(folder / "last.ckpt")["epoch"] == 0
    run_cli(["fit", "--config", str(config), "--run_dir", str(run), "--ckpt_path", "last"])
    assert_same_run(run, whole)


@pytest.mark.slow
def test_sweep_run_with_a_truncated_last_ckpt_falls_back_and_resume_is_exact(config, whole, tmp_path, monkeypatch,
                                                                             capsys):
    """The sweep (and the SubTuning search, which launches its trials the same way) resumes a run with
    ``--ckpt_path <run>/checkpoints/last.ckpt``: a truncated one falls back to the run's best checkpoint."""
    from freeze_embed.tools.sweep import run as one_run
    run = one_run.Run(lr=0.01, seed=0, run_dir=str(tmp_path / "run"))
    cfg = yaml.safe_load(config.read_text())
    folder = tmp_path / "run/checkpoints"
    (tmp_path / "run").mkdir()

    def in_process(cmd, log, env):
        run_cli(cmd[cmd.index("fit"):])
        return 0
    monkeypatch.setattr(one_run, "_call", in_process)
    crashing = {**cfg, "trainer": {**cfg["trainer"], "callbacks": [
        *cfg["trainer"]["callbacks"], {"class_path": "my_strategies.CrashAtEpoch", "init_args": {"epoch": 1}}]}}
    (tmp_path / "run" / one_run.RUN_CONFIG).write_text(yaml.safe_dump(crashing))
    assert one_run.execute(run)["status"] == "failed"  # crashed at the start of epoch 1
    assert ckpt_files(folder) == ["best-epoch00.ckpt", "last.ckpt"]
    last = folder / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])  # cut by an in-place write
    (tmp_path / "run" / one_run.RUN_CONFIG).write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    report = one_run.execute(run)
    assert report["status"] == "done" and report["resumed"]
    err = capsys.readouterr().err
    assert (f"warning: '{last}' is unreadable (truncated, or cut by a kill mid-write); resuming from "
            f"'{folder / 'best-epoch00.ckpt'}' (epoch 0, step 2), the newest readable checkpoint of this run.") in err
    assert_same_run(tmp_path / "run", whole)


class Marker:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("subcommand", ["fit", "test"])
def test_checkpoint_whose_pickle_runs_code_never_runs(config, tmp_path, monkeypatch, capsys, subcommand):
    marker, evil = tmp_path / "marker", tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "payload": Marker(marker)}, evil)
    monkeypatch.setattr("freeze_embed.module.create_backbone", lambda *a, **k: pytest.fail("the model was built"))
    with pytest.raises(SystemExit) as exc:
        run_cli([subcommand, "--config", str(config), "--ckpt_path", str(evil)])
    assert exc.value.code == 2 and not marker.exists()
    msg = one_sentence(capsys)
    assert f"'{evil}'" in msg and "could run code" in msg and "--model.trust_pickle true" in msg


@pytest.mark.parametrize("subcommand", ["fit", "test"])
def test_missing_ckpt_path_is_one_sentence_before_the_model_is_built(config, monkeypatch, capsys, subcommand):
    monkeypatch.setattr("freeze_embed.module.create_backbone", lambda *a, **k: pytest.fail("the model was built"))
    with pytest.raises(SystemExit) as exc:
        run_cli([subcommand, "--config", str(config), "--ckpt_path", "/no/such.ckpt"])
    assert exc.value.code == 2
    assert one_sentence(capsys) == ("error: The checkpoint '/no/such.ckpt' given as --ckpt_path does not exist; give a "
                                    ".ckpt file a run wrote (or --ckpt_path last with the run's --run_dir).")


# --- the pieces, without training ----------------------------------------------------------------------------------
def fake_ckpt(path, epoch: int, step: int) -> None:
    REAL_SAVE({"state_dict": {"w": torch.full((4,), float(step))}, "epoch": epoch, "global_step": step}, path)


def test_atomic_checkpoint_io_keeps_the_previous_file_when_the_disk_fills(tmp_path, monkeypatch):
    from freeze_embed.run.checkpoint_io import AtomicCheckpointIO, CheckpointWriteError
    path = tmp_path / "last.ckpt"
    fake_ckpt(path, 0, 2)
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(CheckpointWriteError, match=r"^Could not write the checkpoint '.*last\.ckpt' \(No space left"):
        AtomicCheckpointIO().save_checkpoint({"epoch": 1, "state_dict": {}}, str(path))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["last.ckpt"]


def test_last_falls_back_to_the_newest_readable_checkpoint(tmp_path, capsys):
    from freeze_embed.run.checkpoint_io import resolve_ckpt_path
    fake_ckpt(tmp_path / "best-epoch03.ckpt", 3, 8)
    fake_ckpt(tmp_path / "best-epoch01.ckpt", 1, 4)  # written later, but less far into training
    fake_ckpt(tmp_path / "last.ckpt", 4, 10)
    (tmp_path / "last.ckpt").write_bytes((tmp_path / "last.ckpt").read_bytes()[:100])
    assert resolve_ckpt_path("last", "fit", str(tmp_path)) == str(tmp_path / "best-epoch03.ckpt")
    assert capsys.readouterr().err == (
        f"warning: '{tmp_path / 'last.ckpt'}' is unreadable (truncated, or cut by a kill mid-write); resuming from "
        f"'{tmp_path / 'best-epoch03.ckpt'}' (epoch 3, step 8), the newest readable checkpoint of this run.\n")


def test_unreadable_checkpoint_without_fallback_is_one_sentence(tmp_path):
    from freeze_embed.run.checkpoint_io import resolve_ckpt_path
    from freeze_embed.files import UnreadableFileError
    (tmp_path / "last.ckpt").write_bytes(b"PK\x03\x04 cut")
    with pytest.raises(UnreadableFileError, match=r"^Cannot resume: cannot read the checkpoint .* and no other "
                                                  r"checkpoint in '.*' reads either; start the run afresh"):
        resolve_ckpt_path(str(tmp_path / "last.ckpt"), "fit", None)
    fake_ckpt(tmp_path / "best-epoch00.ckpt", 0, 2)
    with pytest.raises(UnreadableFileError, match="truncated or not a PyTorch file"):  # test the file asked for
        resolve_ckpt_path(str(tmp_path / "last.ckpt"), "test", None)
    assert resolve_ckpt_path("last", "fit", str(tmp_path / "none_yet")) == "last"  # a first run: Lightning's warning


def test_the_cli_installs_atomic_checkpoint_io_unless_the_user_gave_one():
    from lightning.pytorch.plugins.io import AsyncCheckpointIO, TorchCheckpointIO
    from freeze_embed.run.checkpoint_io import AtomicCheckpointIO, install
    trainer = L.Trainer(logger=False, enable_checkpointing=False)
    install(trainer)
    assert type(trainer.strategy.checkpoint_io) is AtomicCheckpointIO
    mine = TorchCheckpointIO()
    trainer = L.Trainer(logger=False, enable_checkpointing=False, plugins=[mine])
    install(trainer)
    assert trainer.strategy.checkpoint_io is mine
    trainer = L.Trainer(logger=False, enable_checkpointing=False, plugins=[AsyncCheckpointIO()])
    install(trainer)
    assert type(trainer.strategy.checkpoint_io.checkpoint_io) is AtomicCheckpointIO
