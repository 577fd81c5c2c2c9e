"""DHP under `target_kind=latency`: the stop rule and the landing read the latency table's
prediction of the whole network (landing.stop_cost), on the deterministic fake device of
tests/harness/test_latency.py (a layer costs c · in · out · kernel · positions; the network adds
a fixed overhead and a cost per output element)."""

from __future__ import annotations

import copy

import pytest
import torch
from dhp_helpers import dhp, make_ctx
from test_dhp_search import wide_proj

from harness.structure import CostModel, allocate, apply_plan
from harness.structure.latency import (
    LatencyCostModel,
    LatencyTable,
    latency_allocation_target,
    layer_specs,
)
from methods.dhp.landing import stop_cost
from tests.harness.test_latency import ENV, FakeTimer, fake_network_ms

TARGET = 0.6


def latency_ctx(target: float, log: list):
    """The run's context under a latency target: the table as `ctx.cost`, calibrated on the
    fake device as `plan_latency_target` does, and the allocation target as `ctx.target`."""
    model, example = wide_proj(), torch.randn(1, 3, 8, 8)
    ctx = make_ctx(model, log=log)
    structure = ctx.structure
    table = LatencyTable(ENV, timer=FakeTimer(), step=8, grid=3)
    cost = LatencyCostModel(structure, table, layer_specs(model, example, list(structure.layers)))
    base_ms = fake_network_ms(model, example)
    scores = {g.name: -torch.arange(g.size, dtype=torch.float) for g in structure.prunable}
    probe = allocate(cost, scores, 0.4)
    probe_ms = fake_network_ms(apply_plan(copy.deepcopy(model), structure, probe), example)
    cost.calibrate(base_ms, probe_ms, probe.removed(structure))
    ctx.cost = cost
    ctx.target = latency_allocation_target(target, layers_ms=cost.base_macs,
                                           residual_ms=cost.fixed_ms)  # fmt: skip
    return ctx, base_ms, example


def test_stop_cost_turns_the_allocation_target_back_into_the_latency_target():
    ctx, base_ms, _ = latency_ctx(TARGET, [])
    stop = stop_cost(ctx.cost, ctx.target)
    assert stop.kind == "latency" and stop.target == pytest.approx(TARGET)
    assert stop.ratio() == pytest.approx(1.0)
    macs = stop_cost(CostModel(ctx.structure), 0.5)
    assert (macs.kind, macs.target) == ("macs", 0.5)


def test_dhp_stops_and_lands_on_the_predicted_latency_ratio():
    log: list = []
    ctx, base_ms, example = latency_ctx(TARGET, log)
    result = dhp(12, checks_per_epoch=4).search(ctx)
    stats = result.stats
    assert stats["stop_on"] == "latency"
    assert stats["stop_reason"] == "latency_ratio<=target+0.01" and stats["forced"] == 0.0
    ratios = [m["dhp/latency_ratio"] for _, m in log]
    assert ratios[-1] == stats["latency_ratio_at_stop"] <= TARGET + 0.01
    assert all(r > TARGET + 0.01 for r in ratios[:-1])  # stopped at the first check below
    # lands in [target − land_within, target] of the predicted whole-network latency ratio ...
    assert TARGET - 0.02 <= stats["latency_ratio_predicted"] <= TARGET
    # ... which the fake device measures on the compact model (the table is exact there)
    measured = fake_network_ms(result.model.eval(), example) / base_ms
    assert measured == pytest.approx(stats["latency_ratio_predicted"], rel=1e-6)
    assert measured <= TARGET + 1e-9
    # the fixed overhead (a fifth of the network here) does not shrink: a stop on the MAC ratio
    # would have stopped at a ratio of 0.6 far above this latency; this one cuts MACs deeper
    removed = result.plan.removed(ctx.structure)
    assert stats["macs_ratio"] == pytest.approx(CostModel(ctx.structure).ratio(removed))
    assert stats["macs_ratio"] < stats["latency_ratio_predicted"] - 0.05
