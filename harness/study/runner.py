"""`prunebench study`: one multi-objective Optuna study per (task, data, model, method, seed).

Each trial is one ordinary pipeline run (harness/pipeline.py) with the trial's sampled values
written into the config, so a trial is exactly what `prunebench run` would do with those
overrides, and every method gets the same data, baseline, measurement and trial budget.

Budget semantics: `study.n_trials` counts finished trials (COMPLETE + PRUNED) over the study's
whole life, so re-running with a larger `n_trials` resumes up to it. Failed trials (exception,
NaN loss, out of memory) are recorded with their reason and do not use up the budget; a
trial whose worker died (SIGKILL, Ctrl-C) is failed and its parameters are retried.
"""

from __future__ import annotations

import copy
import logging
import math
import multiprocessing as mp
import os
import signal
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from harness.cost import COST_PREFIX
from harness.errors import ConfigError, ImpossibleTargetError, PruneBenchError, RunStopped
from harness.plugins import load_configured
from harness.preflight import preflight
from harness.processes import is_alive, process_token
from harness.secrets import install_log_filter, remember_secrets
from harness.signals import install_sigterm_handler
from harness.study.fingerprint import differing_keys, trial_settings
from harness.study.mlflow_link import ParentRun, ParetoTagger, log_front, mark_run
from harness.study.outcome import StudyOutcome, quiet_optuna_failures, study_outcome
from harness.study.placement import place_workers, visible_devices
from harness.study.progress import StudyProgress
from harness.study.space import SearchSpace
from harness.study.storage import StorageSpec, find_storage
from harness.tracking import artifact_location, default_tracking_uri, log_params, mask_secrets

if TYPE_CHECKING:
    import optuna

__all__ = ["OBJECTIVES", "StudySettings", "run_study", "study_name"]

log = logging.getLogger(__name__)

#: objective name → (record key, direction); "quality" is the task's metric on validation
OBJECTIVES: dict[str, tuple[str, str]] = {
    "quality": ("val_metric", "maximize"),
    "macs_ratio": ("macs_ratio", "minimize"),
    "params_ratio": ("params_ratio", "minimize"),
    "latency_ms": ("latency_ms", "minimize"),
}
#: constraint name → (record key, sign): feasible when sign · (value − bound) ≤ 0
CONSTRAINTS: dict[str, tuple[str, int]] = {
    "macs_ratio_max": ("macs_ratio", 1),
    "params_ratio_max": ("params_ratio", 1),
    "quality_min": ("val_metric", -1),
}
SAMPLERS = ("nsga2", "random", "tpe")
#: tolerance of the early infeasibility checks (the cut undershoots the target by ≤ one unit)
EARLY_TOL = 0.02
#: config keys that change between invocations of one study: tags on the parent, not params
VOLATILE = ("study.n_trials", "study.timeout_s", "study.workers", "study.job")
#: study user attribute holding fingerprint.trial_settings of its creation
SETTINGS_ATTR = "trial_settings"
#: study attribute set once the study, its first trials, baseline and parent run exist
READY_ATTR = "ready"


class SurplusTrial(PruneBenchError):
    """Concurrent workers started one trial more than the budget; recorded, not counted."""


@dataclass(frozen=True)
class StudySettings:
    """`cfg.study`, validated."""

    name: str
    n_trials: int | None
    timeout_s: float | None
    workers: int
    sampler: str
    seed: int | None
    objectives: tuple[str, ...]
    constraints: Mapping[str, float] = field(default_factory=dict)
    enqueue_defaults: bool = True
    enqueue: tuple[Mapping[str, Any], ...] = ()
    max_failures: int = 10
    max_retry: int = 2
    heartbeat_s: int = 30
    n_startup_trials: int = 5
    population_size: int = 8
    workers_per_device: int | None = None
    job: int | None = None

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> StudySettings:
        s = cfg.study
        objectives = tuple(s.objectives)
        for o in objectives:
            if o not in OBJECTIVES:
                raise ConfigError(
                    f"unknown study objective '{o}'; known: {', '.join(OBJECTIVES)} "
                    "(quality is the task's validation metric)"
                )
        if len(objectives) < 1 or len(set(objectives)) != len(objectives):
            raise ConfigError(f"study.objectives={list(objectives)} must be distinct and non-empty")
        constraints = {
            k: float(v) for k, v in (s.get("constraints") or {}).items() if v is not None
        }
        for k in constraints:
            if k not in CONSTRAINTS:
                raise ConfigError(
                    f"unknown study constraint '{k}'; known: {', '.join(CONSTRAINTS)}"
                )
        n_trials = None if s.get("n_trials") is None else int(s.n_trials)
        timeout = None if s.get("timeout_s") is None else float(s.timeout_s)
        if n_trials is None and timeout is None:
            raise ConfigError("a study needs a budget: set study.n_trials and/or study.timeout_s")
        if (n_trials is not None and n_trials < 1) or (timeout is not None and timeout <= 0):
            raise ConfigError(f"study.n_trials={n_trials} / timeout_s={timeout} must be positive")
        workers = int(s.get("workers") or 1)
        if workers < 1:
            raise ConfigError(f"study.workers={workers}; use 1 or more worker processes")
        enqueue = s.get("enqueue") or []
        if not all(isinstance(e, Mapping) for e in enqueue):
            raise ConfigError(
                f"study.enqueue={OmegaConf.to_container(enqueue)} must be a list of mappings "
                "like [{target: 0.15}, {target: 0.08, method.lam: 1.0e-4}]"
            )
        job = None if s.get("job") is None else int(s.job)
        if job is not None and job < 0:
            raise ConfigError(f"study.job={job}; launcher jobs are numbered 0, 1, 2, …")
        if s.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler '{s.sampler}'; known: {', '.join(SAMPLERS)}")
        return cls(
            name=study_name(cfg),
            n_trials=n_trials,
            timeout_s=timeout,
            workers=workers,
            sampler=str(s.sampler),
            seed=None if s.get("seed") is None else int(s.seed),
            objectives=objectives,
            constraints=constraints,
            enqueue_defaults=bool(s.get("enqueue_defaults", True)),
            enqueue=tuple(dict(e) for e in enqueue),
            max_failures=int(s.get("max_failures", 10)),
            max_retry=int(s.get("max_retry", 2)),
            heartbeat_s=int(s.get("heartbeat_s", 30)),
            n_startup_trials=int(s.get("n_startup_trials", 5)),
            population_size=int(s.get("population_size", 8)),
            workers_per_device=None
            if s.get("workers_per_device") is None
            else int(s.workers_per_device),
            job=job,
        )

    def storage(self, cfg: DictConfig) -> StorageSpec:
        """Where this study lives (see `find_storage`)."""
        return find_storage(
            cfg.study.get("storage"),
            outputs=cfg.outputs,
            workers=self.workers,
            study_name=self.name,
        )

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o][1] for o in self.objectives]


def study_name(cfg: DictConfig) -> str:
    """`study.name`, or `<task>-<data>-<model>-<method>-s<seed>` (the data is part of it so two
    datasets of one task never share a study)."""
    if cfg.study.get("name"):
        return str(cfg.study.name)
    return f"{cfg.task.name}-{cfg.data.name}-{cfg.model.name}-{cfg.method.name}-s{cfg.seed}"


def identity(cfg: DictConfig, settings: StudySettings) -> dict[str, Any]:
    """What a study was created for; a resumed study must match it."""
    return {
        "objectives": list(settings.objectives),
        "task": str(cfg.task.name),
        "data": str(cfg.data.name),
        "model": str(cfg.model.name),
        "method": str(cfg.method.name),
        "seed": int(cfg.seed),
    }


# ---------------------------------------------------------------------------- failure recovery
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


def _on_stale(
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
        storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
        if not storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
            continue  # finished meanwhile
        log.warning("trial %d: %s; marked failed", t.number, reason)
        if uri and t.user_attrs.get("mlflow_run_id"):
            mark_run(uri, t.user_attrs["mlflow_run_id"], "KILLED", reason)
        recovered.append(t.number)
        retry_trial(study, storage.get_trial(t._trial_id), max_retry=settings.max_retry)
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if t.user_attrs.get("interrupted"):
            retry_trial(study, t, max_retry=settings.max_retry)
    return recovered


# ---------------------------------------------------------------------------- one trial
class _TrialObserver:
    """Records the child run's id on the trial and stops clearly infeasible trials early."""

    def __init__(self, trial: optuna.Trial, constraints: Mapping[str, float]) -> None:
        self.trial, self.constraints = trial, constraints

    def started(self, run_id: str | None) -> None:
        if run_id:
            self.trial.set_user_attr("mlflow_run_id", run_id)

    def pruned(self, metrics: Mapping[str, float]) -> None:
        for name in ("macs_ratio_max", "params_ratio_max"):
            bound = self.constraints.get(name)
            key = CONSTRAINTS[name][0]
            if bound is not None and metrics[key] > bound + EARLY_TOL:
                raise RunStopped(
                    f"infeasible before fine-tuning: {key}={metrics[key]:.3f} > {name}={bound:g}"
                )


class TrialObjective:
    """Optuna objective: sample, write into the config, run the pipeline, return objectives."""

    def __init__(self, cfg: DictConfig, settings: StudySettings, parent_run_id: str | None):
        self.cfg, self.settings, self.parent_run_id = cfg, settings, parent_run_id
        self.space = SearchSpace.from_config(cfg)

    def __call__(self, trial: optuna.Trial) -> list[float]:
        try:
            return self._run_trial(trial)
        except KeyboardInterrupt:  # anywhere in the trial, its bookkeeping after the run included
            trial.set_user_attr("interrupted", True)
            trial.set_user_attr("fail_reason", "interrupted (Ctrl-C)")
            raise

    def _run_trial(self, trial: optuna.Trial) -> list[float]:
        from harness.pipeline import run

        self._claim(trial)
        trial.set_user_attr("owner", process_token())
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
        bound = self.settings.constraints.get("macs_ratio_max")
        if bound is not None and float(cfg.target) > bound + EARLY_TOL:
            self._prune(trial, f"target={cfg.target:.3f} cannot meet macs_ratio_max={bound:g}")
        try:
            record = run(cfg, observer=_TrialObserver(trial, self.settings.constraints))
        except (RunStopped, ImpossibleTargetError) as e:
            self._prune(trial, str(e))
        except Exception as e:
            trial.set_user_attr("fail_reason", mask_secrets(f"{type(e).__name__}: {e}")[:2000])
            raise
        objectives = []
        for name in self.settings.objectives:
            value = record.get(OBJECTIVES[name][0])
            if value is None or not math.isfinite(float(value)):
                reason = f"objective {name} is {value} (enable what measures it, e.g. latency)"
                trial.set_user_attr("fail_reason", reason)
                raise ConfigError(reason)
            objectives.append(float(value))
        constraint_values = {}
        for name, bound in self.settings.constraints.items():
            key, sign = CONSTRAINTS[name]
            constraint_values[name] = sign * (float(record[key]) - bound)
            trial.set_constraint(name, constraint_values[name])
            trial.set_user_attr(f"constraint.{name}", constraint_values[name])
        for key in ("test_metric", "val_metric", "macs", "macs_ratio", "params", "params_ratio",
                    "latency_ms", "val_metric_pruned", "artifacts",
                    *(k for k in record if k.startswith(COST_PREFIX))):  # fmt: skip
            if record.get(key) is not None:
                trial.set_user_attr(key, record[key])
        if record.get("run_id") and constraint_values:
            _log_constraints(record["tracking_uri"], record["run_id"], constraint_values)
        return objectives

    def _claim(self, trial: optuna.Trial) -> None:
        """Refuse a trial that concurrent workers started beyond the budget (see module doc)."""
        from optuna.trial import TrialState

        if self.settings.n_trials is None:
            return
        counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        ahead = sum(
            1
            for t in trial.study.get_trials(deepcopy=False, states=counted)
            if t.number < trial.number and not t.user_attrs.get("surplus")
        )
        if ahead >= self.settings.n_trials:
            trial.set_user_attr("surplus", True)
            trial.set_user_attr("fail_reason", "surplus: the budget was met by other workers")
            raise SurplusTrial(f"trial {trial.number} is beyond study.n_trials")

    @staticmethod
    def _prune(trial: optuna.Trial, reason: str) -> None:
        import optuna

        trial.set_user_attr("pruned_reason", reason)
        raise optuna.TrialPruned(reason)


def _log_constraints(uri: str, run_id: str, values: Mapping[str, float]) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    for name, value in values.items():
        client.log_metric(run_id, f"constraint.{name}", float(value))


# ---------------------------------------------------------------------------- workers
@dataclass
class WorkerSpec:
    """Everything a worker process needs (picklable: spawned workers share no memory)."""

    cfg: dict[str, Any]
    storage: StorageSpec
    parent_run_id: str | None
    tracking_uri: str | None
    index: int
    started_at: float
    deadline: float | None
    threads: int | None = None
    log_level: str = "INFO"
    device: str | None = None  # CUDA_VISIBLE_DEVICES of this worker (harness/study/placement.py)


def make_sampler(settings: StudySettings, index: int) -> optuna.samplers.BaseSampler:
    """The configured sampler; each worker gets its own seed so workers do not propose twins."""
    import optuna

    seed = None if settings.seed is None else settings.seed + 10_007 * index
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if settings.sampler == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed,
                n_startup_trials=settings.n_startup_trials,
                multivariate=True,
                group=True,  # conditional (`when`) parameters
                constant_liar=True,  # workers avoid proposing what another is running
            )
        if settings.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(
                population_size=settings.population_size, seed=seed
            )
    return optuna.samplers.RandomSampler(seed=seed)


def _counts(study: optuna.Study, since: float) -> dict[str, int]:
    from optuna.trial import TrialState

    c = {"done": 0, "running": 0, "failed": 0}
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            c["done"] += 1
        elif t.state == TrialState.RUNNING:
            c["running"] += 1
        elif t.state == TrialState.FAIL and not t.user_attrs.get("surplus"):
            started = t.datetime_start.timestamp() if t.datetime_start else 0.0
            c["failed"] += started >= since
    return c


def worker_main(spec: WorkerSpec, *, child: bool = False) -> None:
    """Run trials until the budget is met, the deadline passes or too many trials failed."""
    import optuna

    if child and spec.device is not None:  # before anything initialises CUDA in this process
        os.environ["CUDA_VISIBLE_DEVICES"] = spec.device
    if child:
        logging.basicConfig(
            level=spec.log_level,
            format=f"%(asctime)s %(levelname)s w{spec.index} %(name)s: %(message)s",
            datefmt="%H:%M:%S",
        )
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    if spec.threads:
        import torch

        torch.set_num_threads(spec.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if child:
        install_sigterm_handler()  # a terminated worker records its trial as interrupted
    remember_secrets(spec.cfg)
    install_log_filter()
    quiet_optuna_failures()
    cfg = OmegaConf.create(spec.cfg)
    load_configured(cfg)  # a spawned worker starts with empty registries
    settings = StudySettings.from_cfg(cfg)
    on_stale = partial(_on_stale, max_retry=settings.max_retry, uri=spec.tracking_uri)
    storage = spec.storage.open(heartbeat_s=settings.heartbeat_s, on_stale=on_stale)
    study = optuna.load_study(
        study_name=settings.name, storage=storage, sampler=make_sampler(settings, spec.index)
    )
    objective = TrialObjective(cfg, settings, spec.parent_run_id)
    progress = StudyProgress(settings.name, settings.n_trials)
    callbacks = [ParetoTagger(spec.tracking_uri)] if spec.tracking_uri else []
    callbacks.append(progress)
    try:
        while spec.deadline is None or time.time() < spec.deadline:
            recover_dead_trials(study, storage, settings, spec.tracking_uri)  # a sibling died
            c = _counts(study, spec.started_at)
            if settings.n_trials is not None and c["done"] + c["running"] >= settings.n_trials:
                break
            if c["failed"] >= settings.max_failures:
                log.error("%d trials failed in this run (study.max_failures); stopping",
                          c["failed"])  # fmt: skip
                break
            study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=callbacks)
    finally:
        progress.close()


# ---------------------------------------------------------------------------- the study
def _open_study(
    settings: StudySettings,
    spec: StorageSpec,
    storage: optuna.storages.BaseStorage,
    ident: Mapping[str, Any],
    meaning: Mapping[str, str],
) -> optuna.Study:
    """Create the study, or load it after checking it was made for the same thing (identity)
    with the same trial settings (fingerprint.trial_settings); a refused resume changes nothing."""
    import optuna

    try:
        study = optuna.load_study(study_name=settings.name, storage=storage)
    except KeyError:
        try:
            study = optuna.create_study(
                study_name=settings.name, storage=storage, directions=settings.directions
            )
            for k, v in ident.items():
                study.set_user_attr(k, v)
            study.set_user_attr(SETTINGS_ATTR, dict(meaning))
            _name_metrics(study, settings)
            return study
        except optuna.exceptions.DuplicatedStudyError:  # created concurrently
            study = optuna.load_study(study_name=settings.name, storage=storage)
    have = study.user_attrs.get("objectives")
    directions = [d.name.lower() for d in study.directions]
    if have != list(settings.objectives) or directions != settings.directions:
        raise ConfigError(
            f"study '{settings.name}' in {spec.masked} exists with objectives "
            f"{have or directions}, not {list(settings.objectives)}; pick another study.name "
            "or delete that study"
        )
    if study.metric_names is None:  # made before the names were recorded
        _name_metrics(study, settings)
    for key, value in ident.items():
        if key != "objectives" and study.user_attrs.get(key, value) != value:
            raise ConfigError(
                f"study '{settings.name}' in {spec.masked} was created for {key}="
                f"{study.user_attrs[key]}, not {value}; pick another study.name"
            )
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:  # made before settings were recorded: record them now
        study.set_user_attr(SETTINGS_ATTR, dict(meaning))
    elif differ := differing_keys(stored, meaning):
        shown = ", ".join(
            f"{k}={stored.get(k, '<unset>')}→{meaning.get(k, '<unset>')}" for k in differ[:8]
        ) + (f" and {len(differ) - 8} more" if len(differ) > 8 else "")
        raise ConfigError(
            f"study '{settings.name}' in {spec.masked} was made with other trial settings: "
            f"{shown}; restore them, or pick another study.name (or outputs) for the new settings"
        )
    return study


def _name_metrics(study: optuna.Study, settings: StudySettings) -> None:
    """Objective names in the storage, so optuna-dashboard labels the axes (quality, macs_ratio)
    instead of "Objective 0/1"."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(settings.objectives))


def _summary(
    study: optuna.Study,
    settings: StudySettings,
    spec: StorageSpec,
    parent: ParentRun | None,
) -> dict[str, Any]:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    front = sorted(study.best_trials, key=lambda t: t.number)
    return {
        "study_name": settings.name,
        "storage": spec.masked,
        "objectives": list(settings.objectives),
        "n_complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "n_pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "n_failed": sum(
            t.state == TrialState.FAIL and not t.user_attrs.get("surplus") for t in trials
        ),
        "n_surplus": sum(bool(t.user_attrs.get("surplus")) for t in trials),
        "pareto": [t.number for t in front],
        "front": [
            {
                "trial": t.number,
                **dict(zip(settings.objectives, t.values, strict=True)),
                "test_metric": t.user_attrs.get("test_metric"),
                "params": t.params,
            }
            for t in front
        ],
        "parent_run_id": parent.run_id if parent else None,
        "tracking_uri": mask_secrets(parent.uri) if parent else None,
    }


def run_study(cfg: DictConfig) -> dict[str, Any]:
    """Create or resume the study of `cfg`, run its workers, log the front; return a summary."""
    import optuna

    from harness.pipeline import build_method, ensure_baseline
    from harness.provenance import git_label

    load_configured(cfg)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    remember_secrets(OmegaConf.to_container(cfg, resolve=True))
    install_log_filter()
    quiet_optuna_failures()
    settings = StudySettings.from_cfg(cfg)
    spec = settings.storage(cfg)  # a bad study.storage path fails here, in one line
    preflight(cfg)  # budgets, folders, tracking store: before anything trains
    space = SearchSpace.from_config(cfg)  # validate before anything is created
    if not space.names and (settings.n_trials is None or settings.n_trials > 1):
        raise ConfigError(
            "the study's search space is empty (study.target is null, and neither "
            f"study.shared_space.{cfg.task.name} nor method.search_space has a parameter): every "
            "trial would repeat one configuration; add a parameter, or use prunebench run"
        )
    for i, extra in enumerate(settings.enqueue):
        space.check_values(extra, f"study.enqueue[{i}]")
    build_method(cfg.method, model=cfg.model.name, task=cfg.task.name)  # its own arguments, too
    tracking = bool(cfg.tracking.enabled)
    uri = (cfg.tracking.uri or default_tracking_uri(cfg.outputs)) if tracking else None
    storage = _open_storage(
        spec, settings, on_stale=partial(_on_stale, max_retry=settings.max_retry, uri=uri)
    )  # created here, once, before any worker opens it
    meaning = trial_settings(cfg, space.names)
    if settings.job:  # a later launcher job of a study job 0 creates and prepares
        _wait_ready(settings, storage)
    study = _open_study(settings, spec, storage, identity(cfg, settings), meaning)
    recover_dead_trials(study, storage, settings, uri)
    if not study.trials and not settings.job:
        _enqueue_first(study, space, cfg, settings)
    ensure_baseline(cfg)  # trained once here, never concurrently by workers
    parent = None
    if tracking:
        tags = {
            **identity(cfg, settings),
            "kind": "study",
            "optuna_study": settings.name,
            "optuna_storage": spec.masked,
            "sampler": settings.sampler,
            "git_sha": git_label(),
            **{k: str(OmegaConf.select(cfg, k)) for k in VOLATILE},
        }
        parent = ParentRun.open(
            study,
            uri=uri,
            experiment=cfg.tracking.experiment,
            artifact_root=artifact_location(uri, cfg.outputs),
            tags={k: str(v) for k, v in tags.items()},
        )
        _log_parent_params(parent, cfg, space)
    study.set_user_attr(READY_ATTR, True)  # later launcher jobs (study.job ≥ 1) may join now
    started = time.time()
    first = (settings.job or 0) * settings.workers  # global worker index: distinct sampler seeds
    devices = place_workers(
        settings.workers, visible_devices(), settings.workers_per_device, first=first
    )
    worker_cfg = OmegaConf.to_container(cfg, resolve=True)
    specs = [
        WorkerSpec(
            cfg=worker_cfg,
            storage=spec,
            parent_run_id=parent.run_id if parent else None,
            tracking_uri=uri,
            index=first + i,
            started_at=started,
            deadline=None if settings.timeout_s is None else started + settings.timeout_s,
            threads=max(1, (os.cpu_count() or 1) // settings.workers)
            if settings.workers > 1
            else None,
            log_level=str(cfg.get("log_level", "INFO")),
            device=devices[i],
        )
        for i in range(settings.workers)
    ]
    status, dead_workers, outcome = "FINISHED", [], None
    try:
        if settings.workers == 1:
            worker_main(specs[0])
        else:
            dead_workers = _run_processes(specs)
            if dead_workers:  # their RUNNING trials: failed, retried, MLflow runs KILLED, now
                recover_dead_trials(study, storage, settings, uri)
    except BaseException:
        status = "KILLED"
        raise
    finally:
        study = optuna.load_study(study_name=settings.name, storage=storage)
        if status == "FINISHED":
            outcome = _outcome(study, settings, started, dead_workers)
            status = "FINISHED" if outcome.code == 0 else "FAILED"
        if parent is not None:
            ParetoTagger(parent.uri)(study)  # final word: tags match study.best_trials
            try:
                log_front(study, parent, settings.objectives, metric_label=_metric_label(cfg))
                if outcome is not None:
                    from mlflow.tracking import MlflowClient

                    MlflowClient(parent.uri).set_tag(
                        parent.run_id, "exit_reason", outcome.reason or "ok"
                    )
            finally:
                parent.close(status)
    return {**_summary(study, settings, spec, parent), **outcome.as_dict()}


def _outcome(
    study: optuna.Study, settings: StudySettings, started: float, dead_workers: list[str]
) -> StudyOutcome:
    from optuna.trial import TrialState

    c = _counts(study, started)
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
    outcome = study_outcome(
        n_trials=settings.n_trials,
        n_done=c["done"],
        n_complete=sum(t.state == TrialState.COMPLETE for t in trials),
        n_failed_now=c["failed"],
        max_failures=settings.max_failures,
        deadline_passed=settings.timeout_s is not None
        and time.time() >= started + settings.timeout_s,
        dead_workers=dead_workers,
        first_fail_reason=first_fail,
        n_running_elsewhere=c["running"],  # this job's workers have stopped: others' trials
    )
    if outcome.code:
        log.error("study %s: %s", settings.name, outcome.reason)
    return outcome


def _open_storage(
    spec: StorageSpec, settings: StudySettings, on_stale: Any
) -> optuna.storages.BaseStorage:
    """Open (and on first use create) the storage. Launcher jobs of one study start together and
    may race to create its tables (PostgreSQL: a unique violation); the loser retries."""
    for _ in range(9 if settings.job is not None else 0):
        try:
            return spec.open(heartbeat_s=settings.heartbeat_s, on_stale=on_stale)
        except ConfigError as e:
            log.info("study.job=%s: storage not ready (%s); retrying", settings.job, e)
            time.sleep(3.0)
    return spec.open(heartbeat_s=settings.heartbeat_s, on_stale=on_stale)


def _wait_ready(
    settings: StudySettings, storage: optuna.storages.BaseStorage, timeout_s: float = 1800.0
) -> None:
    """Launcher job ≥ 1 of a study: wait until job 0 created it, enqueued its first trials,
    trained the baseline and opened the MLflow parent run (so none of that happens twice)."""
    import optuna

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            study = optuna.load_study(study_name=settings.name, storage=storage)
            if study.user_attrs.get(READY_ATTR):
                return
        except KeyError:
            pass
        time.sleep(2.0)
    raise ConfigError(
        f"study.job={settings.job}: study '{settings.name}' was not prepared by study.job=0 "
        f"within {timeout_s:g} s; launch job 0 too, with the same study.storage"
    )


def _enqueue_first(
    study: optuna.Study, space: SearchSpace, cfg: DictConfig, settings: StudySettings
) -> None:
    """A new study's first trials: the configured (paper) values, then `study.enqueue`, each
    entry merged over the configured values (e.g. the same method at other MAC targets)."""
    from harness.pipeline import method_defaults

    method_args = method_defaults(cfg.method, model=cfg.model.name, task=cfg.task.name)
    defaults = space.defaults(cfg, method_args)
    if settings.enqueue_defaults:
        study.enqueue_trial(defaults, user_attrs={"paper_default": True}, skip_if_exists=True)
        log.info("enqueued the default configuration first: %s", defaults)
    for extra in settings.enqueue:
        study.enqueue_trial({**defaults, **extra}, user_attrs={"enqueued": True})
        log.info("enqueued %s", extra)


def _run_processes(specs: list[WorkerSpec]) -> list[str]:
    """Run one spawned process per worker; return the workers that died (`w1: SIGKILL`)."""
    ctx = mp.get_context("spawn")  # fork after torch/MLflow threads exist is unsafe
    procs = [ctx.Process(target=worker_main, args=(s,), kwargs={"child": True}) for s in specs]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except BaseException:  # Ctrl-C reached them too; SIGTERM (Kubernetes) may not have: pass it on
        for p in procs:
            if p.is_alive():
                p.terminate()
        raise
    finally:
        for p in procs:  # give them a moment to record the interruption
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    dead = [f"w{i}: {_describe_exit(p.exitcode)}" for i, p in enumerate(procs) if p.exitcode]
    if dead:
        log.error("%d of %d workers died: %s", len(dead), len(procs), ", ".join(dead))
    return dead


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _metric_label(cfg: DictConfig) -> str:
    from harness.registry import TASKS

    return f"val {TASKS.get(cfg.task.name).metric}"


def _log_parent_params(parent: ParentRun, cfg: DictConfig, space: SearchSpace) -> None:
    """The study's config and space as params, once (MLflow params never change)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(parent.uri)
    if client.get_run(parent.run_id).data.params:
        return  # a resumed study: logged when it was created
    params = {**OmegaConf.to_container(cfg, resolve=True), "space": space.describe()}
    log_params(client, parent.run_id, params, skip=VOLATILE)
