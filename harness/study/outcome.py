"""How a study invocation ended, as an exit code and one line, and quiet trial failures.

A study that "finished" without meeting its budget (every trial failed, too many failed, or a
worker died) must not exit 0: the summary carries `exit_code` and `exit_reason`, and the CLI
prints the JSON line, then the reason, and exits with the code (harness/exit_codes.py).
Optuna logs a failed trial with its full traceback (and a second line); the recorded
`fail_reason` says the same in one line, so `OptunaFailureFilter` shortens Optuna's report.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.exit_codes import BUDGET_NOT_MET, OK, WORKER_DIED
from harness.study.halving import FULL_CLAIM

if TYPE_CHECKING:
    import optuna

    from harness.study.settings import StudySettings

__all__ = [
    "OptunaFailureFilter",
    "StudyOutcome",
    "budget_met",
    "count_trials",
    "outcome_of",
    "quiet_optuna_failures",
    "study_outcome",
]

log = logging.getLogger(__name__)

_FAILED_WITH_PARAMS = re.compile(
    r"^Trial (?P<n>\d+) failed with parameters: .*? because of the following error: "
    r"(?P<err>.*)\.$",
    re.DOTALL,
)
_FAILED_WITH_VALUE = re.compile(r"^Trial \d+ failed with value ")


@dataclass(frozen=True)
class StudyOutcome:
    code: int
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"exit_code": self.code, "exit_reason": self.reason}


def study_outcome(
    *,
    n_trials: int | None,
    n_done: int,
    n_complete: int,
    n_failed_now: int,
    max_failures: int,
    deadline_passed: bool,
    dead_workers: Sequence[str] = (),
    first_fail_reason: str | None = None,
    n_running_elsewhere: int = 0,
) -> StudyOutcome:
    """The exit code and reason of one invocation (see harness/exit_codes.py).

    `n_running_elsewhere`: trials still running in other launcher jobs of the study when this
    one's workers stopped; they hold the rest of the budget, so this job met its share."""
    rerun = "rerun the same command to retry them"
    if dead_workers:
        return StudyOutcome(
            WORKER_DIED,
            f"{len(dead_workers)} worker(s) died ({', '.join(dead_workers)}); their trials were "
            f"failed and are retried: {rerun}",
        )
    why = f" (first: {first_fail_reason})" if first_fail_reason else ""
    if n_complete == 0 and n_failed_now > 0:
        return StudyOutcome(
            BUDGET_NOT_MET,
            f"every trial failed: {n_failed_now} failed, 0 complete{why}; fix the cause, then "
            "rerun",
        )
    in_flight = n_running_elsewhere if n_failed_now < max_failures else 0
    if n_trials is not None and n_done + in_flight < n_trials and not deadline_passed:
        cause = (
            f"study.max_failures={max_failures} trials failed{why}"
            if n_failed_now >= max_failures
            else "the workers stopped early"
        )
        return StudyOutcome(
            BUDGET_NOT_MET,
            f"budget not met: {n_done} of study.n_trials={n_trials} trials finished; {cause}",
        )
    return StudyOutcome(OK, "")


def count_trials(study: optuna.Study, since: float) -> dict[str, int]:
    """Finished (COMPLETE + PRUNED; `complete` of them full-budget), running (`claimed` of
    them holding a full-budget place in a halving study), and failed-since-`since` trials
    (surplus ones are not failures): what the workers' budget and the outcome are judged on."""
    from optuna.trial import TrialState

    c = {"done": 0, "complete": 0, "running": 0, "claimed": 0, "failed": 0}
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            c["done"] += 1
            c["complete"] += t.state == TrialState.COMPLETE
        elif t.state == TrialState.RUNNING:
            c["running"] += 1
            c["claimed"] += bool(t.user_attrs.get(FULL_CLAIM))
        elif t.state == TrialState.FAIL and not t.user_attrs.get("surplus"):
            started = t.datetime_start.timestamp() if t.datetime_start else 0.0
            c["failed"] += started >= since
    return c


def budget_met(c: dict[str, int], settings: StudySettings) -> bool:
    """Whether the workers should start no more trials, by `count_trials`' counts: finished
    and running trials reach `study.n_trials`; in a halving study, full-budget trials and
    running claimers of a full-budget place do, or all trials reach `study.fidelity.max_trials`."""
    if settings.fidelity.halving:
        cap = settings.max_trials is not None and c["done"] + c["running"] >= settings.max_trials
        full = settings.n_trials is not None and c["complete"] + c["claimed"] >= settings.n_trials
        return cap or full
    return settings.n_trials is not None and c["done"] + c["running"] >= settings.n_trials


def outcome_of(
    study: optuna.Study, settings: StudySettings, started: float, dead_workers: list[str]
) -> StudyOutcome:
    """How this invocation (started at `started`) ended; a non-zero code is logged."""
    from optuna.trial import TrialState

    c = count_trials(study, started)
    trials = study.get_trials(deepcopy=False)
    first_fail = next(
        (
            t.user_attrs["fail_reason"]
            for t in trials
            if t.state == TrialState.FAIL
            and not t.user_attrs.get("surplus")
            and t.datetime_start is not None
            and t.datetime_start.timestamp() >= started
            and t.user_attrs.get("fail_reason")
        ),
        None,
    )
    halving = settings.fidelity.halving
    if halving and settings.max_trials is not None and c["done"] >= settings.max_trials:
        if settings.n_trials is not None and c["complete"] < settings.n_trials:
            outcome = StudyOutcome(
                BUDGET_NOT_MET,
                f"budget not met: {c['complete']} of study.n_trials={settings.n_trials} "
                f"full-budget trials after study.fidelity.max_trials={settings.max_trials} "
                "trials; raise it (or study.n_trials) and rerun to go on",
            )
            log.error("study %s: %s", settings.name, outcome.reason)
            return outcome
    outcome = study_outcome(
        n_trials=settings.n_trials,
        n_done=c["complete"] if halving else c["done"],
        n_complete=c["complete"],
        n_failed_now=c["failed"],
        max_failures=settings.max_failures,
        deadline_passed=settings.timeout_s is not None
        and time.time() >= started + settings.timeout_s,
        dead_workers=dead_workers,
        first_fail_reason=first_fail,
        # this job's workers have stopped: others' trials (halving: those going full-budget)
        n_running_elsewhere=c["claimed"] if halving else c["running"],
    )
    if outcome.code:
        log.error("study %s: %s", settings.name, outcome.reason)
    return outcome


class OptunaFailureFilter(logging.Filter):
    """Optuna's failed-trial warning without the traceback, and without its second line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("optuna"):
            return True
        message = record.getMessage()
        if _FAILED_WITH_VALUE.match(message):
            return False
        m = _FAILED_WITH_PARAMS.match(message)
        if m:
            record.msg, record.args = f"trial {m['n']} failed: {m['err']}", None
            record.exc_info, record.exc_text = None, None
        return True


def quiet_optuna_failures() -> None:
    """Attach OptunaFailureFilter to the handlers Optuna logs through (its own and the root's)."""
    import optuna

    optuna.logging.get_logger("optuna")  # makes sure Optuna's own handler exists
    for logger in (logging.getLogger("optuna"), logging.getLogger()):
        for handler in logger.handlers:
            if not any(isinstance(f, OptunaFailureFilter) for f in handler.filters):
                handler.addFilter(OptunaFailureFilter())
