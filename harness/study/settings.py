"""What a study is asked to do: `cfg.study` validated into `StudySettings`, the objectives and
constraints it may name, its default name, and the identity a resumed study must match."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness.config import method_label, model_label
from harness.errors import ConfigError
from harness.study.halving import Fidelity
from harness.study.storage import StorageSpec, find_storage

__all__ = [
    "CONSTRAINTS",
    "OBJECTIVES",
    "SAMPLERS",
    "VOLATILE",
    "StudySettings",
    "identity",
    "study_name",
]

#: objective name → (record key, direction); "quality" is the task's metric on validation
OBJECTIVES: dict[str, tuple[str, str]] = {
    "quality": ("val_metric", "maximize"),
    "macs_ratio": ("macs_ratio", "minimize"),
    "params_ratio": ("params_ratio", "minimize"),
    "latency_ms": ("latency_ms", "minimize"),
    "latency_ratio": ("latency_ratio_batch", "minimize"),  # at measure.latency_batch
}
#: constraint name → (record key, sign): feasible when sign · (value − bound) ≤ 0
CONSTRAINTS: dict[str, tuple[str, int]] = {
    "macs_ratio_max": ("macs_ratio", 1),
    "params_ratio_max": ("params_ratio", 1),
    "quality_min": ("val_metric", -1),
    "latency_ratio_max": ("latency_ratio_batch", 1),
}
SAMPLERS = ("nsga2", "random", "tpe")
#: config keys that change between invocations of one study: tags on the parent, not params
VOLATILE = ("study.n_trials", "study.timeout_s", "study.workers", "study.job",
            "study.fidelity.max_trials")  # fmt: skip


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
    fidelity: Fidelity = field(default_factory=Fidelity)  # full budget, or successive halving
    #: halving: n_trials counts full-budget trials, and this caps every trial (None: no cap)
    max_trials: int | None = None

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
        for key in ("n_trials", "workers", "job", "max_failures", "max_retry", "heartbeat_s",
                    "n_startup_trials", "population_size", "workers_per_device"):  # fmt: skip
            value = s.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"study.{key}={value!r} is not a whole number")
        n_trials = None if s.get("n_trials") is None else int(s.n_trials)
        timeout = None if s.get("timeout_s") is None else float(s.timeout_s)
        if n_trials is None and timeout is None:
            raise ConfigError("a study needs a budget: set study.n_trials and/or study.timeout_s")
        if (n_trials is not None and n_trials < 1) or (timeout is not None and timeout <= 0):
            raise ConfigError(f"study.n_trials={n_trials} / timeout_s={timeout} must be positive")
        workers = 1 if s.get("workers") is None else int(s.workers)
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
        fidelity = Fidelity.from_cfg(s)
        fidelity.check(cfg, objectives)
        max_trials = None
        if fidelity.halving:
            max_trials = fidelity.max_trials
            if n_trials is not None:
                max_trials = fidelity.max_trials_for(n_trials, int(cfg.finetune.epochs))
                if max_trials < n_trials:
                    raise ConfigError(
                        f"study.fidelity.max_trials={max_trials} is below study.n_trials="
                        f"{n_trials} (full-budget trials): the study could never meet it"
                    )
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
            fidelity=fidelity,
            max_trials=max_trials,
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
    datasets of one task never share a study; a control names its source: `scratch_b@l1`)."""
    if cfg.study.get("name"):
        return str(cfg.study.name)
    model = model_label(cfg.model)
    return f"{cfg.task.name}-{cfg.data.name}-{model}-{method_label(cfg.method)}-s{cfg.seed}"


def identity(cfg: DictConfig, settings: StudySettings) -> dict[str, Any]:
    """What a study was created for; a resumed study must match it."""
    ident = {
        "objectives": list(settings.objectives),
        "task": str(cfg.task.name),
        "data": str(cfg.data.name),
        "model": model_label(cfg.model),
        "method": str(cfg.method.name),
        "seed": int(cfg.seed),
    }
    if settings.fidelity.halving:  # a study's rungs cannot change between invocations
        f = settings.fidelity
        ident["fidelity"] = {"mode": f.mode, "min_epochs": f.min_epochs, "eta": f.eta}
    return ident
