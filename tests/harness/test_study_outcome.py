"""A study invocation's exit code from its counts (harness/study/outcome.py): the cases a
launcher job of a multi-job study meets when it stops before its siblings."""

from __future__ import annotations

from harness.exit_codes import BUDGET_NOT_MET, OK
from harness.study.outcome import study_outcome

BASE = dict(n_trials=4, n_complete=3, n_failed_now=0, max_failures=3, deadline_passed=False)


def test_a_job_whose_remaining_budget_runs_in_another_job_met_its_share():
    # job 0 of two: 3 trials finished, the 4th is still running in job 1
    assert study_outcome(**BASE, n_done=3, n_running_elsewhere=1).code == OK


def test_workers_that_stopped_early_with_nothing_in_flight_miss_the_budget():
    out = study_outcome(**BASE, n_done=3)
    assert out.code == BUDGET_NOT_MET
    assert (
        out.reason
        == "budget not met: 3 of study.n_trials=4 trials finished; the workers stopped early"
    )


def test_trials_in_flight_do_not_excuse_too_many_failures():
    out = study_outcome(**{**BASE, "n_failed_now": 3}, n_done=3, n_running_elsewhere=1)
    assert out.code == BUDGET_NOT_MET and "study.max_failures=3 trials failed" in out.reason
