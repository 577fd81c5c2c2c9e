"""Successive halving for multi-objective studies (harness/study/halving.py): the MO-ASHA
promotion rule, asynchronous rung decisions on an Optuna storage, stopped trials kept off the
front, and a killed trial resumed from its rung equal, bit for bit, to the uninterrupted run."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
from omegaconf import OmegaConf
from optuna.trial import TrialState
from torch import nn

from harness.config import compose
from harness.data import TensorBatches
from harness.errors import ConfigError, RunStopped
from harness.runtime.device import pick_runtime
from harness.study.halving import (
    FULL_CLAIM,
    Fidelity,
    RungHook,
    crowding_distances,
    mo_order,
    nondominated_fronts,
    promoted,
    rung_points,
    study_cost,
)
from harness.study.outcome import budget_met, outcome_of
from harness.study.recovery import retry_trial
from harness.study.settings import StudySettings
from harness.train.hooks import Hook, LoopState
from harness.train.loop import fit
from harness.train.optim import build_optimizer, build_scheduler

optuna.logging.set_verbosity(optuna.logging.ERROR)

# -- the promotion rule on hand-made points (minimised) -----------------------------------------


def test_fronts_are_non_dominated_layers():
    pts = [(1, 5), (2, 2), (5, 1), (3, 3), (6, 6), (2, 6)]
    assert nondominated_fronts(pts) == [[0, 1, 2], [3, 5], [4]]


def test_crowding_keeps_the_extremes_and_prefers_isolated_points():
    pts = [(0.0, 4.0), (1.0, 3.0), (1.2, 2.8), (4.0, 0.0)]
    d = crowding_distances(pts)
    assert d[0] == d[3] == math.inf
    # (1, 3) has both neighbours close by; (1.2, 2.8) has (4, 0) far away
    assert d[1] == pytest.approx(0.6) and d[2] == pytest.approx(1.5)


def test_order_is_rank_first_then_diversity_then_trial_number():
    # front 1: 0, 1, 2, 3 (1 and 2 crowded together); front 2: 4 dominated by 1
    pts = [(0.0, 4.0), (1.0, 3.0), (1.1, 2.9), (4.0, 0.0), (1.5, 3.5)]
    # the extremes (infinite distance, by trial number), then the less crowded (1.1, 2.9),
    # then (1, 3) next to the extreme (0, 4), then the dominated point
    assert mo_order(pts, keys=[10, 11, 12, 13, 14]) == [0, 3, 2, 1, 4]
    # equal crowding: the lower trial number first, whatever the list order
    assert mo_order([(1.0, 1.0), (1.0, 1.0)], keys=[7, 3]) == [1, 0]


def test_extremes_are_ranked_by_closeness_to_the_ideal_point_not_by_age():
    # A and C are the front's extremes (infinite crowding); B is between; D is dominated.
    # Scaled over the rung, A is nearer the ideal point (0, 0) than C, though C is older.
    a, b, c, d = (0.0, 10.0), (1.0, 1.0), (10.0, 0.0), (5.0, 12.0)
    assert mo_order([a, b, c, d], keys=[9, 5, 1, 7]) == [0, 2, 1, 3]


def test_promotion_keeps_the_top_third_by_non_dominated_rank():
    # six trials at a rung: ⌊6/3⌋ = 2 go on; the two extremes of the first front
    rung = {0: [-0.9, 0.5], 1: [-0.8, 0.3], 2: [-0.5, 0.6], 3: [-0.85, 0.4], 4: [-0.7, 0.7],
            5: [-0.6, 0.2]}  # fmt: skip
    # front 1: 0 (best quality), 3, 1, 5 (cheapest); crowding keeps 0 and 5
    assert [n for n in rung if promoted(n, rung, eta=3)] == [0, 5]
    with pytest.raises(KeyError):
        promoted(9, rung, eta=3)


def test_promotion_never_waits_for_a_rung_to_fill():
    # the first trial at a rung goes on alone; a dominated second one (⌊2/3⌋ → keep 1) stops
    assert promoted(0, {0: [-0.5, 0.5]}, eta=3)
    assert not promoted(1, {0: [-0.5, 0.5], 1: [-0.4, 0.6]}, eta=3)
    assert promoted(1, {0: [-0.5, 0.5], 1: [-0.6, 0.4]}, eta=3)


def test_rungs_and_settings():
    assert Fidelity(mode="halving", min_epochs=1, eta=3).rungs(9) == [1, 3]
    assert Fidelity(mode="halving", min_epochs=2, eta=2).rungs(20) == [2, 4, 8, 16]
    base = ["data=digits", "model=resnet20", "finetune.epochs=9"]
    s = StudySettings.from_cfg(compose([*base, "study.fidelity.mode=halving"]))
    assert s.fidelity.halving and s.fidelity.rungs(9) == [1, 3]
    assert not StudySettings.from_cfg(compose(base)).fidelity.halving  # full budget by default
    for bad, match in [
        ("study.fidelity.mode=sometimes", "unknown study.fidelity.mode"),
        ("study.fidelity.eta=1", "eta=1"),
        ("study.fidelity.min_epochs=9", "finetune.epochs=9 > study.fidelity.min_epochs=9"),
        ("study.fidelity.max_trials=0", "max_trials=0 must be a whole number"),
        ("study.fidelity.max_trials=5", "max_trials=5 is below study.n_trials=20"),
    ]:
        with pytest.raises(ConfigError, match=match):
            StudySettings.from_cfg(compose([*base, "study.fidelity.mode=halving", bad]))


def test_a_halving_study_counts_full_budget_trials_and_caps_all_of_them():
    base = ["data=digits", "model=resnet20", "finetune.epochs=9", "study.fidelity.mode=halving",
            "study.n_trials=2"]  # fmt: skip
    s = StudySettings.from_cfg(compose(base))
    assert s.max_trials == 2 * 3**2 * 2  # two rungs (1, 3): 2·η²·n_trials
    assert StudySettings.from_cfg(compose([*base, "study.fidelity.max_trials=7"])).max_trials == 7
    counts = {"done": 5, "complete": 1, "running": 1, "claimed": 0, "failed": 0}
    assert not budget_met(counts, s)  # 5 finished, but 1 of 2 full-budget trials
    assert budget_met({**counts, "claimed": 1}, s)  # the running one holds the last place
    assert budget_met({**counts, "done": 35}, s)  # the cap: 36 trials
    full = StudySettings.from_cfg(compose([*base[:3], "study.n_trials=6"]))
    assert full.max_trials is None and budget_met({**counts, "running": 1}, full)


def test_a_study_that_reaches_its_trial_cap_says_so():
    study = optuna.create_study(directions=["maximize", "minimize"])
    for _ in range(3):
        study.add_trial(optuna.create_trial(state=TrialState.PRUNED))
    base = ["data=digits", "model=resnet20", "finetune.epochs=9", "study.fidelity.mode=halving",
            "study.n_trials=1", "study.fidelity.max_trials=3"]  # fmt: skip
    out = outcome_of(study, StudySettings.from_cfg(compose(base)), 0.0, [])
    assert out.code != 0
    assert out.reason.startswith("budget not met: 0 of study.n_trials=1 full-budget trials after "
                                 "study.fidelity.max_trials=3 trials")  # fmt: skip


# -- a tiny fine-tuning run under a rung hook ---------------------------------------------------


class Regression:
    """A task the loop can train: dropout and augmentation draw from both RNGs."""

    metric = "neg_mse"

    def loss(self, model, batch):
        x, y = batch
        return {"loss": (model(x) - y).pow(2).mean()}

    def evaluate(self, model, batches):
        x, y = batches.tensors
        return {"neg_mse": -float((model(x) - y).pow(2).mean())}


def _jitter(batch, generator):
    x, y = batch
    return x + 0.01 * torch.randn(x.shape, generator=generator), y


EPOCHS = 4  # rungs at 1 and 3 (min_epochs 1, η 3)
FIDELITY = Fidelity(mode="halving", min_epochs=1, eta=3)


def _run_fit(lr: float, hooks=()):
    """Build everything as the pipeline does (seeded), then fine-tune `EPOCHS` epochs."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
    x = torch.randn(48, 4, generator=torch.Generator().manual_seed(1))
    y = x.sum(1, keepdim=True)
    train = TensorBatches((x, y), 8, shuffle=True, transform=_jitter, seed=5)
    val = TensorBatches((x[:16], y[:16]), 16)
    cfg = OmegaConf.create({"optimizer": "sgd", "lr": lr, "momentum": 0.9,
                            "weight_decay": 1e-4})  # fmt: skip
    optimizer = build_optimizer(model.parameters(), cfg)
    scheduler = build_scheduler(optimizer, cfg, epochs=EPOCHS, steps_per_epoch=len(train))
    result = fit(model, Regression(), train, epochs=EPOCHS, optimizer=optimizer,
                 scheduler=scheduler, runtime=pick_runtime("cpu"), hooks=hooks, val=val,
                 select_best=True, name="finetune")  # fmt: skip
    return model, result


class Killed(Exception):
    """Stands in for a worker dying mid-trial."""


class KillAfter(Hook):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def after_epoch(self, s: LoopState) -> None:
        if s.epoch == self.epoch:
            raise Killed


def _objective(tmp_path, *, kill_at=None, quality_shift=None, full_trials=None):
    """A fake study objective: one tiny fine-tune per trial with the trial's rung hook."""

    def objective(trial: optuna.Trial) -> list[float]:
        lr = trial.suggest_float("lr", 0.001, 0.1, log=True)
        macs = trial.suggest_float("macs", 0.1, 0.9)
        hook = RungHook(trial, fidelity=FIDELITY, objectives=("quality", "macs_ratio"),
                        fixed={"macs_ratio": macs, "cost_prune_train_images": 10.0},
                        path=tmp_path / f"trial{trial.number}.pt",
                        full_trials=full_trials)  # fmt: skip
        hooks = [hook] if kill_at is None else [hook, KillAfter(kill_at)]
        if quality_shift is not None:  # hand-made rung qualities (by configuration)
            hooks.insert(0, _Shift(quality_shift[lr]))
        try:
            model, result = _run_fit(lr, hooks)
        except RunStopped as e:
            raise optuna.TrialPruned(str(e)) from e
        record = {"cost_train_images": 10.0 + EPOCHS * 48}
        hook.finish(record)
        trial.set_user_attr("weights", [float(p.detach().sum()) for p in model.parameters()])
        return [result.best_val, macs]

    return objective


class _Shift(Hook):
    """Pins the validation score the rungs see (hand-made points through the real hook);
    deterministic, so a run with it is still comparable to another run with it."""

    def __init__(self, values: dict[int, float]) -> None:
        self.values = values  # epoch → best validation score

    def after_epoch(self, s: LoopState) -> None:
        if s.epoch in self.values:
            s.best_val = self.values[s.epoch]


def test_rungs_promote_asynchronously_and_stopped_trials_stay_off_the_front(tmp_path):
    study = optuna.create_study(directions=["maximize", "minimize"])
    # same MAC ratio, quality decides; trials run one after another, nobody waits
    qualities = {0: -0.5, 1: -0.9, 2: -0.8, 3: -0.1}
    lrs = {n: 0.01 + 0.001 * n for n in qualities}
    for n in qualities:
        study.enqueue_trial({"lr": lrs[n], "macs": 0.5})
    shift = {lrs[n]: {1: q, 3: q} for n, q in qualities.items()}
    study.optimize(_objective(tmp_path, quality_shift=shift), n_trials=4)
    states = {t.number: t.state for t in study.trials}
    # 0: first at every rung → full budget; 1, 2: dominated by 0 (⌊n/3⌋ ≤ 1 kept) → stop at 1;
    # 3: best so far at rung 1 (top ⌊4/3⌋ = 1) and at rung 3 (alone with 0, best) → complete
    assert states == {0: TrialState.COMPLETE, 1: TrialState.PRUNED, 2: TrialState.PRUNED,
                      3: TrialState.COMPLETE}  # fmt: skip
    for n in (1, 2):
        t = study.trials[n]
        assert t.user_attrs["stopped_at_epoch"] == 1
        assert t.user_attrs["rung.1"] == [-qualities[n], 0.5]
        assert t.user_attrs["rung_promoted.1"] is False
        assert t.user_attrs["cost_train_images"] == 10.0 + 1 * 48
        assert (tmp_path / f"trial{n}.pt").is_file()  # kept: a later promotion resumes it
    assert study.trials[0].user_attrs["rung_promoted.3"] is True
    assert sorted(rung_points(study.trials, 1)) == [0, 1, 2, 3]
    assert sorted(rung_points(study.trials, 3)) == [0, 3]
    assert all(t.state == TrialState.COMPLETE for t in study.best_trials)
    cost = study_cost(study)
    assert cost["study_train_images"] == 2 * (10.0 + EPOCHS * 48) + 2 * (10.0 + 48)
    assert cost["study_full_trials"] == 2 and cost["study_stopped_trials"] == 2


@pytest.mark.parametrize("claimed", [True, False])
def test_a_promoted_trial_stops_at_the_last_rung_when_the_full_budget_places_are_held(
    tmp_path, claimed
):
    study = optuna.create_study(directions=["maximize", "minimize"])
    other = study.ask()  # another worker's trial, running; it claimed the only place or not
    other.set_user_attr(FULL_CLAIM, claimed)
    study.enqueue_trial({"lr": 0.02, "macs": 0.5})
    study.optimize(_objective(tmp_path, full_trials=1), n_trials=1)
    t = study.trials[1]
    assert t.user_attrs["rung_promoted.1"] is True and t.user_attrs["rung_promoted.3"] is True
    if claimed:  # alone at every rung, so promoted, but the place is taken: it stops there
        assert t.state == TrialState.PRUNED and t.user_attrs["stopped_at_epoch"] == 3
        assert t.user_attrs[FULL_CLAIM] is False
        assert (tmp_path / "trial1.pt").is_file()  # a later promotion may continue it
    else:
        assert t.state == TrialState.COMPLETE and t.user_attrs[FULL_CLAIM] is True


def test_a_retry_resuming_at_the_last_rung_claims_its_place_again(tmp_path):
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.enqueue_trial({"lr": 0.02, "macs": 0.5})
    study.optimize(_objective(tmp_path, kill_at=4, full_trials=1), n_trials=1, catch=(Killed,))
    dead = study.trials[0]
    assert dead.state == TrialState.FAIL and dead.user_attrs[FULL_CLAIM] is True
    retry_trial(study, dead, max_retry=2)
    study.add_trial(optuna.create_trial(state=TrialState.COMPLETE, values=[0.0, 0.5]))
    study.optimize(_objective(tmp_path, full_trials=1), n_trials=1)
    retry = study.trials[1]  # the one place went to the trial that completed meanwhile
    assert retry.user_attrs["resumed_from"] == {"trial": 0, "epoch": 3}
    assert retry.state == TrialState.PRUNED and retry.user_attrs["stopped_at_epoch"] == 3


#: rung qualities (higher is better) per configuration (its lr): (rung 1, rung 3)
LATE = {0.010: (0.5, 0.5), 0.011: (0.4, 0.9), 0.012: (0.1, 0.1), 0.013: (0.2, 0.2),
        0.014: (0.3, 0.3), 0.015: (0.05, 0.05)}  # fmt: skip
LATE_SHIFT = {lr: {1: q1, 3: q3} for lr, (q1, q3) in LATE.items()}


def _late_study(tmp_path, n_trials: int) -> optuna.Study:
    """The six LATE configurations, then `n_trials` - 6 more trials (the continuation)."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    for lr in LATE:
        study.enqueue_trial({"lr": lr, "macs": 0.5})
    study.optimize(_objective(tmp_path, quality_shift=LATE_SHIFT), n_trials=n_trials)
    return study


def test_a_stopped_trial_promoted_later_continues_from_its_rung_bit_for_bit(tmp_path):
    t = _late_study(tmp_path, 7).trials
    # trial 1 (0.4) lost rung 1 to trial 0 (keep 1 of 2) and stopped; with 6 recorded there
    # the top 2 are trials 0 and 1, so trial 5's decision promotes it late: trial 6 continues it
    assert t[1].state == TrialState.PRUNED and t[1].user_attrs["stopped_at_epoch"] == 1
    assert t[6].user_attrs["continues"] == 1 and t[6].params == t[1].params
    assert t[6].user_attrs["resumed_from"] == {"trial": 1, "epoch": 1}
    assert t[6].state == TrialState.COMPLETE  # best at rung 3 (0.9 against trial 0's 0.5)
    assert [n for n in range(6) if t[n].state == TrialState.COMPLETE] == [0]
    # rung 1 counts the configuration once (on the stopped trial), rung 3 on its continuation
    assert sorted(rung_points(t, 1)) == [0, 1, 2, 3, 4, 5]
    assert sorted(rung_points(t, 3)) == [0, 6]
    assert t[6].user_attrs["cost_train_images"] == 10.0 + (EPOCHS - 1) * 48
    ref_model, ref = _run_fit(0.011, [_Shift(LATE_SHIFT[0.011])])  # never stopped
    assert t[6].values[0] == ref.best_val
    assert t[6].user_attrs["weights"] == [float(p.detach().sum()) for p in ref_model.parameters()]
    assert not (tmp_path / "trial1.pt").exists()  # the configuration moved on
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == [f"trial{n}.pt" for n in (2, 3, 4, 5)]


def test_a_continuation_without_its_snapshot_retrains_without_recording_rungs_twice(tmp_path):
    study = _late_study(tmp_path, 6)
    (tmp_path / "trial1.pt").unlink()  # e.g. another machine's outputs, not shared
    study.optimize(_objective(tmp_path, quality_shift=LATE_SHIFT), n_trials=1)
    t = study.trials
    assert t[6].user_attrs["continues"] == 1 and "resumed_from" not in t[6].user_attrs
    assert "rung.1" not in t[6].user_attrs and sorted(rung_points(t, 1)) == [0, 1, 2, 3, 4, 5]
    assert sorted(rung_points(t, 3)) == [0, 6] and t[6].state == TrialState.COMPLETE
    assert t[6].user_attrs["cost_train_images"] == 10.0 + EPOCHS * 48  # all of it, again
    ref_model, ref = _run_fit(0.011, [_Shift(LATE_SHIFT[0.011])])
    assert t[6].values[0] == ref.best_val


def test_a_killed_trial_resumes_from_its_rung_bit_for_bit_without_duplicate_rungs(tmp_path):
    ref_model, ref = _run_fit(0.02)  # the uninterrupted run
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.enqueue_trial({"lr": 0.02, "macs": 0.5})
    study.optimize(_objective(tmp_path, kill_at=2), n_trials=1, catch=(Killed,))
    dead = study.trials[0]
    assert dead.state == TrialState.FAIL and dead.user_attrs["rung_snapshot"]["epoch"] == 1
    retry_trial(study, dead, max_retry=2)  # what recovery does for a dead worker's trial
    study.optimize(_objective(tmp_path), n_trials=1)
    done = study.trials[1]
    assert done.state == TrialState.COMPLETE
    assert done.user_attrs["resumed_from"] == {"trial": 0, "epoch": 1}
    assert done.values[0] == ref.best_val  # bit for bit, not approximately
    assert done.user_attrs["weights"] == [float(p.detach().sum()) for p in ref_model.parameters()]
    # the rung is counted once (on the retry), and the retry pays only what it trained
    assert list(rung_points(study.trials, 1)) == [1]
    assert done.user_attrs["cost_train_images"] == 10.0 + (EPOCHS - 1) * 48
    assert not list(tmp_path.glob("*.pt"))


def test_resumed_fit_equals_the_uninterrupted_fit_in_every_weight(tmp_path):
    from harness.train.resume import load_snapshot, restore, save_snapshot, snapshot

    class SaveAndStop(Hook):
        def after_epoch(self, s: LoopState) -> None:
            if s.epoch == 1:
                save_snapshot(tmp_path / "s.pt", snapshot(s))
                raise Killed

    class Restore(Hook):
        def before_fit(self, s: LoopState) -> None:
            restore(s, load_snapshot(tmp_path / "s.pt"))

    ref_model, ref = _run_fit(0.05)
    with pytest.raises(Killed):
        _run_fit(0.05, [SaveAndStop()])
    torch.manual_seed(123)  # whatever ran in between, the snapshot's RNG state wins
    model, result = _run_fit(0.05, [Restore()])
    for a, b in zip(ref_model.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert result.best_epoch == ref.best_epoch and result.best_val == ref.best_val
    assert [h["loss"] for h in result.history] == [h["loss"] for h in ref.history]


def test_compare_reports_what_each_study_spent():
    from harness.report.compare import StudyPoints, _spent_lines, compare_tables

    def study(method, seed, spent):
        sp = StudyPoints(method, seed, f"{method}-s{seed}", [0], [0.4], [0.9], [0.9], [{}])
        sp.spent = {"study_train_images": spent, "study_full_trials": 2.0,
                    "study_stopped_trials": 4.0}  # fmt: skip
        return sp

    studies = [study("l1", 0, 1000.0), study("l1", 1, 2000.0), study("taylor", 0, 600.0)]
    t = compare_tables(studies, split="test", targets=[0.5], reference=(1.0, 0.0))
    row = t["summary"].set_index("method")
    assert row.loc["l1", "study_train_images"] == 1500.0  # mean over its seeds
    assert row.loc["taylor", "study_train_images"] == 600.0
    lines = _spent_lines(t["summary"])
    assert "| l1 | 1,500 | 2 | 4 |" in lines and "| taylor | 600 | 2 | 4 |" in lines
    plain = [StudyPoints("l1", 0, "l1-s0", [0], [0.4], [0.9], [0.9], [{}])]
    assert _spent_lines(compare_tables(plain, split="test", targets=[0.5],
                                       reference=(1.0, 0.0))["summary"]) == []  # fmt: skip


@pytest.mark.slow
def test_a_killed_two_worker_halving_study_resumes_its_promoted_trials_exactly(tmp_path):
    """Acceptance: 2 workers, killed mid-way (a trial promoted past its last rung), resumed:
    the study ends with study.n_trials full-budget trials, no configuration runs twice, no rung
    counts a trial twice, and every trial that continued from a rung snapshot (the killed one's
    retry, late promotions) ends with the result of an uninterrupted run of its parameters."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from harness.run.pipeline import run
    from harness.study import resolve_storage, run_study

    args = ["data=digits", "model=resnet20", "train.epochs=1", "finetune.epochs=9",
            "measure.latency=false", "study.n_startup_trials=2", "study.target.low=0.3",
            "method=l1", "study.n_trials=3", "study.workers=2", "study.fidelity.mode=halving",
            f"outputs={tmp_path}"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "study", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=Path(__file__).resolve().parents[2],
                            start_new_session=True)  # fmt: skip
    storage = resolve_storage(None, outputs=str(tmp_path), workers=2)
    name = "classification-digits-resnet20-l1-s0"
    victim = None
    deadline = time.time() + 400
    try:
        while victim is None and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            try:
                study = optuna.load_study(study_name=name, storage=storage.open())
            except Exception:  # noqa: BLE001 - not created yet
                continue
            victim = next((t for t in study.get_trials(states=(TrialState.RUNNING,))
                           if t.user_attrs.get(FULL_CLAIM)), None)  # fmt: skip
        assert victim is not None, "no trial was ever caught past its last rung"
        os.killpg(proc.pid, signal.SIGKILL)  # the study and both workers, mid-trial
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    summary = run_study(compose(args))
    study = optuna.load_study(study_name=name, storage=storage.open())
    assert summary["exit_code"] == 0
    full = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(full) == 3  # study.n_trials full-budget trials, not one more
    assert len(study.trials) <= StudySettings.from_cfg(compose(args)).max_trials
    # no parameters run twice: only retries and continuations repeat a configuration
    fresh = [t for t in study.trials if t.params and not ({"retry_of", "continues"}
                                                          & t.user_attrs.keys())]  # fmt: skip
    assert len({tuple(sorted(t.params.items())) for t in fresh}) == len(fresh)
    assert len({tuple(sorted(t.params.items())) for t in full}) == len(full)
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].user_attrs["resumed_from"] == {"trial": victim.number, "epoch": 3}
    for epoch in (1, 3):
        counted = rung_points(study.trials, epoch)
        assert victim.number not in counted and retry[0].number in counted
    # every full-budget trial that continued from a snapshot, against the same parameters run
    # uninterrupted (same threads as a worker of two)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    resumed = [t for t in full if t.user_attrs.get("resumed_from")]
    assert retry[0].number in {t.number for t in resumed}
    for t in resumed:
        values = [f"{k}={v!r}" for k, v in t.params.items()]
        record = run(compose([*args, *values, "tracking.enabled=false"]))
        assert t.values[0] == record["val_metric"]
        assert t.user_attrs["test_metric"] == record["test_metric"]
