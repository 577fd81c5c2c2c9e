"""DHP with `prune.round_to` (kept counts multiples of N, landing at or below the target in MACs
or predicted latency) and DHP's landing corrected by measurement under a latency target, on the
tiny nets and the deterministic fake device of tests/harness/test_latency.py."""

from __future__ import annotations

import copy

import pytest
import torch
from dhp_helpers import build, dhp, make_ctx
from omegaconf import OmegaConf
from test_dhp_latency import latency_ctx
from test_dhp_search import wide_proj

from harness.errors import ImpossibleTargetError, IncompatibleMethodError
from harness.run.measure import Timing
from harness.run.speed import LatencyTarget, round_to
from harness.structure import AllocationPolicy, CostModel
from harness.structure.rounding import allowed_widths
from methods.controls import ScratchE, Uniform
from methods.dhp import DHP
from methods.dhp.landing import StopCost, round_kept
from tests.harness.test_latency import fake_network_ms


def rounding(ctx, multiple: int) -> None:
    """The run's policy with its defaults (prune.floor 0.05, prune.min_channels 1)."""
    ctx.policy = AllocationPolicy(ctx.cost, floor=0.05, min_channels=1, round_to=multiple)


def assert_multiples(plan, structure, multiple: int) -> None:
    assert plan.kept  # something was pruned
    for g, kept in plan.kept.items():
        size = structure.groups[g].size
        assert len(kept) % multiple == 0 or len(kept) == size, (g, len(kept))


@pytest.mark.parametrize("multiple", [4, 8])
def test_dhp_round_to_keeps_multiples_at_or_below_the_mac_target(multiple):
    ctx = make_ctx(wide_proj(), target=0.5)
    rounding(ctx, multiple)
    stats = (result := dhp(12, checks_per_epoch=4).search(ctx)).stats
    assert_multiples(result.plan, ctx.structure, multiple)
    ratio = CostModel(ctx.structure).ratio(result.plan.removed(ctx.structure))
    assert stats["macs_ratio"] == pytest.approx(ratio) and ratio <= 0.5
    assert ratio > 0.4  # filled back up towards the target, not left at the first fit
    assert stats["round_to"] == multiple and stats["macs_ratio_unrounded"] <= 0.5


def test_round_kept_keeps_the_highest_z_and_lands_nearest_under_the_goal():
    ctx = make_ctx(wide_proj(), target=0.5)
    cost = StopCost(ctx.cost, 0.5)
    gen = torch.Generator().manual_seed(0)
    scores = {g.name: torch.rand(g.size, generator=gen) for g in ctx.structure.prunable}
    # a landed cut: each group lost its lowest-|z| units, some a count that is no multiple of 8
    removed = {}
    for g, s in scores.items():
        mask = torch.zeros(len(s), dtype=torch.bool)
        mask[torch.argsort(s)[: len(s) // 2 - 3]] = True
        removed[g] = mask
    keep_min = {g: 4 for g in scores}
    out = round_kept(cost, scores, removed, 0.5, multiple=8, keep_min=keep_min)
    assert cost.ratio(out) <= 0.5
    for g, s in scores.items():
        kept = (~out[g]).nonzero().flatten()
        assert len(kept) % 8 == 0 or len(kept) == len(s)
        best = torch.argsort(s, descending=True, stable=True)[: len(kept)]
        assert sorted(best.tolist()) == kept.tolist()  # the highest |z|, whichever way it moved
        # nearest under the goal: no group can take its next width and stay at or below it
        wider = [w for w in allowed_widths(len(s), 8, 4) if w > len(kept)]
        if wider:
            mask = torch.ones_like(out[g])
            mask[torch.argsort(s, descending=True, stable=True)[: wider[0]]] = False
            assert cost.ratio({**out, g: mask}) > 0.5, g


def test_dhp_round_to_under_a_latency_target_lands_on_the_predicted_and_measured_ratio():
    target = 0.6
    ctx, base_ms, example = latency_ctx(target, [])
    rounding(ctx, 8)
    result = dhp(12, checks_per_epoch=4).search(ctx)
    assert_multiples(result.plan, ctx.structure, 8)
    stats = result.stats
    assert stats["stop_on"] == "latency" and stats["latency_ratio_predicted"] <= target
    measured = fake_network_ms(result.model.eval(), example) / base_ms
    assert measured == pytest.approx(stats["latency_ratio_predicted"], rel=1e-6)
    assert target - 0.1 < measured <= target + 1e-9


def test_a_round_to_no_plan_reaches_is_refused_before_the_search():
    log: list = []
    ctx = make_ctx(build("resnet_proj"), target=0.5, log=log)  # 8- and 12-channel groups
    rounding(ctx, 8)
    with pytest.raises(ImpossibleTargetError, match="prune.round_to=8") as e:
        dhp(12, checks_per_epoch=4).search(ctx)
    assert "\n" not in str(e.value)
    assert log == []  # no search step ran


def test_round_to_1_is_the_unrounded_plan():
    plans = []
    for policy in (False, True):
        ctx = make_ctx(wide_proj(), target=0.5)
        if policy:
            rounding(ctx, 1)
        plans.append(dhp(12, checks_per_epoch=4).search(ctx))
    assert plans[0].plan.kept == plans[1].plan.kept
    assert plans[0].stats["macs_ratio"] == plans[1].stats["macs_ratio"]


def test_round_to_is_refused_only_for_methods_that_take_their_widths_from_elsewhere():
    cfg = OmegaConf.create({"prune": {"round_to": 8}, "method": {"name": "x"}})
    assert round_to(cfg, DHP()) == 8 and round_to(cfg, Uniform()) == 8
    with pytest.raises(IncompatibleMethodError, match="prune.round_to=8"):
        round_to(cfg, ScratchE())


class SlowDevice(LatencyTarget):
    """Pruned models run 1.3× slower than the (exact) table predicts."""

    example = torch.randn(1, 3, 8, 8)

    def measured_ratio(self, compact):
        ms = fake_network_ms(compact, self.example)
        base = fake_network_ms(self.base_model, self.example)
        return 1.3 * ms / base if ms < base else 1.0


@pytest.mark.parametrize("multiple", [1, 8])
def test_dhp_landing_is_corrected_by_measurement(multiple):
    target = 0.6
    ctx, _, _ = latency_ctx(target, [])
    rounding(ctx, multiple)
    lat = SlowDevice(ctx.cost, 4, Timing(1.0, 0.0), 0.0, ctx.target, 0.0,
                     copy.deepcopy(ctx.model), correct_steps=3)  # fmt: skip
    ctx.land = lat.lander(ctx.structure, OmegaConf.create({"target": target}))
    result = dhp(12, checks_per_epoch=4).search(ctx)
    first = lat.landing[0]  # the plan landed on the table's prediction: measured too slow
    assert first["predicted"] <= target < first["measured"]
    measured = lat.measured_ratio(result.model)
    assert target - 0.1 < measured <= target  # corrected: at or below the target, and close
    assert result.stats["landings"] == len(lat.landing) >= 2
    assert lat.landing[-1]["measured"] == pytest.approx(measured)
    assert_multiples(result.plan, ctx.structure, multiple)
