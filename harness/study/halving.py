"""Asynchronous successive halving for (multi-objective) studies: MO-ASHA over fine-tuning epochs.

Optuna's `Trial.report` / `should_prune` refuse multi-objective studies, so the rungs live here,
on Optuna's storage (trial user attributes), and so work on every storage, with many workers and
launcher jobs sharing one study:

- rungs are fine-tuning epochs r, r·η, r·η², … below the full budget R (`finetune.epochs`);
  the schedule always spans R, so a trial that goes on is the full-budget run;
- at each rung a trial records its objective values there (`rung.<epoch>`: the best validation
  metric so far and the ratios fixed by pruning, as a minimisation vector; latency is measured
  only at the end and is left out of the comparison), then is ranked among every trial that has
  reached that rung so far: non-dominated sorting, ties inside a front broken by crowding
  distance (diversity, as NSGA-II and MO-ASHA, Schmucker et al. 2021), then by distance to
  the ideal point (objectives scaled over the rung), then by trial number.
  It goes on when it is in the top max(1, ⌊n/η⌋) of the n recorded there. Nobody waits for a
  rung to fill (the stopping form of ASHA, Li et al. 2020);
- a trial that is not promoted stops: Optuna state PRUNED with `stopped_at_epoch` and its rung
  values, never COMPLETE, so it never enters a front (`compare` ranks COMPLETE trials only);
- at each rung the fit is snapshotted (harness/train/resume.py: weights, optimizer, schedule
  position, best-validation state, batch stream, RNGs) under `outputs/halving/`;
- a stopped trial that the rung, fuller later, ranks in its top 1/η is promoted late (ASHA's
  promotion): whichever worker decides at that rung enqueues a continuation trial with its
  parameters (`continues`), which resumes from the stopped trial's snapshot. The stopped trial
  keeps standing for the configuration at the rungs it reached (each rung counts it once), and
  the continuation's full-budget result is the one an uninterrupted run gives;
- a trial whose worker died is retried (harness/study/recovery.py) from its predecessor's last
  rung snapshot, inheriting its rung records and decisions, so no rung counts it twice (FAIL
  trials' records are not counted);
- cost: `cost_train_images` on every trial is what that trial trained (pruning/search + the
  fine-tuning epochs it ran itself), kept up to date at each rung; `study_cost` sums it over
  the study, stopped and failed trials included.

In this mode `study.n_trials` counts full-budget trials (COMPLETE): the study runs new
configurations until that many have finished the whole fine-tuning budget. A trial promoted at
the last rung first claims one of those places (`full_budget_claim`, written, then the study
read back: a trial that sees the places held by COMPLETE trials and by other running claimers
stops there, so two workers deciding at once never overshoot; both may stop, and the study then
runs one more configuration). A retried or continued trial resuming at the last rung claims
again. `study.fidelity.max_trials` caps every trial the study runs (new configurations,
continuations; failures not counted) so that a study whose trials keep stopping ends: by default
2·η^k·n_trials, k the number of rungs (ASHA keeps about one configuration in η^k to the full
budget). A stopped trial's last snapshot stays in `outputs/halving/` (it may be promoted
later); delete the folder once the study is done.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from harness.errors import ConfigError, RunStopped
from harness.tracking import log_metric_batch, mlflow_client
from harness.train.hooks import Hook, LoopState
from harness.train.resume import (
    SnapshotMismatch,
    load_snapshot,
    restore,
    save_snapshot,
    snapshot,
)

if TYPE_CHECKING:
    import optuna

__all__ = [
    "FIDELITY_MODES",
    "Fidelity",
    "RungHook",
    "FULL_CLAIM",
    "crowding_distances",
    "full_budget_holders",
    "ideal_distances",
    "mo_order",
    "nondominated_fronts",
    "promoted",
    "rung_points",
    "study_cost",
]

log = logging.getLogger(__name__)

FIDELITY_MODES = ("full", "halving")
#: objectives whose value is known at a rung → where it comes from ("val": best val so far)
_RUNG_SOURCES = {"quality": "val", "macs_ratio": "macs_ratio", "params_ratio": "params_ratio"}
_SIGN = {"quality": -1.0, "macs_ratio": 1.0, "params_ratio": 1.0}  # → minimisation


@dataclass(frozen=True)
class Fidelity:
    """`study.fidelity`: full-budget trials (the default) or successive halving."""

    mode: str = "full"
    min_epochs: int = 1
    eta: int = 3
    max_trials: int | None = None  # every trial the study may run; None: derived (max_trials_for)

    @classmethod
    def from_cfg(cls, study: DictConfig) -> Fidelity:
        f = study.get("fidelity") or {}
        mode = str(f.get("mode", "full"))
        if mode not in FIDELITY_MODES:
            raise ConfigError(
                f"unknown study.fidelity.mode '{mode}'; known: {', '.join(FIDELITY_MODES)}"
            )
        cap = f.get("max_trials")
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ConfigError(f"study.fidelity.max_trials={cap!r} must be a whole number ≥ 1")
        fid = cls(mode=mode, min_epochs=int(f.get("min_epochs", 1)), eta=int(f.get("eta", 3)),
                  max_trials=cap)  # fmt: skip
        if fid.min_epochs < 1 or fid.eta < 2:
            raise ConfigError(
                f"study.fidelity: min_epochs={fid.min_epochs} must be ≥ 1 and eta={fid.eta} ≥ 2"
            )
        return fid

    @property
    def halving(self) -> bool:
        return self.mode == "halving"

    def rungs(self, budget: int) -> list[int]:
        """The rung epochs below the full budget: r, r·η, r·η², … < `budget`."""
        out, e = [], self.min_epochs
        while e < budget:
            out.append(e)
            e *= self.eta
        return out

    def max_trials_for(self, n_trials: int, budget: int) -> int:
        """The cap on every trial a halving study of `n_trials` full-budget trials runs:
        `max_trials`, or 2·η^k·n_trials (k rungs below `budget`), twice what ASHA needs."""
        if self.max_trials is not None:
            return self.max_trials
        return 2 * self.eta ** len(self.rungs(budget)) * n_trials

    def check(self, cfg: DictConfig, objectives: Sequence[str]) -> None:
        """Halving needs a fine-tuning budget above the first rung and an objective the rungs
        can see."""
        if not self.halving:
            return
        budget = int(cfg.finetune.epochs)
        if not self.rungs(budget):
            raise ConfigError(
                f"study.fidelity.mode=halving needs finetune.epochs={budget} > "
                f"study.fidelity.min_epochs={self.min_epochs}"
            )
        if not any(o in _RUNG_SOURCES for o in objectives):
            raise ConfigError(
                f"study.fidelity.mode=halving ranks rungs by {', '.join(_RUNG_SOURCES)}; "
                f"study.objectives={list(objectives)} has none of them"
            )


# -- the promotion rule -------------------------------------------------------------------------


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True)
    )


def nondominated_fronts(points: Sequence[Sequence[float]]) -> list[list[int]]:
    """Indices of `points` (minimised) by non-dominated front, the first front first."""
    remaining = list(range(len(points)))
    fronts = []
    while remaining:
        front = [
            i for i in remaining if not any(_dominates(points[j], points[i]) for j in remaining)
        ]
        fronts.append(front)
        remaining = [i for i in remaining if i not in front]
    return fronts


def crowding_distances(points: Sequence[Sequence[float]]) -> list[float]:
    """NSGA-II crowding distance of each point within `points` (one front); the extremes of
    every objective get infinity."""
    n = len(points)
    dist = [0.0] * n
    if n <= 2:
        return [math.inf] * n
    for m in range(len(points[0])):
        order = sorted(range(n), key=lambda i: points[i][m])
        lo, hi = points[order[0]][m], points[order[-1]][m]
        dist[order[0]] = dist[order[-1]] = math.inf
        if hi == lo:
            continue
        for k in range(1, n - 1):
            dist[order[k]] += (points[order[k + 1]][m] - points[order[k - 1]][m]) / (hi - lo)
    return dist


def ideal_distances(points: Sequence[Sequence[float]]) -> list[float]:
    """Euclidean distance of each point to the ideal point, every objective scaled to [0, 1]
    over `points`: what breaks ties between equally spread points (a front's extremes)."""
    if not points:
        return []
    lo = [min(c) for c in zip(*points, strict=True)]
    hi = [max(c) for c in zip(*points, strict=True)]
    span = [(h - low) or 1.0 for low, h in zip(lo, hi, strict=True)]
    return [
        math.sqrt(sum(((x - low) / w) ** 2 for x, low, w in zip(p, lo, span, strict=True)))
        for p in points
    ]


def mo_order(points: Sequence[Sequence[float]], keys: Sequence[int] | None = None) -> list[int]:
    """Indices of `points` best first: by non-dominated front, then by crowding distance
    (larger first: the spread of the front is kept), then by closeness to the ideal point
    (so the extremes, all at infinite distance, are not ranked by age), then by `keys` (trial
    numbers: the same answer on every worker)."""
    keys = list(range(len(points))) if keys is None else list(keys)
    ideal = ideal_distances(points)
    order = []
    for front in nondominated_fronts(points):
        crowd = crowding_distances([points[i] for i in front])
        ranked = sorted(
            range(len(front)), key=lambda k: (-crowd[k], ideal[front[k]], keys[front[k]])
        )
        order.extend(front[k] for k in ranked)
    return order


def promoted(me: int, entries: Mapping[int, Sequence[float]], eta: int) -> bool:
    """Whether trial `me` goes on from a rung where `entries` (trial number → minimisation
    vector, `me` included) have been recorded so far: is it in the top max(1, ⌊n/η⌋)?"""
    if me not in entries:
        raise KeyError(f"trial {me} has no value at this rung")
    numbers = sorted(entries)
    order = mo_order([entries[n] for n in numbers], numbers)
    keep = max(1, len(numbers) // eta)
    return me in {numbers[i] for i in order[:keep]}


# -- bookkeeping on the Optuna storage ----------------------------------------------------------


#: a trial promoted past the last rung holds one of the study's full-budget places
FULL_CLAIM = "full_budget_claim"


def full_budget_holders(trials: Sequence[optuna.trial.FrozenTrial], but: int | None = None) -> int:
    """Full-budget places held: COMPLETE trials and RUNNING ones that claimed a place (all but
    trial number `but`)."""
    from optuna.trial import TrialState

    return sum(
        1
        for t in trials
        if t.number != but
        and (
            t.state == TrialState.COMPLETE
            or (t.state == TrialState.RUNNING and t.user_attrs.get(FULL_CLAIM))
        )
    )


def rung_key(epoch: int) -> str:
    return f"rung.{epoch}"


def promoted_key(epoch: int) -> str:
    return f"rung_promoted.{epoch}"


def rung_points(trials: Sequence[optuna.trial.FrozenTrial], epoch: int) -> dict[int, list[float]]:
    """Trial number → rung value of every live or finished trial that reached `epoch` (FAIL and
    WAITING trials do not count: a retried trial's records live on its retry)."""
    from optuna.trial import TrialState

    counted = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
    return {
        t.number: list(t.user_attrs[rung_key(epoch)])
        for t in trials
        if t.state in counted and rung_key(epoch) in t.user_attrs
    }


def study_cost(study: optuna.Study) -> dict[str, float]:
    """What a study spent: training images over every trial (stopped and failed included), and
    how many trials reached the full budget."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    return {
        "study_train_images": float(
            sum(float(t.user_attrs.get("cost_train_images") or 0.0) for t in trials)
        ),
        "study_full_trials": float(sum(t.state == TrialState.COMPLETE for t in trials)),
        "study_stopped_trials": float(
            sum(t.user_attrs.get("stopped_at_epoch") is not None for t in trials)
        ),
    }


def snapshot_path(outputs: str | Path, study_name: str, number: int) -> Path:
    """Where trial `number` keeps its last rung snapshot (shared by the study's workers)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", study_name)
    return Path(outputs) / "halving" / safe / f"trial{number}.pt"


class RungHook(Hook):
    """The fine-tuning hook of one halving trial: resume from its predecessor's rung, record
    each rung, snapshot it and stop the trial when it is not promoted."""

    def __init__(
        self,
        trial: optuna.Trial,
        *,
        fidelity: Fidelity,
        objectives: Sequence[str],
        fixed: Mapping[str, float],
        path: Path,
        tracking_uri: str | None = None,
        full_trials: int | None = None,
    ) -> None:
        self.trial, self.fidelity, self.path = trial, fidelity, path
        self.full_trials = full_trials  # `study.n_trials`: full-budget places (None: no limit)
        self.objectives = [o for o in objectives if o in _RUNG_SOURCES]
        self.fixed, self.tracking_uri = dict(fixed), tracking_uri
        self.prune_images = float(fixed.get("cost_prune_train_images", 0.0))
        self.resumed_epochs = 0
        self.train_images = 0
        self.snapshots: list[Path] = []
        self.current: Path | None = None  # the snapshot of the fit's last rung
        # a continuation that could not load its snapshot trains those rungs again, unrecorded
        # (the stopped trial stands for the configuration there)
        self.replay_until = 0

    # --- the hook -----------------------------------------------------------------------------

    def before_fit(self, s: LoopState) -> None:
        self.train_images = s.batches.num_samples if s.batches is not None else 0
        self.rungs = set(self.fidelity.rungs(s.epochs))
        self._resume(s)
        if self.resumed_epochs and self.resumed_epochs == max(self.rungs):
            self._claim_full(self.resumed_epochs)  # goes on from the last rung

    def after_epoch(self, s: LoopState) -> None:
        if s.epoch in self.rungs and s.epoch > self.replay_until:
            self._at_rung(s)
        if s.epoch == max(self.rungs):  # promoted there (or replaying it): the full budget next
            self._claim_full(s.epoch)

    # --- what the trial records ---------------------------------------------------------------

    def spent(self, epoch: int) -> float:
        """Training images this trial itself spent by the end of fine-tuning epoch `epoch`."""
        return self.prune_images + (epoch - self.resumed_epochs) * self.train_images

    def finish(self, record: Mapping[str, Any]) -> None:
        """The trial ran its full budget: what it spent itself (epochs a predecessor trained
        before a kill are on the predecessor), and its snapshots are no longer needed."""
        cost = record.get("cost_train_images")
        if cost is not None:
            own = float(cost) - self.resumed_epochs * self.train_images
            self.trial.set_user_attr("cost_train_images", own)
        self._drop_snapshots()

    def _values(self, s: LoopState) -> list[float]:
        """The trial's minimisation vector at this rung: best validation metric so far (the
        one `fit` would restore), and the ratios pruning fixed."""
        val = s.best_val
        if val is None:  # no selection in this fit: the last epoch's validation metric
            val = next((v for k, v in s.metrics.items() if k.startswith("val_")), math.nan)
        source = {"val": float(val), **{k: float(v) for k, v in self.fixed.items()}}
        return [_SIGN[o] * source[_RUNG_SOURCES[o]] for o in self.objectives]

    def _at_rung(self, s: LoopState) -> None:
        epoch, trial = s.epoch, self.trial
        save_snapshot(self.path, snapshot(s))
        if self.path not in self.snapshots:
            self.snapshots.append(self.path)
        self.current = self.path
        values = self._values(s)
        trial.set_user_attr("rung_snapshot", {"path": str(self.path), "epoch": epoch})
        trial.set_user_attr(rung_key(epoch), values)
        trial.set_user_attr("cost_train_images", self.spent(epoch))
        self._decide(epoch, values)

    def _decide(self, epoch: int, values: Sequence[float]) -> None:
        """Promote or stop at `epoch` (the decision is recorded, so a retry keeps it)."""
        trial = self.trial
        entries = rung_points(trial.study.get_trials(deepcopy=False), epoch)
        entries[trial.number] = list(values)  # our own record, whatever the read saw
        go_on = promoted(trial.number, entries, self.fidelity.eta)
        trial.set_user_attr(promoted_key(epoch), go_on)
        self._log_mlflow(epoch, values, go_on)
        log.info(
            "trial %d at rung epoch %d: %s (%d trial(s) recorded there)",
            trial.number,
            epoch,
            "promoted" if go_on else "stopped",
            len(entries),
        )
        self._promote_late(epoch, entries)
        if not go_on:
            self._stop(epoch, len(entries))

    def _promote_late(self, epoch: int, entries: Mapping[int, Sequence[float]]) -> None:
        """Trials stopped at this rung earlier that the fuller rung now ranks in its top 1/η
        (ASHA's promotion): each gets a continuation trial with its parameters, which Optuna
        runs next and which resumes from the stopped trial's rung snapshot."""
        import optuna
        from optuna.trial import TrialState

        study = self.trial.study
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        continued = {t.user_attrs.get("continues") for t in trials.values()}
        numbers = sorted(entries)
        order = mo_order([entries[n] for n in numbers], numbers)
        for i in order[: max(1, len(numbers) // self.fidelity.eta)]:
            t = trials.get(numbers[i])
            if (
                t is None
                or t.state != TrialState.PRUNED
                or t.user_attrs.get("stopped_at_epoch") != epoch
                or t.number in continued
            ):
                continue
            where = t.user_attrs.get("rung_snapshot") or {}
            if where.get("epoch") != epoch or not Path(where["path"]).is_file():
                continue
            study.add_trial(
                optuna.create_trial(
                    state=TrialState.WAITING,
                    params=t.params,
                    distributions=t.distributions,
                    user_attrs={"continues": t.number},
                )
            )
            log.info("trial %d, stopped at rung epoch %d, is promoted now; it continues from "
                     "its snapshot", t.number, epoch)  # fmt: skip

    def _claim_full(self, epoch: int) -> None:
        """Take one of the study's `n_trials` full-budget places before training past the last
        rung, or stop here when other trials hold them all. Written before the read, so of two
        trials claiming at once at least one sees the other: never more places than
        `n_trials` (both may stop; the study then runs another configuration)."""
        if self.full_trials is None:
            return
        trial = self.trial
        trial.set_user_attr(FULL_CLAIM, True)
        held = full_budget_holders(trial.study.get_trials(deepcopy=False), but=trial.number)
        if held < self.full_trials:
            return
        trial.set_user_attr(FULL_CLAIM, False)
        self._stop(epoch, reason=f"the study's {self.full_trials} full-budget places are held "
                   f"by {held} other trial(s)")  # fmt: skip

    def _stop(self, epoch: int, n: int = 0, reason: str | None = None) -> None:
        self.trial.set_user_attr("stopped_at_epoch", epoch)
        self.trial.set_user_attr("cost_train_images", self.spent(epoch))
        self._drop_snapshots(keep=self.current)  # a later promotion continues from it
        keep = max(1, n // self.fidelity.eta)
        why = reason or f"not in the top {keep} of {n} by non-dominated rank"
        raise RunStopped(f"stopped at rung epoch {epoch}: {why}")

    def _resume(self, s: LoopState) -> None:
        """Continue from a predecessor's last rung snapshot: a retried trial (its worker died)
        with its predecessor's rung records and decisions, or a late-promoted stopped trial's
        continuation (its rung records stay on the stopped trial: each rung counts it once).
        A missing or unfitting snapshot means a fresh start."""
        from optuna.trial import TrialState

        attrs = self.trial.user_attrs
        before = attrs.get("retry_of", attrs.get("continues"))
        if before is None:
            return
        late = "retry_of" not in attrs
        trials = self.trial.study.get_trials(deepcopy=False)
        if late and any(t.user_attrs.get("continues") == before and t.number < self.trial.number
                        and t.state != TrialState.FAIL for t in trials):  # fmt: skip
            raise RunStopped(f"trial {before} is already continued by another trial")
        prev = next((t for t in trials if t.number == before), None)
        where = (prev.user_attrs.get("rung_snapshot") if prev else None) or {}
        try:
            if not where or not Path(where["path"]).is_file():
                raise SnapshotMismatch(f"no snapshot at {where.get('path')}")
            restore(s, load_snapshot(where["path"]))
        except SnapshotMismatch as e:
            log.warning("trial %d: starting afresh, not from trial %d's rung: %s",
                        self.trial.number, before, e)  # fmt: skip
            if late and prev is not None:
                self.replay_until = int(prev.user_attrs.get("stopped_at_epoch") or 0)
            return
        self.snapshots.append(Path(where["path"]))
        self.current = Path(where["path"])
        epoch = int(where["epoch"])
        self.resumed_epochs = epoch
        self.trial.set_user_attr("resumed_from", {"trial": before, "epoch": epoch})
        self.trial.set_user_attr("rung_snapshot", dict(where))
        self.trial.set_user_attr("cost_train_images", self.spent(epoch))
        if late:
            self.trial.set_user_attr(promoted_key(epoch), True)
            log.info("trial %d continues stopped trial %d from fine-tuning epoch %d",
                     self.trial.number, before, epoch)  # fmt: skip
            return
        if prev.user_attrs.get("continues") is not None:  # the chain stays known
            self.trial.set_user_attr("continues", prev.user_attrs["continues"])
        for e in sorted(self.rungs):
            if e <= epoch and rung_key(e) in prev.user_attrs:
                self.trial.set_user_attr(rung_key(e), prev.user_attrs[rung_key(e)])
            if e <= epoch and promoted_key(e) in prev.user_attrs:
                self.trial.set_user_attr(promoted_key(e), prev.user_attrs[promoted_key(e)])
        log.info("trial %d resumes trial %d at fine-tuning epoch %d",
                 self.trial.number, before, epoch)  # fmt: skip
        if promoted_key(epoch) not in prev.user_attrs:  # died between snapshot and decision
            self._decide(epoch, self.trial.user_attrs[rung_key(epoch)])
        elif not prev.user_attrs[promoted_key(epoch)]:
            self._stop(epoch, len(rung_points(self.trial.study.get_trials(deepcopy=False),
                                              epoch)))  # fmt: skip

    def _drop_snapshots(self, keep: Path | None = None) -> None:
        """Delete the snapshots this trial made or resumed from, but `keep`."""
        for p in self.snapshots:
            if p != keep:
                p.unlink(missing_ok=True)
        self.snapshots = [keep] if keep is not None else []

    def _log_mlflow(self, epoch: int, values: Sequence[float], go_on: bool) -> None:
        """The rung as steps of the trial's MLflow child run."""
        run_id = self.trial.user_attrs.get("mlflow_run_id")
        if not (self.tracking_uri and run_id):
            return
        metrics = {f"rung_{n}": _SIGN[n] * v for n, v in zip(self.objectives, values, strict=True)}
        metrics["rung_promoted"] = float(go_on)
        log_metric_batch(mlflow_client(self.tracking_uri), run_id, metrics, step=epoch)
