"""`prunebench study`: one multi-objective Optuna study per (task, data, model, method, seed).

Each trial is one ordinary pipeline run (harness/run/pipeline.py) with the trial's sampled values
written into the config, so a trial is exactly what `prunebench run` would do with those
overrides, and every method gets the same data, baseline, measurement and trial budget.

Budget semantics: `study.n_trials` counts finished trials (COMPLETE + PRUNED) over the study's
whole life, so re-running with a larger `n_trials` resumes up to it (a successive-halving study
counts full-budget trials, under the cap `study.fidelity.max_trials`: harness/study/halving.py).
Failed trials (exception, NaN loss, out of memory) are recorded with their reason and do not use
up the budget; a trial whose worker died (SIGKILL, Ctrl-C) is failed and its parameters are
retried.

This module is the study's story; its parts: settings.py (what `cfg.study` asks for),
objective.py (one trial), workers.py (worker processes and samplers), recovery.py (dead
workers), opening.py (create, resume or join a study), mlflow_link.py (the parent run and its
front), outcome.py (the exit code).
"""

from __future__ import annotations

import logging
import os
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from harness.errors import ConfigError
from harness.run.preflight import preflight
from harness.runtime.startup import start_process
from harness.study.fingerprint import trial_settings
from harness.study.mlflow_link import ParentRun, ParetoTagger, log_front
from harness.study.objective import EARLY_TOL
from harness.study.opening import READY_ATTR, open_storage, open_study, wait_ready
from harness.study.outcome import StudyOutcome, outcome_of, quiet_optuna_failures
from harness.study.placement import place_workers, visible_devices
from harness.study.recovery import on_stale, recover_dead_trials
from harness.study.settings import VOLATILE, StudySettings, identity
from harness.study.space import SearchSpace
from harness.study.storage import StorageSpec
from harness.study.workers import WorkerSpec, run_processes, worker_main
from harness.tracking import (
    artifact_location,
    default_tracking_uri,
    log_params,
    mask_secrets,
    mlflow_client,
)

if TYPE_CHECKING:
    import optuna

__all__ = ["run_study"]

log = logging.getLogger(__name__)


def run_study(cfg: DictConfig) -> dict[str, Any]:
    """Create or resume the study of `cfg`, run its workers, log the front; return a summary."""
    import optuna

    from harness.run.pipeline import ensure_baseline

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # creates Optuna's handler: first
    start_process(cfg)  # plug-ins, secret masking, log filter
    quiet_optuna_failures()
    settings, spec, space = _validate(cfg)
    tracking = bool(cfg.tracking.enabled)
    uri = (cfg.tracking.uri or default_tracking_uri(cfg.outputs)) if tracking else None
    storage = open_storage(
        spec, settings, on_stale=partial(on_stale, max_retry=settings.max_retry, uri=uri)
    )  # created here, once, before any worker opens it
    meaning = trial_settings(cfg, space.names)
    if settings.job:  # a later launcher job of a study job 0 creates and prepares
        wait_ready(settings, storage)
    study = open_study(settings, spec, storage, identity(cfg, settings), meaning)
    recover_dead_trials(study, storage, settings, uri)
    if not study.trials and not settings.job:
        _enqueue_first(study, space, cfg, settings)
    ensure_baseline(cfg)  # trained once here, never concurrently by workers
    parent = _open_parent_run(study, cfg, settings, spec, uri, space) if tracking else None
    study.set_user_attr(READY_ATTR, True)  # later launcher jobs (study.job ≥ 1) may join now
    started = time.time()
    specs = _worker_specs(cfg, settings, spec, parent, uri, started)
    status, dead_workers, outcome = "FINISHED", [], None
    try:
        if settings.workers == 1:
            worker_main(specs[0])
        else:
            dead_workers = run_processes(specs)
            if dead_workers:  # their RUNNING trials: failed, retried, MLflow runs KILLED, now
                recover_dead_trials(study, storage, settings, uri)
    except BaseException:
        status = "KILLED"
        raise
    finally:
        study = optuna.load_study(study_name=settings.name, storage=storage)
        if status == "FINISHED":
            outcome = outcome_of(study, settings, started, dead_workers)
            status = "FINISHED" if outcome.code == 0 else "FAILED"
        if parent is not None:
            _close_parent_run(parent, study, cfg, settings, outcome, status)
    return {**_summary(study, settings, spec, parent), **outcome.as_dict()}


def _validate(cfg: DictConfig) -> tuple[StudySettings, StorageSpec, SearchSpace]:
    """Everything a study checks before it creates anything: its settings, storage, budgets
    and folders (preflight), search space, enqueued values and the method's own arguments."""
    from harness.run.pipeline import build_method

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
    bound = settings.constraints.get("macs_ratio_max")
    for i, extra in enumerate(settings.enqueue):
        space.check_values(extra, f"study.enqueue[{i}]")
        target = extra.get("target")
        if bound is not None and target is not None and float(target) > bound + EARLY_TOL:
            raise ConfigError(
                f"study.enqueue[{i}]: target={target} cannot meet study.constraints."
                f"macs_ratio_max={bound:g}; the trial would be pruned and use up the budget"
            )
    build_method(cfg.method, model=cfg.model.name, task=cfg.task.name)  # its own arguments, too
    return settings, spec, space


def _open_parent_run(
    study: optuna.Study,
    cfg: DictConfig,
    settings: StudySettings,
    spec: StorageSpec,
    uri: str,
    space: SearchSpace,
) -> ParentRun:
    """The study's MLflow run (reopened on resume), tagged with what the study is."""
    from harness.runtime.provenance import git_label

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
    return parent


def _worker_specs(
    cfg: DictConfig,
    settings: StudySettings,
    spec: StorageSpec,
    parent: ParentRun | None,
    uri: str | None,
    started: float,
) -> list[WorkerSpec]:
    """One spec per worker of this invocation: global index (distinct sampler seeds), device,
    threads (the cores shared out) and the deadline of `study.timeout_s`."""
    first = (settings.job or 0) * settings.workers  # global worker index: distinct sampler seeds
    devices = place_workers(
        settings.workers, visible_devices(), settings.workers_per_device, first=first
    )
    worker_cfg = OmegaConf.to_container(cfg, resolve=True)
    return [
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


def _close_parent_run(
    parent: ParentRun,
    study: optuna.Study,
    cfg: DictConfig,
    settings: StudySettings,
    outcome: StudyOutcome | None,
    status: str,
) -> None:
    """Final word on the parent run: pareto tags, the front, the exit reason; then close it."""
    ParetoTagger(parent.uri)(study)  # final word: tags match study.best_trials
    try:
        log_front(study, parent, settings.objectives, metric_label=_metric_label(cfg))
        if outcome is not None:
            mlflow_client(parent.uri).set_tag(parent.run_id, "exit_reason", outcome.reason or "ok")
    finally:
        parent.close(status)


def _enqueue_first(
    study: optuna.Study, space: SearchSpace, cfg: DictConfig, settings: StudySettings
) -> None:
    """A new study's first trials: the configured (paper) values, then `study.enqueue`, each
    entry merged over the configured values (e.g. the same method at other MAC targets)."""
    from harness.run.pipeline import method_defaults

    method_args = method_defaults(cfg.method, model=cfg.model.name, task=cfg.task.name)
    defaults = space.defaults(cfg, method_args)
    if settings.enqueue_defaults:
        study.enqueue_trial(defaults, user_attrs={"paper_default": True}, skip_if_exists=True)
        log.info("enqueued the default configuration first: %s", defaults)
    for extra in settings.enqueue:
        study.enqueue_trial({**defaults, **extra}, user_attrs={"enqueued": True})
        log.info("enqueued %s", extra)


def _summary(
    study: optuna.Study,
    settings: StudySettings,
    spec: StorageSpec,
    parent: ParentRun | None,
) -> dict[str, Any]:
    """The JSON line of `prunebench study`: trial counts, the front, where things went."""
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


def _metric_label(cfg: DictConfig) -> str:
    from harness.registry import TASKS

    return f"val {TASKS.get(cfg.task.name).metric}"


def _log_parent_params(parent: ParentRun, cfg: DictConfig, space: SearchSpace) -> None:
    """The study's config and space as params, once (MLflow params never change)."""
    client = mlflow_client(parent.uri)
    if client.get_run(parent.run_id).data.params:
        return  # a resumed study: logged when it was created
    params = {**OmegaConf.to_container(cfg, resolve=True), "space": space.describe()}
    log_params(client, parent.run_id, params, skip=VOLATILE)
