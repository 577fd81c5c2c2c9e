"""A resumed study draws new points: the sampler's seed accounts for the trials already in the
study, so a resume (2 → 4 → 6) never replays a trial it ran; only a retry repeats parameters."""

from __future__ import annotations

import json
import os
import signal

import optuna
import pytest

from harness.study.settings import StudySettings
from harness.study.workers import make_sampler, sampler_seed, trials_started
from tests.faults.conftest import TINY_STUDY


def _settings(sampler: str) -> StudySettings:
    return StudySettings(
        name="s", n_trials=None, timeout_s=None, workers=1, sampler=sampler, seed=0,
        objectives=("quality", "macs_ratio"), constraints={}, enqueue_defaults=False,
        enqueue=(), max_failures=10, max_retry=2, heartbeat_s=30, n_startup_trials=2,
        population_size=4, workers_per_device=None, job=None,
    )  # fmt: skip


def _objective(trial: optuna.Trial) -> tuple[float, float]:
    x = trial.suggest_float("x", 0.0, 1.0)
    y = trial.suggest_float("y", 1e-5, 1e-1, log=True)
    return x * y, 1.0 - x


@pytest.mark.parametrize("sampler", ["random", "tpe", "nsga2"])
def test_each_start_of_a_study_draws_points_it_never_drew(sampler):
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="s", storage=storage, directions=["maximize", "minimize"])
    settings = _settings(sampler)
    for _ in range(3):  # a study started 3 times, 2 trials each, as `study.n_trials=2,4,6` does
        started = trials_started(storage, "s")
        sampler_ = make_sampler(settings, index=0, started=started)
        study = optuna.load_study(study_name="s", storage=storage, sampler=sampler_)
        study.optimize(_objective, n_trials=2)
    points = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(points) == 6 and len(set(points)) == 6, points


def test_a_fresh_study_keeps_its_reproducible_seed_and_resumes_get_new_ones():
    assert sampler_seed(7, 0, 0) == 7 and sampler_seed(7, 2, 0) == 7 + 2 * 10_007
    seeds = {sampler_seed(7, i, n) for i in range(3) for n in (0, 2, 4, 6)}
    assert len(seeds) == 12  # every (worker, start) pair its own stream
    assert sampler_seed(None, 1, 4) is None  # unseeded stays unseeded


@pytest.mark.slow
def test_a_study_resumed_twice_has_no_two_trials_with_equal_parameters(cli, tmp_path):
    args = [*TINY_STUDY, f"outputs={tmp_path}", "study.enqueue_defaults=false"]
    for n in (2, 4, 6):
        r = cli("study", *args, f"study.n_trials={n}")
        assert r.code == 0, r.stderr[-3000:]
        assert json.loads(r.stdout)["n_complete"] == n
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/optuna.db")
    (name,) = optuna.get_all_study_names(storage)
    trials = optuna.load_study(study_name=name, storage=storage).trials
    points = [tuple(sorted(t.params.items())) for t in trials if "retry_of" not in t.user_attrs]
    assert len(points) == 6 and len(set(points)) == 6, points


@pytest.mark.slow
def test_a_study_killed_and_resumed_repeats_only_the_retried_trial(cli, tmp_path):
    from optuna.trial import TrialState

    from tests.faults.conftest import Spawned
    from tests.faults.test_exit_codes import _running_trial, _study

    args = [*TINY_STUDY, f"outputs={tmp_path}", "study.n_trials=3", "finetune.epochs=4",
            "study.enqueue_defaults=false"]  # fmt: skip
    # trial 1 hangs once pruned, so the kill lands mid-trial after trial 0 completed
    proc = Spawned("study", *args, logs=tmp_path / "logs", env={"TINYCLI_HANG_AT_TRIAL": "1"})
    try:
        # trial 0 runs too before it completes: wait for the hanging trial 1 itself
        victim = proc.wait_for(
            lambda: next(
                (t for t in [_running_trial(tmp_path)] if t is not None and t.number == 1), None
            )
        )
        assert victim.number == 1
        os.kill(proc.pid, signal.SIGKILL)  # the whole study, mid-trial
    finally:
        proc.kill()
    r = cli("study", *args)
    assert r.code == 0, r.stderr[-3000:]
    trials = _study(tmp_path).trials
    assert [t.user_attrs.get("retry_of") for t in trials] == [None, None, 1, None]
    assert trials[2].params == trials[1].params and trials[0].state == TrialState.COMPLETE
    points = [tuple(sorted(t.params.items())) for t in trials if "retry_of" not in t.user_attrs]
    assert len(points) == len(set(points)), points
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
