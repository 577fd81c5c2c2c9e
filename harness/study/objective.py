"""One trial: claim a place in the budget, sample, write the values into the config, run the
pipeline, and hand Optuna the objectives; constraints and measurements go on the trial (user
attributes) and on its MLflow run. An interrupt anywhere in a trial marks it `interrupted`, so
recovery retries its parameters (harness/study/recovery.py)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from omegaconf import DictConfig, OmegaConf

from harness.errors import ConfigError, ImpossibleTargetError, PruneBenchError, RunStopped
from harness.run.accounting import COST_PREFIX
from harness.runtime.processes import process_token
from harness.study.halving import RungHook, full_budget_holders, snapshot_path
from harness.study.mlflow_link import kill_finished_run
from harness.study.settings import CONSTRAINTS, OBJECTIVES, StudySettings
from harness.study.space import SearchSpace
from harness.tracking import mask_secrets, mlflow_client

if TYPE_CHECKING:
    import optuna

__all__ = ["EARLY_TOL", "SurplusTrial", "TrialObjective"]

#: tolerance of the early infeasibility checks (the cut undershoots the target by ≤ one unit)
EARLY_TOL = 0.02
#: record keys kept on the trial as user attributes (besides the cost_* keys)
RECORD_ATTRS = ("test_metric", "val_metric", "macs", "macs_ratio", "params", "params_ratio",
                "latency_ms", "val_metric_pruned", "artifacts", "test_metric_noop",
                "val_metric_noop", "budget_mode", "budget_epochs", "search_source_trial",
                "latency_ratio", "latency_ratio_batch", "latency_target_met")  # fmt: skip


class SurplusTrial(PruneBenchError):
    """Concurrent workers started one trial more than the budget; recorded, not counted."""


class _TrialObserver:
    """Records the child run's id on the trial and stops clearly infeasible trials early; in a
    successive-halving study, gives fine-tuning its rung hook (harness/study/halving.py)."""

    def __init__(
        self,
        trial: optuna.Trial,
        constraints: Mapping[str, float],
        rung: Callable[[Mapping[str, float]], RungHook] | None = None,
    ) -> None:
        self.trial, self.constraints, self.make_rung = trial, constraints, rung
        self.metrics: Mapping[str, float] = {}
        self.rung: RungHook | None = None

    def finetune_hooks(self) -> list[RungHook]:
        if self.make_rung is None:
            return []
        self.rung = self.make_rung(self.metrics)
        return [self.rung]

    def started(self, run_id: str | None) -> None:
        if run_id:
            self.trial.set_user_attr("mlflow_run_id", run_id)

    def pruned(self, metrics: Mapping[str, float]) -> None:
        self.metrics = dict(metrics)
        for name in ("macs_ratio_max", "params_ratio_max"):
            bound = self.constraints.get(name)
            key = CONSTRAINTS[name][0]
            if bound is not None and metrics[key] > bound + EARLY_TOL:
                raise RunStopped(
                    f"infeasible before fine-tuning: {key}={metrics[key]:.3f} > {name}={bound:g}"
                )


class TrialObjective:
    """Optuna objective: sample, write into the config, run the pipeline, return objectives."""

    def __init__(
        self,
        cfg: DictConfig,
        settings: StudySettings,
        parent_run_id: str | None,
        tracking_uri: str | None = None,
    ) -> None:
        self.cfg, self.settings, self.parent_run_id = cfg, settings, parent_run_id
        self.tracking_uri = tracking_uri
        self.space = SearchSpace.from_config(cfg)

    def __call__(self, trial: optuna.Trial) -> list[float]:
        try:
            return self._run_trial(trial)
        except KeyboardInterrupt:  # anywhere in the trial, its bookkeeping after the run included
            trial.set_user_attr("interrupted", True)
            trial.set_user_attr("fail_reason", "interrupted (Ctrl-C)")
            run_id = trial.user_attrs.get("mlflow_run_id")
            if self.tracking_uri and run_id:  # its run may have ended FINISHED just before
                kill_finished_run(self.tracking_uri, run_id, "interrupted before its trial was "
                                  "recorded; the trial is retried on resume")  # fmt: skip
            raise

    def _run_trial(self, trial: optuna.Trial) -> list[float]:
        self._claim(trial)
        trial.set_user_attr("owner", process_token())
        cfg = self._configure(trial)
        bound = self.settings.constraints.get("macs_ratio_max")
        if bound is not None and float(cfg.target) > bound + EARLY_TOL:
            self._prune(trial, f"target={cfg.target:.3f} cannot meet macs_ratio_max={bound:g}")
        observer = _TrialObserver(trial, self.settings.constraints, self._rung_factory(trial))
        record = self._run_pipeline(trial, cfg, observer)
        objectives = self._objectives(trial, record)
        constraint_values = self._record_constraints(trial, record)
        for key in (*RECORD_ATTRS, *(k for k in record if k.startswith(COST_PREFIX))):
            if record.get(key) is not None:
                trial.set_user_attr(key, record[key])
        if observer.rung is not None:
            observer.rung.finish(record)
        if record.get("run_id") and constraint_values:
            _log_constraints(record["tracking_uri"], record["run_id"], constraint_values)
        return objectives

    def _configure(self, trial: optuna.Trial) -> DictConfig:
        """The study's config with the trial's sampled values and its tracking fields."""
        values = self.space.suggest(trial, self.cfg)
        cfg = copy.deepcopy(self.cfg)
        for path, value in values.items():
            OmegaConf.update(cfg, path, value, merge=False)
        cfg.tracking.parent_run_id = self.parent_run_id
        cfg.tracking.run_name = f"{self.settings.name}-trial{trial.number}"
        cfg.tracking.tags = {
            "optuna_study": self.settings.name,
            "optuna_trial": str(trial.number),
            "pareto": "false",
        }
        return cfg

    def _rung_factory(
        self, trial: optuna.Trial
    ) -> Callable[[Mapping[str, float]], RungHook] | None:
        """The rung hook's maker in a successive-halving study (it needs the pruned ratios)."""
        fidelity = self.settings.fidelity
        if not fidelity.halving:
            return None
        path = snapshot_path(self.cfg.outputs, self.settings.name, trial.number)

        def make(fixed: Mapping[str, float]) -> RungHook:
            return RungHook(trial, fidelity=fidelity, objectives=self.settings.objectives,
                            fixed=fixed, path=path, tracking_uri=self.tracking_uri,
                            full_trials=self.settings.n_trials)  # fmt: skip

        return make

    def _run_pipeline(
        self, trial: optuna.Trial, cfg: DictConfig, observer: _TrialObserver
    ) -> dict[str, Any]:
        """One pipeline run; a stopped run or an impossible target prunes the trial, any other
        error fails it with its (masked) reason."""
        from harness.run.pipeline import run

        try:
            return run(cfg, observer=observer)
        except (RunStopped, ImpossibleTargetError) as e:
            self._prune(trial, str(e))
        except Exception as e:
            trial.set_user_attr("fail_reason", mask_secrets(f"{type(e).__name__}: {e}")[:2000])
            raise

    def _objectives(self, trial: optuna.Trial, record: Mapping[str, Any]) -> list[float]:
        """The objective values, in `study.objectives` order; a missing one fails the trial."""
        objectives = []
        for name in self.settings.objectives:
            value = record.get(OBJECTIVES[name][0])
            if value is None or not math.isfinite(float(value)):
                reason = f"objective {name} is {value} (enable what measures it, e.g. latency)"
                trial.set_user_attr("fail_reason", reason)
                raise ConfigError(reason)
            objectives.append(float(value))
        return objectives

    def _record_constraints(
        self, trial: optuna.Trial, record: Mapping[str, Any]
    ) -> dict[str, float]:
        """Each constraint's violation (≤ 0: feasible) on the trial; returns them by name."""
        values = {}
        for name, bound in self.settings.constraints.items():
            key, sign = CONSTRAINTS[name]
            values[name] = sign * (float(record[key]) - bound)
            trial.set_constraint(name, values[name])
            trial.set_user_attr(f"constraint.{name}", values[name])
        return values

    def _claim(self, trial: optuna.Trial) -> None:
        """Refuse a trial that concurrent workers started beyond the budget (budget semantics:
        harness/study/runner.py; in a halving study the cap is `study.fidelity.max_trials`,
        and a trial is refused once the full-budget places are all held)."""
        from optuna.trial import TrialState

        s = self.settings
        limit = s.max_trials if s.fidelity.halving else s.n_trials
        trials = trial.study.get_trials(deepcopy=False)
        counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        ahead = sum(
            1
            for t in trials
            if t.state in counted and t.number < trial.number and not t.user_attrs.get("surplus")
        )
        full = s.fidelity.halving and s.n_trials is not None
        if (limit is not None and ahead >= limit) or (
            full and full_budget_holders(trials, but=trial.number) >= s.n_trials
        ):
            trial.set_user_attr("surplus", True)
            trial.set_user_attr("fail_reason", "surplus: the budget was met by other workers")
            raise SurplusTrial(f"trial {trial.number} is beyond study.n_trials")

    @staticmethod
    def _prune(trial: optuna.Trial, reason: str) -> NoReturn:
        import optuna

        trial.set_user_attr("pruned_reason", reason)
        raise optuna.TrialPruned(reason)


def _log_constraints(uri: str, run_id: str, values: Mapping[str, float]) -> None:
    client = mlflow_client(uri)
    for name, value in values.items():
        client.log_metric(run_id, f"constraint.{name}", float(value))
