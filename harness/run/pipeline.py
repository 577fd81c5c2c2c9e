"""One run: baseline → prune → fine-tune → evaluate → measure → record.

Reaches tasks, models and methods only through their registries, so a new method or task needs no
change here. Every method gets the same data, baseline checkpoint, fine-tuning budget, seed and
measurement; the validation split selects, the test split is scored once at the end.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from harness.config import model_label
from harness.errors import ConfigError
from harness.method import (
    Method,
    OneShotMethod,
    PruneContext,
    SearchMethod,
    TrainTimeMethod,
    within_needs,
)
from harness.registry import METHODS, TASKS
from harness.run.accounting import run_cost
from harness.run.baseline import Baseline, load_or_train_baseline
from harness.run.budget import Budget, plan_budget
from harness.run.measure import MacReport, count_macs, count_params
from harness.run.preflight import preflight
from harness.run.sources import study_trial_artifacts
from harness.run.speed import (
    LatencyTarget,
    plan_latency_target,
    round_to,
    speed_record,
    target_kind,
    unpruned_copy,
)
from harness.runtime.device import Runtime, pick_runtime
from harness.runtime.precision import cpu_bf16_pays
from harness.runtime.provenance import git_label
from harness.runtime.secrets import mask_tree
from harness.runtime.seeds import derive_seed, seed_everything
from harness.runtime.startup import start_process
from harness.structure import (
    AllocationPolicy,
    CostModel,
    Plan,
    Structure,
    allocation_policy,
    allocation_target,
    build_structure,
    check_prunable,
    check_target,
    loosest_plan,
    prune_one_shot,
    save_pruned,
)
from harness.task import DataSplits, Task
from harness.tracking import Tracker
from harness.train import FitResult, Hook, Trainer, evaluate
from harness.train.compile import compile_seconds, compiled_phases
from harness.train.loop import eval_compiled

__all__ = ["RunObserver", "build_method", "ensure_baseline", "measure", "run"]

log = logging.getLogger(__name__)

METHOD_META_KEYS = ("name", "search_space", "search_space_by_task")
METHOD_STREAM = "method"  # the stage name that seeds `ctx.data.train`


class RunObserver:
    """What a caller (the study layer) sees of one run while it happens; all no-ops.

    `pruned` may raise `RunStopped` to skip fine-tuning of a run that can no longer be useful
    (an Optuna trial that is clearly infeasible); the MLflow run is then marked KILLED.
    """

    def started(self, run_id: str | None) -> None:
        """The MLflow run exists (None when tracking is off); called before any training."""

    def pruned(self, metrics: Mapping[str, float]) -> None:
        """The compact model exists: `macs_ratio`, `params_ratio`, `val_metric_pruned`,
        `cost_prune_train_images` (training images the prune stage spent)."""

    def finetune_hooks(self) -> Sequence[Hook]:
        """Extra hooks of the fine-tuning fit (a successive-halving study's rungs)."""
        return ()


def method_arguments(
    method_cfg: DictConfig, *, model: str | None = None, task: str | None = None
) -> dict[str, Any]:
    """The constructor arguments `method_cfg` gives for one (model, task): its keys other than
    METHOD_META_KEYS, after the method's per-model/per-task resolution (`Method.resolve_config`)."""
    kwargs = {
        k: v
        for k, v in OmegaConf.to_container(method_cfg, resolve=True).items()
        if k not in METHOD_META_KEYS
    }
    return METHODS.get(method_cfg.name).resolve_config(kwargs, model=model, task=task)


def method_defaults(
    method_cfg: DictConfig, *, model: str | None = None, task: str | None = None
) -> dict[str, Any]:
    """Every hyperparameter value the method would run with: the constructor's defaults
    overlaid with `method_arguments` (what a study enqueues as the paper's trial 0)."""
    cls = METHODS.get(method_cfg.name)
    signature = inspect.signature(cls.__init__).parameters.values()
    values = {p.name: p.default for p in signature if p.default is not inspect.Parameter.empty}
    return {**values, **method_arguments(method_cfg, model=model, task=task)}


def build_method(
    method_cfg: DictConfig, *, model: str | None = None, task: str | None = None
) -> Method:
    """The method `method_cfg` names, built from `method_arguments`."""
    cls = METHODS.get(method_cfg.name)
    kwargs = method_arguments(method_cfg, model=model, task=task)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"bad arguments for method '{method_cfg.name}': {e}") from e


def _prune_one_shot(
    method: OneShotMethod,
    ctx: PruneContext,
    cfg: DictConfig,
    fit: Trainer,
    measured_base: int,
    latency: LatencyTarget | None = None,
) -> tuple[nn.Module, Plan]:
    """The structure's score → allocate → remove loop (`prune_one_shot`) with this run's
    measurement landing and fine-tuning between steps. `measured_base`: fvcore MACs of the
    unpruned model, for the last step's check where the cost model does not see every MAC."""

    def prepare(model: nn.Module, structure: Structure, policy: AllocationPolicy) -> None:
        ctx.model, ctx.structure, ctx.policy, ctx.cost = model, structure, policy, policy.cost
        method.prepare(ctx)

    def land(allocate_to, step_target, model, structure, last: bool) -> Plan | None:
        if latency is not None:  # latency target: land at the measured latency ratio
            return latency.land(allocate_to, step_target, model, structure, cfg)
        if last and ctx.target != cfg.target:  # hidden MACs: land at the measured target
            return loosest_plan(
                allocate_to,
                step_target,
                model,
                structure,
                target=cfg.target,
                shape=ctx.task.input_shape(cfg.data),
                base=measured_base,
            )
        return None

    def between(model: nn.Module, k: int) -> Structure:
        if cfg.prune.finetune_between > 0:
            fit(
                model,
                epochs=cfg.prune.finetune_between,
                optim=cfg.finetune,
                name=f"finetune-step{k}",
            )
        example = ctx.task.example_input(cfg.data).to(ctx.runtime.device)
        return build_structure(model, example, frozen=cfg.prune.frozen)

    return prune_one_shot(
        ctx.model,
        ctx.structure,
        ctx.policy,
        ctx.target,
        method.score,
        grads=method.needs.grads,
        steps=int(cfg.prune.steps),
        prepare=prepare,
        land=land,
        between=between,
    )


def _baseline_train(task: Task, data: DataSplits, runtime: Runtime, cfg: DictConfig):
    run_fit = Trainer(task, data, runtime, cfg.seed)

    def train(model: nn.Module) -> tuple[dict[str, float], dict[str, float], float]:
        t = time.perf_counter()
        if cfg.train.epochs > 0:
            r = run_fit(
                model, epochs=cfg.train.epochs, optim=cfg.train, select_best=True, name="baseline"
            )
            train.compiled = r.compiled  # type: ignore[attr-defined]
        val = evaluate(task, model, data.val, runtime)
        test = evaluate(task, model, data.test, runtime)
        return val, test, time.perf_counter() - t

    return train


def _baseline_check(task: Task, data: DataSplits, runtime: Runtime):
    """What a cached baseline must still give: its validation metric, measured again."""

    def check(model: nn.Module) -> dict[str, float]:
        return {task.metric: evaluate(task, model, data.val, runtime)[task.metric]}

    return check


def run_runtime(cfg: DictConfig, task: Task) -> Runtime:
    """The device, precision and compile setting of a run. Auto precision is decided from the
    configuration alone (task, input shape, device), so every method on the same data, and the
    baseline they share, train at the same precision."""
    bf16 = cpu_bf16_pays(task.cpu_bf16, task.input_shape(cfg.data))
    return pick_runtime(cfg.device, cfg.amp, cfg.get("compile"), cfg.cache_dir, cpu_bf16=bf16)


def ensure_baseline(cfg: DictConfig) -> dict[str, Any]:
    """Train (or load) the cached baseline of `cfg` without pruning anything.

    A study calls this once before its workers start, so concurrent trials never train the
    same baseline twice.
    """
    start_process(cfg)
    task: Task = TASKS.get(cfg.task.name)(cfg.task)
    runtime = run_runtime(cfg, task)
    seed_everything(cfg.seed)
    model = runtime.prepare(task.build_model(cfg.model, cfg.data))
    data = task.build_data(cfg.data, seed=cfg.seed).to(runtime.device)
    baseline = load_or_train_baseline(
        cfg, model, _baseline_train(task, data, runtime, cfg), _baseline_check(task, data, runtime),
        precision=runtime.precision,
    )  # fmt: skip
    return {"val": baseline.val, "test": baseline.test, "path": str(baseline.path)}


def measure(cfg: DictConfig) -> dict[str, Any]:
    """MACs and parameters of the unpruned model at the task's declared input shape."""
    start_process(cfg)
    task = TASKS.get(cfg.task.name)(cfg.task)
    model = task.build_model(cfg.model, cfg.data)
    shape = task.input_shape(cfg.data)
    report = count_macs(model, shape)
    return {
        "model": model_label(cfg.model),
        "task": cfg.task.name,
        "macs": report.macs,
        "macs_total": report.macs_total,
        "params": count_params(model),
        "input_shape": list(shape),
        "unsupported_ops": report.unsupported,
    }


@dataclass
class RunParts:
    """What every stage of one run reads: built once by `_setup`, before any training.

    The model is not here: each stage takes one and returns the one the next stage gets.
    """

    cfg: DictConfig
    task: Task
    method: Method
    runtime: Runtime
    data: DataSplits
    shape: tuple[int, ...]
    base_report: MacReport
    params_base: int
    # the model's channel groups: training and re-seeding keep its architecture, so the prune
    # stage uses the structure derived (and checked) here
    structure: Structure
    target: float  # the cost-model ratio to allocate to (`allocation_target`)
    policy: AllocationPolicy  # how scores become a plan, and the cost model it allocates against
    latency: LatencyTarget | None = None  # target_kind=latency: the table, base timing, ...
    tracker: Tracker | None = None  # set when the MLflow run is open
    run_fit: Trainer | None = None  # the run's training entry (every stage trains through it)
    budget: Budget | None = None  # `budget.mode`: how many epochs fine-tuning gets
    spent_epochs: float = 0.0  # epochs the method trained before fine-tuning (set by prune)
    compile_s0: float = field(default_factory=compile_seconds)  # compile seconds before the run
    wall: dict[str, float] = field(default_factory=dict)  # seconds per stage
    compiled: dict[str, float] = field(default_factory=dict)  # stage → 1 if it ran compiled


def run(cfg: DictConfig, observer: RunObserver | None = None) -> dict[str, Any]:
    """Run one (task, model, method, target, seed) and return the result record."""
    observer = observer or RunObserver()
    parts, model = _setup(cfg)
    task, data, runtime = parts.task, parts.data, parts.runtime
    tracker = _open_tracker(cfg)
    with tracker:
        tracker.log_params(OmegaConf.to_container(cfg, resolve=True))
        observer.started(tracker.run_id)
        parts.tracker = tracker
        parts.run_fit = Trainer(task, data, runtime, cfg.seed)

        # 1. baseline (shared, cached)
        model, baseline = _baseline_stage(parts, model)

        # 2. prune
        model, plan, search_stats = _prune_stage(parts, model)
        pruned_val = evaluate(task, model, data.val, runtime)[task.metric]
        report = count_macs(model, parts.shape)  # the shapes are final: fine-tuning keeps them
        params = count_params(model)
        observer.pruned(
            {
                "macs_ratio": report.macs / parts.base_report.macs,
                "params_ratio": params / parts.params_base,
                "val_metric_pruned": pruned_val,
                "cost_prune_train_images": _prune_images(parts, search_stats),
            }
        )

        # 3. fine-tune (same budget and optimizer for every method)
        ft = _finetune_stage(parts, model, observer.finetune_hooks())

        # 4. evaluate: validation for selection, test once (in the fine-tuned model's mode)
        val = evaluate(task, model, data.val, runtime)
        test = evaluate(task, model, data.test, runtime)
        parts.compiled["eval"] = float(eval_compiled(model))  # also the latency's mode

        # 5. measure the physically pruned model (MACs and params were counted after pruning)
        latency, speed = _measure_latency(parts, model, plan)
        record = _record(
            parts,
            baseline=baseline,
            report=report,
            params=params,
            pruned_val=pruned_val,
            val=val,
            test=test,
            latency=latency,
            search_stats=search_stats,
            ft=ft,
        )
        record.update(speed)
        record.update(_noop_record(parts, record))
        _log_record(tracker, record, val, test, report)

        # 6. artifacts: state_dict + plan/channel config, reloadable without pruning code
        art = _save_artifacts(parts, model, plan, record)
        record["run_id"] = tracker.run_id
        record["artifacts"] = str(art)
        record["tracking_uri"] = tracker.uri
    return record


def _setup(cfg: DictConfig) -> tuple[RunParts, nn.Module]:
    """Everything a run needs before its MLflow run opens; bad input fails here, before any data
    or training. Returns the parts and the freshly built (unprepared) model."""
    start_process(cfg)  # plug-ins, secret masking, log filter
    check_target(cfg.target)
    preflight(cfg)
    task: Task = TASKS.get(cfg.task.name)(cfg.task)
    method = build_method(cfg.method, model=cfg.model.name, task=cfg.task.name)
    runtime = run_runtime(cfg, task)
    seed_everything(cfg.seed)
    model = task.build_model(cfg.model, cfg.data)
    method.check(model, cfg.task.name)
    # an unsupported model or an unreachable target is refused here, before any data or training
    structure = check_prunable(model, task.example_input(cfg.data), frozen=cfg.prune.frozen)
    method.check_structure(model, structure)
    shape = task.input_shape(cfg.data)
    base_report = count_macs(model, shape)
    macs = CostModel(structure)
    target = allocation_target(cfg.target, measured=base_report.macs, analytic=macs.base_macs)
    latency = None
    round_to(cfg, method)
    if target_kind(cfg) == "latency":  # table, base timing and reachability, before training
        latency = plan_latency_target(
            cfg, model, structure, runtime, task.example_input(cfg.data), shape, method
        )
        target = latency.allocation_target
    # the run's one allocation policy, against the cost model the target is in
    policy = allocation_policy(cfg.prune, method, latency.cost if latency else macs)
    data = task.build_data(cfg.data, seed=cfg.seed).to(runtime.device)
    parts = RunParts(
        cfg=cfg,
        task=task,
        method=method,
        runtime=runtime,
        data=data,
        shape=shape,
        base_report=base_report,
        params_base=count_params(model),
        structure=structure,
        target=target,
        policy=policy,
        budget=plan_budget(
            cfg, method, lambda m: build_method(m, model=cfg.model.name, task=cfg.task.name)
        ),
        latency=latency,
    )
    return parts, model


def _open_tracker(cfg: DictConfig) -> Tracker:
    """The run's MLflow tracker (not yet entered): its name and tags, `git_sha` included."""
    tags = {
        "method": cfg.method.name,
        "task": cfg.task.name,
        "model": model_label(cfg.model),
        "data": cfg.data.name,
        "seed": str(cfg.seed),
        "target": str(cfg.target),
        "git_sha": git_label(),
        **{str(k): str(v) for k, v in (cfg.tracking.get("tags") or {}).items()},
    }
    run_name = cfg.tracking.get("run_name") or (
        f"{cfg.method.name}-{model_label(cfg.model)}-{cfg.data.name}-t{cfg.target}-s{cfg.seed}"
    )
    return Tracker(
        cfg.tracking.uri,
        cfg.tracking.experiment,
        outputs=Path(cfg.outputs),
        run_name=run_name,
        tags=tags,
        parent_run_id=cfg.tracking.get("parent_run_id"),
        enabled=cfg.tracking.enabled,
    )


def _baseline_stage(parts: RunParts, model: nn.Module) -> tuple[nn.Module, Baseline]:
    """The shared, cached baseline (trained once per config); the model the prune stage starts
    from: the baseline's, or a fresh one (same seed) for a method that needs no pretraining."""
    cfg, task, data, runtime = parts.cfg, parts.task, parts.data, parts.runtime
    t = time.perf_counter()
    model = runtime.prepare(model)
    train = _baseline_train(task, data, runtime, cfg)
    baseline = load_or_train_baseline(
        cfg, model, train, _baseline_check(task, data, runtime),
        precision=runtime.precision,
    )  # fmt: skip
    parts.wall["baseline_s"] = time.perf_counter() - t
    if not baseline.cached:  # a cached baseline's mode is the run's that trained it
        parts.compiled["baseline"] = float(getattr(train, "compiled", False))
    if not parts.method.needs.pretrained:  # e.g. DHP searches from scratch, same seed
        seed_everything(cfg.seed)
        model = runtime.prepare(task.build_model(cfg.model, cfg.data))
    return model, baseline


def _prune_stage(parts: RunParts, model: nn.Module) -> tuple[nn.Module, Plan, dict[str, float]]:
    """The method's prune: a search, or (train-time training, then) one-shot score → allocate →
    remove. Returns the compact model, its plan and the search/training stats."""
    cfg, task, data, runtime, method = (
        parts.cfg,
        parts.task,
        parts.data,
        parts.runtime,
        parts.method,
    )
    tracker, run_fit = parts.tracker, parts.run_fit
    t = time.perf_counter()
    structure, target = parts.structure, parts.target
    cost = parts.policy.cost
    if target != cfg.target and parts.latency is None:
        log.info(
            "the cost model sees %.1f%% of the %s MACs fvcore counts; allocating to %.4f of them "
            "for a measured ratio ≤ %s",
            100 * cost.base_macs / parts.base_report.macs,
            f"{parts.base_report.macs:,}",
            target,
            cfg.target,
        )
    ctx = PruneContext(
        model=model,
        structure=structure,
        cost=cost,
        policy=parts.policy,
        task=task,
        # the method's own stream (Taylor's calibration batches): one more stage of the run
        data=replace(data, train=data.train.fork(derive_seed(cfg.seed, METHOD_STREAM))),
        runtime=runtime,
        target=target,
        seed=cfg.seed,
        fit=run_fit,
        log_metrics=lambda m, step=None: tracker.log_metrics(m, step),
        model_name=cfg.model.name,
        task_name=cfg.task.name,
        data_name=cfg.data.name,
        train=OmegaConf.to_container(cfg.train, resolve=True) if "train" in cfg else {},
        finetune=OmegaConf.to_container(cfg.finetune, resolve=True),
        input_shape=parts.shape,
        tags=_plain(cfg.tracking.get("tags")),
        study_artifacts=partial(study_trial_artifacts, cfg),
        land=parts.latency.lander(structure, cfg) if parts.latency else None,
    )
    ctx = within_needs(ctx, method)  # what `method.needs` does not declare raises on use
    search_stats: dict[str, float] = {}
    if isinstance(method, SearchMethod):
        before = compiled_phases()
        result = method.search(ctx)
        model, plan, search_stats = result.model, result.plan, dict(result.stats)
        parts.compiled["prune"] = float(compiled_phases() > before)
    else:
        if isinstance(method, TrainTimeMethod) and method.epochs > 0:
            r = run_fit(
                model,
                epochs=method.epochs,
                optim=method.train_optim(ctx),
                hooks=method.hooks(ctx),
                name=f"{cfg.method.name}-train",
            )
            search_stats = {"epochs": r.epochs_run, "iterations": r.steps, "wall_s": r.wall_s}
            search_stats.update(method.train_stats())
            parts.compiled["prune"] = float(r.compiled)
        model, plan = _prune_one_shot(
            method, ctx, cfg, run_fit, parts.base_report.macs, parts.latency
        )
    model = runtime.prepare(model)
    parts.wall["prune_s"] = time.perf_counter() - t
    between = int(cfg.prune.finetune_between) * (int(cfg.prune.steps) - 1)
    parts.spent_epochs = float(search_stats.get("epochs", 0.0)) + between
    return model, plan, search_stats


def _plain(node: Any) -> dict[str, Any]:
    """A config mapping as a plain dict ({} for none)."""
    return OmegaConf.to_container(node, resolve=True) if node else {}


def _prune_images(parts: RunParts, search_stats: Mapping[str, float]) -> float:
    """Training images the prune stage spent: search / train-time epochs and the fine-tuning
    between pruning steps (the same count `run_cost` makes)."""
    cfg = parts.cfg
    between = int(cfg.prune.finetune_between) * (int(cfg.prune.steps) - 1)
    epochs = float(search_stats.get("epochs", 0.0)) + between
    return epochs * parts.data.train.num_samples


def _finetune_stage(
    parts: RunParts, model: nn.Module, hooks: Sequence[Hook] = ()
) -> FitResult | None:
    """Fine-tuning in place, best validation state kept; None when 0 epochs. `finetune.epochs`
    under `budget.mode=paper`, what the method's phase left of the total under equal."""
    t = time.perf_counter()
    ft = None
    epochs = parts.budget.finetune_for(parts.spent_epochs) if parts.method.finetunes else 0
    if epochs > 0:
        ft = parts.run_fit(
            model,
            epochs=epochs,
            optim=parts.cfg.finetune,
            select_best=True,
            name="finetune",
            hooks=hooks,
        )
        parts.compiled["finetune"] = float(ft.compiled)
    parts.wall["finetune_s"] = time.perf_counter() - t
    return ft


def _measure_latency(
    parts: RunParts, model: nn.Module, plan: Plan
) -> tuple[dict[int, float], dict[str, Any]]:
    """Latency (ms) per batch size, at 1 and `measure.latency_batch`, and the speed record
    (spreads, the unpruned model timed interleaved, ratios: `speed_record`); empty when
    switched off (a latency target is always measured)."""
    cfg, latency = parts.cfg, parts.latency
    if not cfg.measure.latency and latency is None:
        return {}, {"target_kind": target_kind(cfg)}
    base = latency.base_model if latency else unpruned_copy(parts.task, cfg, parts.runtime)
    removed = plan.removed(parts.structure) if latency else None
    speed = speed_record(
        cfg, parts.runtime, parts.shape, model, base, latency=latency, removed=removed
    )
    big = int(cfg.measure.latency_batch)
    return {1: speed["latency_ms"], big: speed["latency_ms_batch"]}, speed


def _record(
    parts: RunParts,
    *,
    baseline: Baseline,
    report: MacReport,
    params: int,
    pruned_val: float,
    val: Mapping[str, float],
    test: Mapping[str, float],
    latency: Mapping[int, float],
    search_stats: Mapping[str, float],
    ft: FitResult | None,
) -> dict[str, Any]:
    """The run's result record (the JSON line `prunebench run` prints, less the tracking keys)."""
    cfg, task, base_report, wall = parts.cfg, parts.task, parts.base_report, parts.wall
    return {
        "method": cfg.method.name,
        "task": cfg.task.name,
        "model": model_label(cfg.model),
        "data": cfg.data.name,
        "seed": int(cfg.seed),
        "target": float(cfg.target),
        "metric": task.metric,
        "macs": report.macs,
        "macs_base": base_report.macs,
        "macs_ratio": report.macs / base_report.macs,
        "macs_total": report.macs_total,
        "params": params,
        "params_base": parts.params_base,
        "params_ratio": params / parts.params_base,
        "val_metric": val[task.metric],
        "test_metric": test[task.metric],
        "val_metric_pruned": pruned_val,
        "base_val_metric": baseline.val[task.metric],
        "base_test_metric": baseline.test[task.metric],
        "latency_ms": latency.get(1),
        "latency_ms_batch": latency.get(int(cfg.measure.latency_batch)),
        "latency_batch": int(cfg.measure.latency_batch),
        "device": str(parts.runtime.device),
        "precision": parts.runtime.precision,
        **{f"wall_{k}": v for k, v in wall.items()},
        "compile": parts.runtime.compile,  # the setting; compiled_*: what each stage ran
        **{f"compiled_{k}": v for k, v in parts.compiled.items()},
        "compile_s": compile_seconds() - parts.compile_s0,
        **{f"search_{k}": v for k, v in search_stats.items()},
        "finetune_epochs": ft.epochs_run if ft else 0,
        **parts.budget.record(),
        **run_cost(
            search_epochs=float(search_stats.get("epochs", 0.0)),
            finetune_epochs=(ft.epochs_run if ft else 0)
            + int(cfg.prune.finetune_between) * (int(cfg.prune.steps) - 1),
            train_images=parts.data.train.num_samples,
            wall_s=wall["prune_s"] + wall["finetune_s"],
            baseline_epochs=int(cfg.train.epochs),
            baseline_wall_s=baseline.wall_s,
            on_gpu=parts.runtime.device.type == "cuda",
        ),
    }


def _noop_record(parts: RunParts, record: Mapping[str, Any]) -> dict[str, float]:
    """The floor of a restoration result: the task's no-op (noisy input, bicubic upsampling)
    scored on the same val/test images and metric, and the test gain over it; {} where the
    task has no no-op (classification)."""
    task, data, runtime = parts.task, parts.data, parts.runtime
    noop = task.noop_model()
    if noop is None:
        return {}
    val = evaluate(task, noop, data.val, runtime)[task.metric]
    test = evaluate(task, noop, data.test, runtime)[task.metric]
    return {
        "val_metric_noop": val,
        "test_metric_noop": test,
        "test_gain_db": record["test_metric"] - test,
    }


def _log_record(
    tracker: Tracker,
    record: Mapping[str, Any],
    val: Mapping[str, float],
    test: Mapping[str, float],
    report: MacReport,
) -> None:
    """The record's numbers and every val/test score as MLflow metrics; unsupported ops as a tag."""
    metrics = {k: v for k, v in record.items() if isinstance(v, int | float)}
    metrics.update({f"val_{k}": v for k, v in val.items()})
    metrics.update({f"test_{k}": v for k, v in test.items()})
    tracker.log_metrics(metrics)
    tracker.set_tags({"unsupported_ops": ",".join(sorted(report.unsupported)) or "none"})


def _save_artifacts(
    parts: RunParts, model: nn.Module, plan: Plan, record: Mapping[str, Any]
) -> Path:
    """state_dict + plan/channel config under outputs/runs/<run id or name>, reloadable without
    pruning code, also logged to MLflow as `pruned`; returns the folder."""
    cfg, tracker = parts.cfg, parts.tracker
    art = Path(cfg.outputs) / "runs" / (tracker.run_id or tracker.run_name)
    save_pruned(
        art,
        model,
        plan,
        meta={
            "model": cfg.model.name,
            "task": cfg.task.name,
            "config": mask_tree(OmegaConf.to_container(cfg, resolve=True)),
            "git_sha": tracker.tags["git_sha"],
            "record": {k: v for k, v in record.items() if not isinstance(v, dict)},
        },
    )
    tracker.log_artifacts(art, "pruned")
    return art
