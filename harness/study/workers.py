"""Worker processes: each loads the study, gets its own sampler, and runs one trial at a time
until the budget is met, the deadline passes or too many trials failed. Several workers run as
spawned processes (`run_processes`); `worker_main` stays a top-level function so spawn can
import it in the child."""

from __future__ import annotations

import functools
import logging
import multiprocessing as mp
import os
import signal
import time
import warnings
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from harness.errors import PruneBenchError, StoreError
from harness.runtime.retry import is_locked
from harness.runtime.secrets import mask_secrets
from harness.runtime.startup import start_process
from harness.study.mlflow_link import ParetoTagger
from harness.study.objective import TrialObjective
from harness.study.outcome import budget_met, count_trials, quiet_optuna_failures
from harness.study.recovery import on_stale, recover_dead_trials
from harness.study.settings import StudySettings
from harness.study.status import StudyProgress
from harness.study.storage import StorageSpec

if TYPE_CHECKING:
    import optuna

__all__ = ["WorkerSpec", "make_sampler", "run_processes", "sampler_seed", "worker_main"]

log = logging.getLogger(__name__)


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


def sampler_seed(seed: int | None, index: int, started: int) -> int | None:
    """The seed of worker `index` when `started` trials already ran in the study. A fresh study
    keeps `seed + 10007·index` (reproducible); a resumed or rejoined one mixes in how many trials
    ran before, so it draws new points instead of replaying the ones it already tried."""
    if seed is None:
        return None
    if started == 0:
        return seed + 10_007 * index
    import numpy as np

    return int(np.random.SeedSequence([seed, index, started]).generate_state(1)[0])


def trials_started(storage: optuna.storages.BaseStorage, name: str) -> int:
    """Trials of study `name` that ever ran (any state but WAITING: enqueued ones have not)."""
    from optuna.trial import TrialState

    study_id = storage.get_study_id_from_name(name)
    trials = storage.get_all_trials(study_id, deepcopy=False)
    return sum(t.state != TrialState.WAITING for t in trials)


def make_sampler(
    settings: StudySettings, index: int, started: int = 0
) -> optuna.samplers.BaseSampler:
    """The configured sampler; each worker gets its own seed so workers do not propose twins,
    and each start of a study its own, so a resume does not replay earlier trials."""

    return _no_repeat_sampler_class()(
        _base_sampler(settings, sampler_seed(settings.seed, index, started))
    )


def _base_sampler(settings: StudySettings, seed: int | None) -> optuna.samplers.BaseSampler:
    import optuna

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


@functools.cache
def _no_repeat_sampler_class() -> type:
    """`NoRepeatSampler`, made on first use (Optuna is imported lazily)."""
    import optuna

    return type("NoRepeatSampler", (_NoRepeat, optuna.samplers.BaseSampler), {})


class _NoRepeat:
    """Wraps a sampler so that a jointly sampled point (TPE's multivariate draw, NSGA-II's
    child, which may be a copy of a parent) that an earlier trial already ran is drawn again,
    up to `tries` times. Enqueued trials (retries keep their parameters) are left alone."""

    def __init__(self, base: optuna.samplers.BaseSampler, tries: int = 20) -> None:
        self.base, self.tries = base, tries

    def infer_relative_search_space(self, study: optuna.Study, trial: Any) -> dict[str, Any]:
        return self.base.infer_relative_search_space(study, trial)

    def before_trial(self, study: optuna.Study, trial: Any) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: Any, state: Any, values: Any) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()

    def sample_relative(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial, search_space: dict[str, Any]
    ) -> dict[str, Any]:
        params = self.base.sample_relative(study, trial, search_space)
        if not params or "fixed_params" in trial.system_attrs:
            return params
        tried = [t.params for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        for _ in range(self.tries):
            if params not in tried:
                break
            params = self.base.sample_relative(study, trial, search_space)
        return params

    def sample_independent(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        param_name: str,
        param_distribution: optuna.distributions.BaseDistribution,
    ) -> Any:
        return self.base.sample_independent(study, trial, param_name, param_distribution)


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
    # a spawned worker starts with empty registries; a terminated one records its trial as
    # interrupted (signals, in a child process's main thread)
    start_process(spec.cfg, signals=child)
    quiet_optuna_failures()
    cfg = OmegaConf.create(spec.cfg)
    settings = StudySettings.from_cfg(cfg)
    stale = partial(on_stale, max_retry=settings.max_retry, uri=spec.tracking_uri)
    storage = spec.storage.open(heartbeat_s=settings.heartbeat_s, on_stale=stale)
    started = trials_started(storage, settings.name)
    study = optuna.load_study(
        study_name=settings.name,
        storage=storage,
        sampler=make_sampler(settings, spec.index, started),
    )
    objective = TrialObjective(cfg, settings, spec.parent_run_id, spec.tracking_uri)
    progress = StudyProgress(settings.name, settings.n_trials, settings.fidelity.halving)
    callbacks = [ParetoTagger(spec.tracking_uri)] if spec.tracking_uri else []
    callbacks.append(progress)
    try:
        while spec.deadline is None or time.time() < spec.deadline:
            recover_dead_trials(study, storage, settings, spec.tracking_uri)  # a sibling died
            c = count_trials(study, spec.started_at)
            if budget_met(c, settings):
                break
            if c["failed"] >= settings.max_failures:
                log.error("%d trials failed in this run (study.max_failures); stopping",
                          c["failed"])  # fmt: skip
                break
            _optimize_one(study, objective, callbacks, spec.storage)
    except PruneBenchError as e:
        if not child:
            raise
        log.error("%s", e)  # one line; the parent reports this worker's exit code
        raise SystemExit(1) from e
    finally:
        progress.close()


def _optimize_one(
    study: optuna.Study, objective: TrialObjective, callbacks: list, storage: StorageSpec
) -> None:
    """One trial. A failure of the study storage itself (it stayed locked past the wait, the
    disk is full) is one line; the trial it interrupted is failed and retried on the next start
    (harness/study/recovery.py)."""
    import optuna

    try:
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=callbacks)
    except (optuna.exceptions.StorageInternalError, OSError) as e:
        raise StoreError(_store_failure(storage, e)) from e
    except Exception as e:
        if is_locked(e):
            raise StoreError(_store_failure(storage, e)) from e
        raise


def _store_failure(storage: StorageSpec, e: BaseException) -> str:
    cause = e.__cause__ or e
    reason = mask_secrets(" ".join(str(cause).split())[:300])
    return (
        f"study storage {storage.masked} could not record a trial ({type(cause).__name__}: "
        f"{reason}); finished trials are kept, rerun the study to retry the interrupted one"
    )


def run_processes(specs: list[WorkerSpec]) -> list[str]:
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
