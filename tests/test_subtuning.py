"""SubTuning's greedy search: selection and stopping on a fake scorer, trials as resumable runs, the tiny demo."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from freeze_embed.tools import subtuning
from freeze_embed.run.config import compose
from freeze_embed.tools.subtuning import command, greedy_search
from freeze_embed.tools.subtuning.search import SearchError
from freeze_embed.tools.sweep import run as one_run

from helpers import ROOT

TINY = ["--trainer.max_epochs", "1", "--data.init_args.train_size", "64", "--data.init_args.eval_size", "32",
        "--data.init_args.batch_size", "16", "--data.init_args.num_workers", "0",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


class FakeScorer:
    """Scores from a table (missing subsets score 0.1); records each round's request."""

    def __init__(self, table: dict):
        self.table = {tuple(sorted(k)): v for k, v in table.items()}
        self.rounds: list[list[tuple]] = []

    def __call__(self, subsets):
        self.rounds.append([tuple(s) for s in subsets])
        return [self.table.get(tuple(s), 0.1) for s in subsets]


FORWARD = {(): 0.50, (0,): 0.60, (1,): 0.70, (2,): 0.55, (3,): 0.70,  # (3,) ties (1,): the first one wins
           (0, 1): 0.72, (1, 2): 0.71, (1, 3): 0.74,
           (0, 1, 3): 0.735, (1, 2, 3): 0.73,  # round 3 is 0.005 below the best: within epsilon, goes on
           (0, 1, 2, 3): 0.70}  # round 4 is 0.04 below: stops (no neighbour left anyway)


def test_forward_search_hand_worked():
    """Official rule: move to each round's best, keep the best seen, stop > epsilon below it; ties: first block."""
    fake = FakeScorer(FORWARD)
    r = greedy_search(4, fake, "forward", epsilon=0.01)
    assert fake.rounds == [[()], [(0,), (1,), (2,), (3,)], [(0, 1), (1, 2), (1, 3)], [(0, 1, 3), (1, 2, 3)],
                           [(0, 1, 2, 3)]]
    assert r.path == [(), (1,), (1, 3), (0, 1, 3), (0, 1, 2, 3)]
    assert r.best == (1, 3) and r.best_score == 0.74 and r.start == "forward"  # not round 3's 0.735
    assert [t.move for t in r.trials[1:5]] == ["+0", "+1", "+2", "+3"]
    assert len(r.trials) == 11


def test_forward_epsilon_and_max_blocks_stop_early():
    """A smaller epsilon stops at round 3 (0.735 < 0.74 - 0.001); max_blocks=1 stops after round 1."""
    fake = FakeScorer(FORWARD)
    r = greedy_search(4, fake, "forward", epsilon=0.001)
    assert len(fake.rounds) == 4 and r.best == (1, 3) and "round 3" in r.stopped
    fake = FakeScorer(FORWARD)
    r = greedy_search(4, fake, "forward", epsilon=0.01, max_blocks=1)
    assert fake.rounds == [[()], [(0,), (1,), (2,), (3,)]]
    assert r.best == (1,) and "max_blocks=1" in r.stopped
    fake = FakeScorer({(): 0.9})  # every block hurts: the linear probe wins after one round
    assert greedy_search(3, fake, "forward").best == () and len(fake.rounds) == 2


BACKWARD = {(0, 1, 2): 0.80, (1, 2): 0.78, (0, 2): 0.82, (0, 1): 0.79, (2,): 0.70, (0,): 0.75, (): 0.50}


def test_backward_search_hand_worked():
    fake = FakeScorer(BACKWARD)
    r = greedy_search(3, fake, "backward", epsilon=0.01)
    assert fake.rounds == [[(0, 1, 2)], [(1, 2), (0, 2), (0, 1)], [(2,), (0,)]]
    assert r.best == (0, 2) and r.best_score == 0.82 and r.path[-1] == (0,)
    assert [t.move for t in r.trials[1:]] == ["-0", "-1", "-2", "-0", "-2"]


def test_backward_max_blocks_only_small_subsets_can_win():
    """With max_blocks=1 the backward search walks down past the better 2-block subsets; (0,) is the first that
    fits, and the empty set (0.50) is more than epsilon below it."""
    fake = FakeScorer(BACKWARD)
    r = greedy_search(3, fake, "backward", epsilon=0.01, max_blocks=1)
    assert fake.rounds[-1] == [()] and len(fake.rounds) == 4
    assert r.best == (0,) and r.best_score == 0.75


def test_best_start_trains_both_and_starts_from_the_better():
    fake = FakeScorer(BACKWARD)
    r = greedy_search(3, fake, "best")
    assert fake.rounds[0] == [(0, 1, 2), ()] and r.start == "backward" and r.best == (0, 2)
    fake = FakeScorer({(0, 1, 2): 0.5, (): 0.5, (1,): 0.6})  # a tie starts from the linear probe, as theirs
    r = greedy_search(3, fake, "best")
    assert r.start == "forward" and r.best == (1,)


def test_failed_trials_are_no_candidates_and_a_failed_start_stops():
    table = dict(FORWARD)
    fake = FakeScorer(table)
    failing = lambda subsets: [None if s == (1,) else x for s, x in zip(subsets, fake(subsets))]  # noqa: E731 - a one-line scorer
    r = greedy_search(4, failing, "forward", max_blocks=1)
    assert r.best == (3,)  # (1,) failed; (3,) is the round's best
    with pytest.raises(SearchError, match="did not train"):
        greedy_search(4, lambda s: [None] * len(s), "forward")
    with pytest.raises(SearchError):
        greedy_search(4, fake, "sideways")


# --- trials as runs, with the training process replaced ------------------------------------------------------
@pytest.fixture(scope="module")
def demo_config():
    return compose([str(ROOT / "configs/demo.yaml")], TINY)


def _blocks(run_dir: Path) -> tuple:
    cfg = yaml.safe_load((run_dir / one_run.RUN_CONFIG).read_text())
    assert cfg["model"]["strategy"]["class_path"] == "freeze_embed.strategies.TrainBlocks"
    assert cfg["model"]["strategy"]["init_args"]["embed"] is False
    return tuple(cfg["model"]["strategy"]["init_args"]["blocks"])


def write_results(run_dir: Path, metric: str, last: float, best: float = None) -> None:
    """A trial's results.json: the metric after the last epoch and at the best one (the same unless ``best``)."""
    best = last if best is None else best
    (run_dir / "results.json").write_text(json.dumps({"selection_metric": metric, "last": {f"last/{metric}": last},
                                                      "best": {f"best/{metric}": best}}))


def fake_trials(monkeypatch, config: dict, score) -> list[tuple]:
    """Replace config composition and the training process: each trial records its subset in the returned list and
    writes a results.json scoring ``score(subsets so far)`` on ID validation."""
    monkeypatch.setattr(command, "compose", lambda configs, overrides=(): json.loads(json.dumps(config)))
    seen: list[tuple] = []

    def fake_call(cmd, log, env):
        run_dir = Path(cmd[cmd.index("--run_dir") + 1])
        seen.append(_blocks(run_dir))
        write_results(run_dir, "id_val/acc", score(seen))
        return 0
    monkeypatch.setattr(one_run, "_call", fake_call)
    return seen


def test_interrupted_search_resumes_and_never_reruns_finished_trials(tmp_path, monkeypatch, demo_config):
    """A search killed inside a trial (after its last.ckpt) continues on rerun: finished trials are read back from
    results.json, the killed one resumes from last.ckpt, and search.csv / strategy.yaml cover every trial."""
    monkeypatch.setattr(command, "compose", lambda configs, overrides=(): json.loads(json.dumps(demo_config)))
    calls: list[tuple] = []
    kill_at = {"subset": (2,)}

    def fake_call(cmd, log, env):
        run_dir = Path(cmd[cmd.index("--run_dir") + 1])
        subset = _blocks(run_dir)
        calls.append((subset, "--ckpt_path" in cmd))
        if subset == kill_at["subset"]:
            (run_dir / "checkpoints").mkdir(exist_ok=True)
            (run_dir / "checkpoints" / "last.ckpt").write_text("weights")
            kill_at["subset"] = None
            raise KeyboardInterrupt  # the search process dies here, mid-round
        score = FORWARD[subset]
        write_results(run_dir, "id_val/acc", score)
        return 0
    monkeypatch.setattr(one_run, "_call", fake_call)
    out = tmp_path / "search"
    argv = ["--config", "demo.yaml", "--out", str(out), "--max_blocks", "2"]
    with pytest.raises(KeyboardInterrupt):
        command.main(argv)
    assert calls == [((), False), ((0,), False), ((1,), False), ((2,), False)]
    assert not (out / "strategy.yaml").exists()
    rows = list(csv.DictReader(open(out / "search.csv")))
    assert [r["subset"] for r in rows] == ["none"]  # round 0 was logged; round 1 had not ended

    calls.clear()
    assert command.main(argv) == 0
    assert calls == [((2,), True), ((3,), False), ((0, 1), False), ((1, 2), False), ((1, 3), False)]
    rows = list(csv.DictReader(open(out / "search.csv")))
    assert [(r["round"], r["subset"], r["score"]) for r in rows] == [
        ("0", "none", "0.500000"), ("1", "0", "0.600000"), ("1", "1", "0.700000"), ("1", "2", "0.550000"),
        ("1", "3", "0.700000"), ("2", "0-1", "0.720000"), ("2", "1-2", "0.710000"), ("2", "1-3", "0.740000")]
    assert rows[-1]["run_dir"] == str(out / "trials" / "blocks_1-3")
    strategy = yaml.safe_load((out / "strategy.yaml").read_text())
    assert strategy == {"model": {"strategy": {"class_path": "freeze_embed.strategies.TrainBlocks",
                                               "init_args": {"blocks": [1, 3], "embed": False, "head": True}}}}
    assert (out / "profile.png").stat().st_size > 0

    calls.clear()  # a third run trains nothing
    assert command.main(argv) == 0 and calls == []


def test_profile_only_trains_each_single_block_once(tmp_path, monkeypatch, demo_config):
    seen = fake_trials(monkeypatch, demo_config, lambda seen: 0.5 + 0.01 * len(seen))
    out = tmp_path / "profile"
    assert command.main(["--config", "demo.yaml", "--out", str(out), "--profile_only"]) == 0
    assert seen == [(0,), (1,), (2,), (3,), (), (0, 1, 2, 3)]
    assert (out / "profile.png").exists() and not (out / "strategy.yaml").exists()
    assert len(list(csv.DictReader(open(out / "profile.csv")))) == 6 and not (out / "search.csv").exists()


def test_trials_run_as_submitit_jobs(tmp_path, monkeypatch, demo_config):
    """The SLURM path (submitit's in-process debug executor): same trials, same pick."""
    seen = fake_trials(monkeypatch, demo_config, lambda seen: FORWARD[seen[-1]])
    out = tmp_path / "slurm_search"
    assert command.main(["--config", "x.yaml", "--out", str(out), "--max_blocks", "1", "--launcher", "debug"]) == 0
    assert seen == [(), (0,), (1,), (2,), (3,)]
    assert yaml.safe_load((out / "strategy.yaml").read_text())["model"]["strategy"]["init_args"]["blocks"] == [1]


def test_no_wait_submits_a_round_and_exits(tmp_path, monkeypatch, demo_config, capsys):
    """--no_wait: the round's jobs are submitted, nothing is decided, the same command later goes on."""
    monkeypatch.setattr(command, "compose", lambda configs, overrides=(): json.loads(json.dumps(demo_config)))
    monkeypatch.setattr(one_run, "_call", lambda cmd, log, env: pytest.fail("a --no_wait call trained in-process"))
    out = tmp_path / "queued"
    assert command.main(["--config", "x.yaml", "--out", str(out), "--launcher", "debug", "--no_wait"]) == 0
    assert "run the same command again" in capsys.readouterr().out
    assert (out / "trials" / "blocks_none" / one_run.RUN_CONFIG).exists() and not (out / "strategy.yaml").exists()


@pytest.mark.parametrize("score, picked", [(None, [1]), ("last", [1]), ("best", [0])])
def test_score_after_the_last_epoch_by_default_or_at_the_best(tmp_path, monkeypatch, demo_config, score, picked):
    """The official search scores a trial by its last epoch's accuracy; ``--score best`` by its best epoch's.
    After the last epoch block 1 wins (0.70); at the best epochs block 0 does (0.90)."""
    monkeypatch.setattr(command, "compose", lambda configs, overrides=(): json.loads(json.dumps(demo_config)))

    def fake_call(cmd, log, env):
        run_dir = Path(cmd[cmd.index("--run_dir") + 1])
        subset = _blocks(run_dir)
        write_results(run_dir, "id_val/acc", FORWARD[subset], best=0.9 if subset == (0,) else FORWARD[subset])
        return 0
    monkeypatch.setattr(one_run, "_call", fake_call)
    out = tmp_path / "search"
    argv = ["--config", "x.yaml", "--out", str(out), "--max_blocks", "1", *(["--score", score] if score else [])]
    assert command.main(argv) == 0
    written = (out / "strategy.yaml").read_text()
    assert yaml.safe_load(written)["model"]["strategy"]["init_args"]["blocks"] == picked
    key = f"{score or 'last'}/id_val/acc"
    assert f"{key} {0.9 if score == 'best' else 0.7:.4f}" in written


def test_include_embed_blocks_searches_resnet_layer1_blocks(tmp_path, monkeypatch, demo_config):
    """--include_embed_blocks: a ResNet-18's candidates are its 8 blocks, layer1's two first (the official ResNet
    candidates); a trial of block 0 trains layer1.0 and the head, the stem stays frozen."""
    from freeze_embed.module import FineTuner
    from freeze_embed.strategies import TrainBlocks
    config = json.loads(json.dumps(demo_config))
    config["model"].update(backbone="torchvision:resnet18", backbone_kwargs=None)
    assert subtuning.count_blocks(config) == 6 and subtuning.count_blocks(config, embed_blocks=True) == 8
    trial = subtuning.trial_config(config, [0, 7], embed_blocks=True)
    assert trial["model"]["strategy"]["init_args"] == {"blocks": [0, 7], "embed": False, "head": True,
                                                       "embed_blocks": True}
    model = FineTuner(backbone="torchvision:resnet18", num_classes=3,
                      strategy=TrainBlocks(**trial["model"]["strategy"]["init_args"]))
    trained = set(model.trained_in(0))
    assert {n.split(".")[1] + "." + n.split(".")[2] for n in trained if n.startswith("backbone.")} == {
        "layer1.0", "layer4.1"}
    assert "head.weight" in trained and "backbone.conv1.weight" not in trained


def test_bad_inputs_say_one_sentence(tmp_path, monkeypatch, demo_config, capsys):
    cfg = json.loads(json.dumps(demo_config))
    del cfg["model"]["optimizer"]["init_args"]["lr"]
    monkeypatch.setattr(command, "compose", lambda configs, overrides=(): cfg)
    with pytest.raises(SearchError, match="no model.optimizer.init_args.lr"):
        command.main(["--config", "x.yaml", "--out", str(tmp_path)])


def test_count_blocks_builds_the_backbone_without_weights(demo_config):
    assert subtuning.count_blocks(demo_config) == 4


# --- the real thing -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_tiny_demo_search_end_to_end(tmp_path, monkeypatch):
    """Forward search, max 1 block, 1 tiny epoch per trial through train.py: 5 real trials; the pick composes."""
    def in_process(cmd, log, env):  # the same train.py command, without paying a Python start-up per trial
        from freeze_embed.run.cli import main
        main(cmd[cmd.index("fit"):])
        return 0
    monkeypatch.setattr(one_run, "_call", in_process)
    out = tmp_path / "search"
    assert command.main(["--config", str(ROOT / "configs/demo.yaml"), "--out", str(out), "--max_blocks", "1",
                         *TINY]) == 0
    rows = list(csv.DictReader(open(out / "search.csv")))
    assert [r["subset"] for r in rows] == ["none", "0", "1", "2", "3"]
    assert all(0 <= float(r["score"]) <= 1 and r["metric"] == "id_val/acc" for r in rows)
    best = max(rows[1:], key=lambda r: float(r["score"]))  # first of the best on a tie, as the search
    picked = yaml.safe_load((out / "strategy.yaml").read_text())["model"]["strategy"]["init_args"]["blocks"]
    if float(best["score"]) > float(rows[0]["score"]):
        assert picked == [int(best["subset"])]
    else:
        assert picked == []
    for r in rows:
        assert (Path(r["run_dir"]) / "checkpoints" / "last.ckpt").exists()
    composed = compose([str(ROOT / "configs/demo.yaml"), str(out / "strategy.yaml")])
    assert composed["model"]["strategy"]["class_path"] == "freeze_embed.strategies.TrainBlocks"
    assert composed["model"]["strategy"]["init_args"]["blocks"] == picked
    assert (out / "profile.png").exists()


def test_folds_score_each_subset_by_the_mean_over_held_out_folds(tmp_path, monkeypatch, demo_config):
    """--folds 3: each subset trains three times, each on 2/3 of the training set wrapped in HoldOutFold and selected
    on the held-out third; its score is the mean of the three, and the search moves on those means."""
    monkeypatch.setattr(command, "compose", lambda configs, overrides=(): json.loads(json.dumps(demo_config)))
    seen: dict = {}

    def fake_call(cmd, log, env):
        run_dir = Path(cmd[cmd.index("--run_dir") + 1])
        cfg = yaml.safe_load((run_dir / one_run.RUN_CONFIG).read_text())
        data = cfg["data"]
        assert data["class_path"] == "freeze_embed.data.HoldOutFold" and data["init_args"]["folds"] == 3
        assert data["init_args"]["data"]["class_path"] == "freeze_embed.data.DemoShift"
        subset, fold = _blocks(run_dir), data["init_args"]["fold"]
        assert run_dir.name == f"fold{fold}"
        seen.setdefault(subset, []).append(fold)
        score = FORWARD[subset] + (fold - 1) * 0.03  # folds 0, 1, 2: the mean is the table's score
        write_results(run_dir, "fold_val/acc", score)
        return 0
    monkeypatch.setattr(one_run, "_call", fake_call)
    out = tmp_path / "search"
    assert command.main(["--config", "demo.yaml", "--out", str(out), "--max_blocks", "2", "--folds", "3"]) == 0
    assert all(sorted(f) == [0, 1, 2] for f in seen.values()) and len(seen) == 8
    rows = list(csv.DictReader(open(out / "search.csv")))
    assert [(r["subset"], float(r["score"])) for r in rows][:2] == [("none", pytest.approx(0.5)),
                                                                  ("0", pytest.approx(0.6))]
    assert rows[0]["metric"] == "fold_val/acc"
    assert yaml.safe_load((out / "strategy.yaml").read_text())["model"]["strategy"]["init_args"]["blocks"] == [1, 3]
    with pytest.raises(SearchError, match="--folds must be 2 or more"):  # one sentence
        command.main(["--config", "demo.yaml", "--out", str(out), "--folds", "1"])


def test_diverged_and_failed_trials_are_no_candidates(tmp_path, monkeypatch, demo_config, capsys):
    """Block 1 (the best single block) diverges and block 3 crashes: the search picks block 0, logs each as what it
    is, and only the failure makes the exit code 1."""
    monkeypatch.setattr(command, "compose", lambda configs, overrides=(): json.loads(json.dumps(demo_config)))

    def fake_call(cmd, log, env):
        run_dir = Path(cmd[cmd.index("--run_dir") + 1])
        subset = _blocks(run_dir)
        if subset == (3,):
            log.write("Traceback (most recent call last):\nRuntimeError: CUDA out of memory\n")
            return 1
        result = ({"diverged": True, "diverged_at": {"epoch": 0, "step": 3}} if subset == (1,)
                  else {"last": {"last/id_val/acc": FORWARD[subset]}})
        (run_dir / "results.json").write_text(json.dumps({"selection_metric": "id_val/acc", **result}))
        return 0
    monkeypatch.setattr(one_run, "_call", fake_call)
    out = tmp_path / "search"
    assert command.main(["--config", "demo.yaml", "--out", str(out), "--max_blocks", "1"]) == 1
    rows = {r["subset"]: r["status"] for r in csv.DictReader(open(out / "search.csv"))}
    assert rows == {"none": "done", "0": "done", "1": "diverged", "2": "done", "3": "failed"}
    assert yaml.safe_load((out / "strategy.yaml").read_text())["model"]["strategy"]["init_args"]["blocks"] == [0]
    err = capsys.readouterr().err
    assert "trial blocks_1 diverged (no candidate)" in err
    assert "trial blocks_3 failed (RuntimeError: CUDA out of memory)" in err
