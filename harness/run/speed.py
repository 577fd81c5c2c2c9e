"""Measured speed in a run: latency targets (`target_kind: latency`) and the speed record.

A latency target is a ratio of the unpruned model's measured forward latency on the run's device
at `latency.batch`. Before any training the run builds (or loads) the per-device latency table,
measures the unpruned model and two probes (copies pruned uniformly, one near the floors, one
half-way): the near one calibrates the residual (`LatencyCostModel.calibrate`), the half-way one
checks the calibrated table, whose prediction must be within `latency.max_error` of its measured
latency, else the run is refused in one line. A target below what the floors' smallest plan is
predicted to reach is refused in one line too. Pruning then allocates to the table's prediction
of the target, measures the compact model, and corrects the allocation by the measured/predicted
factor up to `latency.correct_steps` times (`LatencyTarget.land`; DHP's landing the same way,
through `LatencyTarget.lander`). After fine-tuning, the compact model and the unpruned one are
timed interleaved in the same process; the target counts as met when the measured ratio is ≤
target + noise, where noise is the target times the sum of both models' relative spreads
(interquartile range / median of the repeats).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from harness.errors import ConfigError, ImpossibleTargetError, IncompatibleMethodError
from harness.run.measure import Timing, measure_speed
from harness.runtime.device import Runtime
from harness.structure import Plan, Structure, allocate, apply_plan, floor_of
from harness.structure.latency import (
    LatencyCostModel,
    LatencyTable,
    TorchLayerTimer,
    environment_key,
    latency_allocation_target,
    layer_specs,
)
from harness.structure.rounding import allowed_widths

__all__ = ["LatencyTarget", "plan_latency_target", "round_to", "speed_record", "target_kind"]

log = logging.getLogger(__name__)

KINDS = ("macs", "latency")
#: a measured latency ratio within this below the target is not corrected further
LANDING_SLACK = 0.02


def target_kind(cfg: DictConfig) -> str:
    kind = cfg.get("target_kind", "macs")
    if kind not in KINDS:
        raise ConfigError(f"target_kind={kind} is not one of {', '.join(KINDS)}")
    return kind


def round_to(cfg: DictConfig, method: Any = None) -> int:
    """`prune.round_to`, validated (1: no rounding); refused for a search method that does not
    choose its widths (`SearchMethod.rounds`: the controls that reuse another run's plan)."""
    from harness.method import SearchMethod

    value = cfg.prune.get("round_to", 1)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"prune.round_to={value} must be a positive integer (1: off, 8: AVX2)")
    if value > 1 and isinstance(method, SearchMethod) and not method.rounds:
        raise IncompatibleMethodError(
            f"method {cfg.method.name} takes another run's widths as they are; "
            f"prune.round_to={value} applies to methods that choose them (one-shot, train-time, "
            "DHP, uniform): round the source run instead"
        )
    return value


@dataclass
class LatencyTarget:
    """What `plan_latency_target` found before training."""

    cost: LatencyCostModel
    batch: int
    base: Timing  # the unpruned model's measured forward pass at `batch`
    residual_ms: float  # the part of the measured latency no pruning shrinks (calibrated)
    allocation_target: float  # ratio of the layer sum to allocate to
    probe_error: float  # |predicted − measured| / measured of the probe plan
    base_model: nn.Module  # the unpruned model on the run's device, for the final comparison

    shape: tuple[int, ...] = ()
    runtime: Runtime | None = None
    repeats: int = 7
    correct_steps: int = 2
    landing: list[dict[str, float]] = field(default_factory=list)  # (t, predicted, measured)

    def predicted_ratio(self, removed: Mapping[str, Tensor]) -> float:
        return self.cost.predict_ms(removed) / self.cost.predict_ms()

    def measured_ratio(self, compact: nn.Module) -> float:
        """Compact / unpruned latency at `batch`, timed interleaved now."""
        times = measure_speed(
            {"base": self.base_model, "compact": compact}, self.shape, self.runtime,
            batch_sizes=(self.batch,), repeats=self.repeats,
        )  # fmt: skip
        return times["compact"][self.batch].median_ms / times["base"][self.batch].median_ms

    def land(
        self,
        allocate_to: Callable[[float], Plan],
        start: float,
        model: nn.Module,
        structure: Structure,
        cfg: DictConfig,
    ) -> Plan:
        """The plan to prune: allocated to `start` (the table's prediction of the target), then
        measured; while it measures above the target (or far below it), up to `correct_steps`
        times the allocation target is corrected by the measured/predicted factor and the new
        plan measured. Returns the loosest plan measured at or below the target (else the
        tightest tried). Every try is kept in `landing` for the record."""
        target = float(cfg.target)
        layers, fixed = self.cost.base_macs, self.cost.fixed_ms
        t, tried = start, []
        for _ in range(1 + max(0, self.correct_steps)):
            try:
                plan = allocate_to(t)
            except ImpossibleTargetError:
                if not tried:
                    raise  # the floors (or round_to) refuse the target itself
                break  # corrected below what the floors allow: keep what was measured
            removed = plan.removed(structure)
            predicted = self.predicted_ratio(removed)
            measured = self.measured_ratio(apply_plan(copy.deepcopy(model), structure, plan))
            tried.append((t, plan, predicted, measured))
            self.landing.append({"t": t, "predicted": predicted, "measured": measured})
            if target - LANDING_SLACK <= measured <= target:
                break
            # the table errs by measured/predicted near here: aim the prediction so that the
            # measurement lands mid-way into [target - LANDING_SLACK, target]
            aim = (target - LANDING_SLACK / 2) * predicted / measured
            t = min(1.0, (aim * (layers + fixed) - fixed) / layers)
            if t <= 0.0 or any(abs(t - x[0]) < 1e-6 for x in tried):
                break
        ok = [x for x in tried if x[3] <= target]
        best = max(ok, key=lambda x: x[0]) if ok else min(tried, key=lambda x: x[0])
        return best[1]

    def lander(
        self, structure: Structure, cfg: DictConfig
    ) -> Callable[[Callable[[float], Plan], float], Plan]:
        """`land` for a method that makes its own plans (DHP: `PruneContext.land`): each plan
        measured on the unpruned model cut to it (latency depends on widths, not weights)."""

        def land(plan_at: Callable[[float], Plan], start: float) -> Plan:
            return self.land(plan_at, start, self.base_model, structure, cfg)

        return land


def _latency_cfg(cfg: DictConfig) -> DictConfig:
    return cfg.get("latency") or DictConfig({})


def _floor_state(structure: Structure, floor: float, min_channels: int, multiple: int):
    state = {}
    for g in structure.prunable:
        keep = floor_of(g.size, floor, min_channels)
        if multiple > 1:
            keep = allowed_widths(g.size, multiple, keep)[0]
        mask = torch.ones(g.size, dtype=torch.bool)
        mask[:keep] = False
        state[g.name] = mask
    return state


def plan_latency_target(
    cfg: DictConfig,
    model: nn.Module,
    structure: Structure,
    runtime: Runtime,
    example: Tensor,
    shape: tuple[int, ...],
    method: Any,
) -> LatencyTarget:
    """Build the table, measure the unpruned model, refuse an unreachable target or a table
    that mispredicts, and return the layer-sum ratio to allocate to. Before any training."""
    from harness.method import SearchMethod

    if int(cfg.prune.steps) > 1:
        raise ConfigError(
            "target_kind=latency prunes in one step (prune.steps=1): the table is built for the "
            "unpruned model's layer shapes"
        )
    if isinstance(method, SearchMethod) and not method.stops_on_cost:
        raise IncompatibleMethodError(
            f"method {cfg.method.name} searches to a MAC ratio; target_kind=latency works with "
            "one-shot and train-time methods and DHP (use target_kind=macs)"
        )
    lcfg = _latency_cfg(cfg)
    batch = int(lcfg.get("batch") or cfg.measure.latency_batch)
    repeats = int(lcfg.get("repeats", 7))
    max_error = float(lcfg.get("max_error", 0.25))
    table = LatencyTable(
        environment_key(runtime, batch),
        timer=TorchLayerTimer(runtime, batch, repeats=repeats),
        cache_dir=cfg.cache_dir,
        step=int(lcfg.get("step", 8)),
        grid=int(lcfg.get("grid", 4)),
    )
    base_model = runtime.prepare(copy.deepcopy(model))
    specs = layer_specs(base_model, example.to(runtime.device), list(structure.layers))
    cost = LatencyCostModel(structure, table, specs)
    if table.timed:
        log.info("latency table: timed %d layer configurations (%s)", table.timed, table.path)
    floor_state = _floor_state(structure, cfg.prune.floor, cfg.prune.min_channels, round_to(cfg))
    floor_ratio = cost.ratio(floor_state)
    near = _probe_plan(cost, structure, cfg, floor_ratio + 0.25 * (1 - floor_ratio))
    half = _probe_plan(cost, structure, cfg, floor_ratio + 0.5 * (1 - floor_ratio))
    models = {"base": base_model}
    for name, plan in (("near", near), ("half", half)):
        models[name] = apply_plan(copy.deepcopy(base_model), structure, plan)
    times = measure_speed(models, shape, runtime, batch_sizes=(batch,), repeats=repeats)
    base = times["base"][batch]
    if cost.base_macs > base.median_ms and not table.timed:
        # cached layers sum to more than the whole network measures now: they were timed under
        # other conditions (a loaded machine); time them again rather than trust or scale them
        log.warning(
            "latency table: cached layers sum to %.3f ms, the network measures %.3f ms; "
            "timing them again", cost.base_macs, base.median_ms,
        )  # fmt: skip
        table.ensure(cost.specs, cost.varies, force=True)
        cost = LatencyCostModel(structure, table, specs)
    layers = cost.base_macs
    cost.calibrate(base.median_ms, times["near"][batch].median_ms, near.removed(structure))
    predicted = cost.predict_ms(half.removed(structure))
    measured = times["half"][batch].median_ms
    error = abs(predicted - measured) / measured
    log.info(
        "latency table: layers %.3f ms of %.3f ms measured at batch %d; check probe predicted "
        "%.3f ms, measured %.3f ms (error %.1f%%)",
        layers, base.median_ms, batch, predicted, measured, 100 * error,
    )  # fmt: skip
    if error > max_error:
        raise ImpossibleTargetError(
            f"the latency table mispredicts this model on {runtime.device}: a pruned probe "
            f"measures {measured:.3f} ms, predicted {predicted:.3f} ms ({error:.0%} off, bound "
            f"latency.max_error={max_error}); raise latency.batch or use target_kind=macs"
        )
    t = latency_allocation_target(
        float(cfg.target),
        layers_ms=cost.base_macs,
        residual_ms=cost.fixed_ms,
        floor_ratio=cost.ratio(floor_state),
    )
    return LatencyTarget(
        cost, batch, base, cost.fixed_ms, t, error, base_model, shape=shape, runtime=runtime,
        repeats=repeats, correct_steps=int(lcfg.get("correct_steps", 2)),
    )  # fmt: skip


def _probe_plan(cost: LatencyCostModel, structure: Structure, cfg: DictConfig, goal: float):
    """A uniform plan (units by index) at `goal` of the table's layer sum."""
    scores = {g.name: -torch.arange(g.size, dtype=torch.float) for g in structure.prunable}
    return allocate(
        cost, scores, min(1.0, goal), floor=cfg.prune.floor, min_channels=cfg.prune.min_channels
    )


def speed_record(
    cfg: DictConfig,
    runtime: Runtime,
    shape: tuple[int, ...],
    model: nn.Module,
    base_model: nn.Module,
    *,
    latency: LatencyTarget | None,
    removed: Mapping[str, Tensor] | None,
) -> dict[str, Any]:
    """Latency at batch 1 and `measure.latency_batch` of the compact and unpruned models,
    measured interleaved in this process: medians, spreads, ratios; for a latency target also
    the predicted ratio, the table's error on the compact model and whether the target is met."""
    big = int(cfg.measure.latency_batch)
    batches = sorted({1, big} | ({latency.batch} if latency else set()))
    times = measure_speed(
        {"pruned": model, "base": base_model}, shape, runtime, batch_sizes=tuple(batches),
        repeats=int(cfg.measure.latency_repeats),
    )  # fmt: skip
    out: dict[str, Any] = {"target_kind": target_kind(cfg)}
    if cfg.measure.get("onnx", False):  # the second runtime: onnxruntime on CPU
        from harness.run.export import onnx_record

        out.update(
            onnx_record(
                model,
                base_model,
                shape,
                batch_sizes=tuple(batches),
                repeats=int(cfg.measure.latency_repeats),
            )
        )
    for b, suffix in ((1, ""), (big, "_batch")):
        p, q = times["pruned"][b], times["base"][b]
        out[f"latency_ms{suffix}"] = p.median_ms
        out[f"latency_ms{suffix}_spread"] = p.spread_ms
        out[f"latency_ms{suffix}_base"] = q.median_ms
        out[f"latency_ms{suffix}_base_spread"] = q.spread_ms
        out[f"latency_ratio{suffix}"] = p.median_ms / q.median_ms
    if latency is not None and removed is not None:
        p, q = times["pruned"][latency.batch], times["base"][latency.batch]
        ratio = p.median_ms / q.median_ms
        predicted = latency.predicted_ratio(removed)
        noise = float(cfg.target) * (p.relative_spread + q.relative_spread)
        out.update(
            latency_target_batch=latency.batch,
            latency_target_ratio=ratio,
            latency_pred_ratio=predicted,
            latency_pred_error=abs(predicted - ratio) / ratio,
            latency_probe_error=latency.probe_error,
            latency_target_noise=noise,
            latency_target_met=bool(ratio <= float(cfg.target) + noise),
            latency_landing_tries=len(latency.landing),
            latency_landing=list(latency.landing),
        )
        if not out["latency_target_met"]:
            log.warning(
                "latency target %s missed: measured %.3f (predicted %.3f, noise %.3f)",
                cfg.target, ratio, predicted, noise,
            )  # fmt: skip
    return out


def unpruned_copy(task: Any, cfg: DictConfig, runtime: Runtime) -> nn.Module:
    """A fresh unpruned model for timing (weights do not change dense latency); the global RNG
    is left as it was."""
    with torch.random.fork_rng(devices=[]):
        return runtime.prepare(task.build_model(cfg.model, cfg.data))
