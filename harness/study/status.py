"""A study's progress: one summary line per finished trial and a running status line
(trials done / total, failures, front size, ETA). An Optuna callback of each worker."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from harness.runtime.progress import Ticker

if TYPE_CHECKING:
    import optuna

__all__ = ["StudyProgress", "trial_line"]

log = logging.getLogger(__name__)


def trial_line(trial: optuna.trial.FrozenTrial) -> str:
    """`trial 3 COMPLETE in 41 s: target=0.15 → MAC ratio 0.148, val 95.10, test 94.30`."""
    took = ""
    if trial.datetime_start and trial.datetime_complete:
        took = f" in {(trial.datetime_complete - trial.datetime_start).total_seconds():.0f} s"
    head = f"trial {trial.number} {trial.state.name}{took}"
    a = trial.user_attrs
    target = trial.params.get("target")
    where = "" if target is None else f"target={target:.3g} → "
    if a.get("macs_ratio") is not None and a.get("val_metric") is not None:
        test = a.get("test_metric")
        return (f"{head}: {where}MAC ratio {a['macs_ratio']:.3f}, val {a['val_metric']:.2f}"
                + ("" if test is None else f", test {test:.2f}")
                + (f", cost {a['cost_wall_s']:.0f} s" if a.get("cost_wall_s") else ""))  # fmt: skip
    reason = a.get("pruned_reason") or a.get("fail_reason") or "no result recorded"
    return f"{head}: {where}{reason}"


class StudyProgress:
    """Call after each trial (Optuna `callbacks=`); `close()` at the end."""

    def __init__(self, name: str, total: int | None, full_only: bool = False) -> None:
        self.name, self.total = name, total
        self.full_only = full_only  # a halving study's budget counts full-budget trials
        self.started = time.time()
        self.finished_here = 0
        self.ticker = Ticker(total, name)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        from optuna.trial import TrialState

        log.info("%s: %s", self.name, trial_line(trial))
        trials = study.get_trials(deepcopy=False)
        counted = (TrialState.COMPLETE,) if self.full_only else (TrialState.COMPLETE,
                                                                 TrialState.PRUNED)  # fmt: skip
        done = sum(t.state in counted for t in trials)
        failed = sum(t.state == TrialState.FAIL and not t.user_attrs.get("surplus") for t in trials)
        if trial.state in counted:
            self.finished_here += 1
        front = len(study.best_trials) if any(t.state == TrialState.COMPLETE for t in trials) else 0
        status = f"failed {failed}, front {front}"
        if self.total is not None and self.finished_here:
            per = (time.time() - self.started) / self.finished_here
            status += f", ETA {_duration(per * max(0, self.total - done))}"
        self.ticker.update(done, status)

    def close(self) -> None:
        self.ticker.close()


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"
