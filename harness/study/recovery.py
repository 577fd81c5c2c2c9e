"""Dead-worker recovery: a trial whose worker died (SIGKILL, a lost host, Ctrl-C) is failed with
its reason, its MLflow run marked KILLED, and its parameters enqueued again (at most
`study.max_retry` times along its chain). Liveness comes from the process token each trial
records as its `owner` (harness/runtime/processes.py); RDB storages also report stale heartbeats."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from harness.runtime.processes import is_alive
from harness.study.mlflow_link import mark_run

if TYPE_CHECKING:
    import optuna

    from harness.study.settings import StudySettings

__all__ = ["on_stale", "recover_dead_trials", "retry_trial"]

log = logging.getLogger(__name__)


def retry_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, *, max_retry: int) -> None:
    """Enqueue a failed trial's parameters again (at most `max_retry` times along its chain)."""
    import optuna

    history = [*trial.user_attrs.get("retry_history", []), trial.number]
    if not trial.params:
        return  # died before sampling: nothing to repeat
    if len(history) > max_retry:
        log.warning("trial %d failed %d times; not retried again", trial.number, len(history))
        return
    if any(t.user_attrs.get("retry_of") == trial.number for t in study.get_trials(deepcopy=False)):
        return
    study.add_trial(
        optuna.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs={"retry_of": trial.number, "retry_history": history},
        )
    )
    log.info("trial %d re-enqueued with the same parameters", trial.number)


def on_stale(
    study: optuna.Study, trial: optuna.trial.FrozenTrial, *, max_retry: int, uri: str | None
) -> None:
    """Heartbeat callback (RDB storages): a trial whose worker stopped beating."""
    if uri and trial.user_attrs.get("mlflow_run_id"):
        mark_run(uri, trial.user_attrs["mlflow_run_id"], "KILLED", "worker stopped (heartbeat)")
    retry_trial(study, trial, max_retry=max_retry)


def recover_dead_trials(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    settings: StudySettings,
    uri: str | None,
) -> list[int]:
    """Fail RUNNING trials whose process on this host is gone, and retry them; retry trials a
    Ctrl-C interrupted. Called by the study before its workers start, and by each worker before
    each trial (a sibling worker may have died)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    recovered = []
    grace = timedelta(seconds=2 * settings.heartbeat_s)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get("owner")
        if owner is not None and is_alive(owner):
            continue
        if owner is None and (
            t.datetime_start is None or datetime.now() - t.datetime_start < grace
        ):
            continue  # just asked by a live worker elsewhere, or the heartbeat's call
        reason = f"worker {owner or '?'} died mid-trial"
        # FrozenTrial._trial_id is the storage key; Optuna has no public "fail this trial" call
        try:
            storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
            if not storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
                continue  # finished meanwhile
        except UpdateFinishedTrialError:
            continue  # a sibling worker starting at the same time recovered it first
        log.warning("trial %d: %s; marked failed", t.number, reason)
        if uri and t.user_attrs.get("mlflow_run_id"):
            mark_run(uri, t.user_attrs["mlflow_run_id"], "KILLED", reason)
        recovered.append(t.number)
        retry_trial(study, storage.get_trial(t._trial_id), max_retry=settings.max_retry)
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if t.user_attrs.get("interrupted"):
            retry_trial(study, t, max_retry=settings.max_retry)
    return recovered
