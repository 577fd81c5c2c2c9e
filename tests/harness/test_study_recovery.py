"""Dead-trial recovery when two workers start together: each sees the other's dead trial as
RUNNING, and the one that looks second must step aside, not crash."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import optuna
from optuna.trial import TrialState

from harness.study.recovery import recover_dead_trials

DEAD = f"{socket.gethostname()}:999999999:0"  # a pid no process has


def test_a_trial_a_sibling_recovered_first_is_skipped_not_a_crash():
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
    trial.set_user_attr("owner", DEAD)
    stale = study.get_trials(deepcopy=True, states=(TrialState.RUNNING,))
    # the sibling worker fails it between our read and our write
    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)

    class Stale:
        """The study as this worker read it a moment before the sibling wrote."""

        def get_trials(self, deepcopy=False, states=None):
            return stale if states == (TrialState.RUNNING,) else study.get_trials(states=states)

    settings = SimpleNamespace(heartbeat_s=30, max_retry=2)  # what recovery reads
    assert recover_dead_trials(Stale(), storage, settings, uri=None) == []
    assert study.trials[0].state == TrialState.FAIL
