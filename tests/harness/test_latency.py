"""Latency table, latency targets and hardware-friendly widths, on tiny nets with a fake device.

The fake device is deterministic: a layer costs c · in · out · kernel · input positions, and a
whole network costs the sum of its layers plus a fixed overhead plus a cost per output element
(BatchNorm, activations). Nothing here reads a clock.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

from harness.errors import ImpossibleTargetError
from harness.run.measure import Timing
from harness.structure import CostModel, allocate, apply_plan, build_structure
from harness.structure.latency import (
    LatencyCostModel,
    LatencyTable,
    LayerSpec,
    latency_allocation_target,
    layer_specs,
)
from harness.structure.rounding import allowed_widths
from tests.conftest import TINY_MODELS

STEP = 8
FIXED_MS, PER_ELEMENT_MS = 0.7, 2e-5
ENV = {"device": "fake", "torch": "x", "threads": 1, "batch": 4, "dtype": "float32"}


class FakeTimer:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, spec: LayerSpec, kept_in: int, kept_out: int) -> Timing:
        self.calls += 1
        positions = math.prod(spec.input_rest)
        ms = 1e-6 * kept_in * kept_out * math.prod(spec.kernel) * positions
        return Timing(ms, 0.0)


def fake_network_ms(model: nn.Module, example: torch.Tensor) -> float:
    """What the fake device measures for a whole (compact) model."""
    modules = dict(model.named_modules())
    names = [n for n, m in modules.items() if isinstance(m, nn.Conv2d | nn.Linear)]
    specs = layer_specs(model, example, names)
    timer = FakeTimer()
    total = FIXED_MS
    outputs: dict[str, int] = {}

    def hook(name):
        def record(_m, _a, out):
            outputs[name] = out[0].numel()

        return record

    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    with torch.no_grad():
        model.eval()(example)
    for h in handles:
        h.remove()
    for n, spec in specs.items():
        total += timer(spec, spec.in_channels, spec.out_channels).median_ms
        total += PER_ELEMENT_MS * outputs[n]
    return total


def _resnet20():
    import tasks  # noqa: F401  (registers resnet20)
    from harness.registry import MODELS

    torch.manual_seed(0)
    return MODELS.get("resnet20")(in_chans=3, num_classes=10).eval(), torch.randn(1, 3, 16, 16)


def _tiny():
    model = TINY_MODELS["resnet"]().eval()
    example = torch.randn(1, 3, 8, 8)
    return model, example, build_structure(model, example)


def _latency_model(model, example, structure, tmp_path=None, timer=None):
    table = LatencyTable(ENV, timer=timer or FakeTimer(), cache_dir=tmp_path, step=STEP, grid=3)
    specs = layer_specs(model, example, list(structure.layers))
    return LatencyCostModel(structure, table, specs)


def test_table_is_cached_and_rebuilt_when_its_key_changes(tmp_path):
    model, example, structure = _tiny()
    first = FakeTimer()
    cost = _latency_model(model, example, structure, tmp_path, first)
    assert first.calls > 0
    files = list((tmp_path / "latency").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["env"]["threads"] == 1

    again = FakeTimer()
    cached = _latency_model(model, example, structure, tmp_path, again)
    assert again.calls == 0  # everything came from the cache
    assert cached.base_macs == cost.base_macs

    other = FakeTimer()
    table = LatencyTable({**ENV, "threads": 2}, timer=other, cache_dir=tmp_path, step=STEP, grid=3)
    LatencyCostModel(structure, table, layer_specs(model, example, list(structure.layers)))
    assert other.calls == first.calls  # a new key: the whole table is timed again
    assert len(list((tmp_path / "latency").glob("*.json"))) == 2

    files[0].write_text("{not json")  # a corrupt cache is rebuilt, not trusted
    rebuilt = FakeTimer()
    _latency_model(model, example, structure, tmp_path, rebuilt)
    assert rebuilt.calls == first.calls


def test_table_prediction_equals_the_fake_device_at_any_width():
    model, example = _resnet20()
    structure = build_structure(model, example)
    cost = _latency_model(model, example, structure)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        scores = {g.name: torch.rand(g.size, generator=gen) for g in structure.prunable}
        plan = allocate(CostModel(structure), scores, 0.4)
        compact = apply_plan(copy.deepcopy(model), structure, plan)
        layers_only = fake_network_ms(compact, example) - FIXED_MS
        layers_only -= PER_ELEMENT_MS * sum(
            out * structure.layers[n].positions
            for n, (_, out) in cost.channels(plan.removed(structure)).items()
        )
        assert cost.macs(plan.removed(structure)) == pytest.approx(layers_only, rel=1e-9)


@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_latency_target_lands_at_or_below_the_target(allocation):
    model, example = _resnet20()
    structure = build_structure(model, example)
    cost = _latency_model(model, example, structure)
    base_ms = fake_network_ms(model, example)
    # calibrate on a probe, as the run does, then allocate to the whole-network target
    scores = {g.name: -torch.arange(g.size, dtype=torch.float) for g in structure.prunable}
    probe = allocate(cost, scores, 0.4)
    probe_ms = fake_network_ms(apply_plan(copy.deepcopy(model), structure, probe), example)
    cost.calibrate(base_ms, probe_ms, probe.removed(structure))
    assert cost.fixed_ms == pytest.approx(FIXED_MS, rel=1e-6)
    assert cost.per_element_ms == pytest.approx(PER_ELEMENT_MS, rel=1e-6)

    gen = torch.Generator().manual_seed(1)
    scores = {g.name: torch.rand(g.size, generator=gen) for g in structure.prunable}
    for target in (0.7, 0.5):
        t = latency_allocation_target(target, layers_ms=cost.base_macs, residual_ms=cost.fixed_ms)
        plan = allocate(cost, scores, t, allocation=allocation, floor=0.05)
        compact = apply_plan(copy.deepcopy(model), structure, plan)
        measured = fake_network_ms(compact, example) / base_ms
        assert measured <= target + 1e-9
        assert measured > target - 0.02  # lands close: one unit of one group below the target
        assert cost.predict_ms(plan.removed(structure)) / base_ms == pytest.approx(measured)


def test_unreachable_latency_target_is_refused_in_one_line():
    with pytest.raises(ImpossibleTargetError, match="out of reach") as e:
        latency_allocation_target(0.3, layers_ms=6.0, residual_ms=4.0)  # residual alone is 0.4
    assert "\n" not in str(e.value)
    with pytest.raises(ImpossibleTargetError, match="floor"):
        latency_allocation_target(0.5, layers_ms=8.0, residual_ms=2.0, floor_ratio=0.6)
    t = latency_allocation_target(0.5, layers_ms=8.0, residual_ms=2.0, floor_ratio=0.1)
    assert (t * 8.0 + 2.0) / 10.0 == pytest.approx(0.5)


def test_allowed_widths():
    assert allowed_widths(64, 8, 1) == [8, 16, 24, 32, 40, 48, 56, 64]
    assert allowed_widths(20, 8, 9) == [16, 20]
    assert allowed_widths(6, 8, 1) == [6]  # smaller than the multiple: only whole


@pytest.mark.parametrize("latency", [False, True])
@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_round_to_keeps_multiples_and_the_target(allocation, latency):
    model, example = _resnet20()
    structure = build_structure(model, example)
    cost = _latency_model(model, example, structure) if latency else CostModel(structure)
    gen = torch.Generator().manual_seed(2)
    scores = {g.name: torch.rand(g.size, generator=gen) for g in structure.prunable}
    for target in (0.6, 0.35):
        plain = allocate(cost, scores, target, allocation=allocation, floor=0.1)
        plan = allocate(cost, scores, target, allocation=allocation, floor=0.1, round_to=8)
        removed = plan.removed(structure)
        assert cost.ratio(removed) <= target
        assert any(len(k) % 8 for k in plain.kept.values())  # rounding had work to do
        for g, kept in plan.kept.items():
            size = structure.groups[g].size
            assert len(kept) % 8 == 0 or len(kept) == size, (g, len(kept))
            # the kept units are the group's best-scored ones
            best = torch.argsort(scores[g], descending=True, stable=True)[: len(kept)]
            assert sorted(best.tolist()) == kept
        # the fvcore-free MAC count of the compact model agrees with the cost model's
        compact = apply_plan(copy.deepcopy(model), structure, plan)
        widths = [m.out_channels for m in compact.modules() if isinstance(m, nn.Conv2d)]
        assert all(w % 8 == 0 for w in widths[:-1] if w != 3)


def test_round_to_refuses_what_the_floors_cannot_reach():
    model, example = _resnet20()
    structure = build_structure(model, example)
    scores = {g.name: torch.rand(g.size) for g in structure.prunable}
    with pytest.raises(ImpossibleTargetError, match="round_to=32"):
        allocate(CostModel(structure), scores, 0.3, round_to=32)


def test_compare_shows_speedup_beside_mac_ratio_of_the_picked_trials():
    from harness.report.compare import StudyPoints, _speed_lines, compare_tables

    def study(seed, trials):
        macs, val, test, ratio = (list(x) for x in zip(*trials, strict=True))
        costs = [{"latency_ratio_batch": r} if r else {} for r in ratio]
        return StudyPoints("l1", seed, f"l1-s{seed}", list(range(len(macs))), macs, val, test,
                           costs)  # fmt: skip

    studies = [  # picked at 0.5: the best on validation among MAC ratio ≤ 0.5
        study(0, [(0.5, 90.0, 89.0, 0.5), (0.4, 80.0, 79.0, 0.25), (0.9, 99.0, 99.0, 0.9)]),
        study(1, [(0.45, 91.0, 90.0, 0.4), (0.3, 70.0, 70.0, None)]),
    ]
    t = compare_tables(studies, split="test", targets=[0.5, 0.35], reference=(1.0, 10.0))
    row = t["summary"].set_index("method").loc["l1"]
    assert row["q@0.5_speedup"] == pytest.approx((2.0 + 2.5) / 2)
    assert row["q@0.5_macs"] == pytest.approx(0.475)
    assert math.isnan(row["q@0.35_speedup"])  # the picked trial measured no latency
    lines = _speed_lines(t["summary"], [0.5, 0.35], 0.0)
    assert any("×2.25 (MACs 0.475)" in line and "| — |" in line for line in lines)


def test_landing_corrects_a_table_that_errs_fast():
    """The device runs pruned models 25 % slower than the table predicts: the first plan measures
    above the target, the corrected one at or below it and close."""
    from omegaconf import OmegaConf

    from harness.run.speed import LatencyTarget

    model, example = _resnet20()
    structure = build_structure(model, example)
    cost = _latency_model(model, example, structure)

    class SlowDevice(LatencyTarget):
        def measured_ratio(self, compact):
            ms = fake_network_ms(compact, example)
            base = fake_network_ms(model, example)
            return 1.25 * ms / base if ms < base else 1.0

    lat = SlowDevice(cost, 4, Timing(1.0, 0.0), 0.0, 0.5, 0.0, model, correct_steps=3)
    gen = torch.Generator().manual_seed(3)
    scores = {g.name: torch.rand(g.size, generator=gen) for g in structure.prunable}
    plan = lat.land(
        lambda t: allocate(cost, scores, t, floor=0.05), 0.5, model, structure,
        OmegaConf.create({"target": 0.5}),
    )  # fmt: skip
    first, last = lat.landing[0], lat.landing[-1]
    assert first["measured"] > 0.5 and len(lat.landing) >= 2
    measured = lat.measured_ratio(apply_plan(copy.deepcopy(model), structure, plan))
    assert 0.45 < measured <= 0.5
    assert last["measured"] == pytest.approx(measured)


def test_noisy_timings_never_make_a_narrower_layer_slower():
    model, example, structure = _tiny()
    noisy = iter([5.0, 1.0, 2.0, 0.5, 4.0, 3.0] * 1000)  # a loaded machine: no order at all

    def timer(spec, kept_in, kept_out):
        return Timing(next(noisy), 0.0)

    table = LatencyTable(ENV, timer=timer, step=2, grid=3)
    cost = LatencyCostModel(structure, table, layer_specs(model, example, list(structure.layers)))
    for g in structure.prunable:
        removed = {g.name: torch.zeros(g.size, dtype=torch.bool)}
        previous = cost.macs()
        for unit in range(g.size - 1):
            removed[g.name][unit] = True
            now = cost.macs(removed)
            assert now <= previous + 1e-12
            previous = now


def test_a_table_slower_than_the_network_is_scaled_not_given_a_negative_residual():
    model, example, structure = _tiny()
    cost = _latency_model(model, example, structure)
    table_ms = cost.macs()
    cost.calibrate(table_ms / 2, table_ms / 4, {})  # the network measures half the table's sum
    assert cost.fixed_ms == 0.0 and cost.per_element_ms == 0.0
    assert cost.predict_ms() == pytest.approx(table_ms / 2)


def test_force_times_the_cached_layers_again(tmp_path):
    model, example, structure = _tiny()
    first = FakeTimer()
    cost = _latency_model(model, example, structure, tmp_path, first)
    again = FakeTimer()
    cost.table.timer = again
    cost.table.ensure(cost.specs, cost.varies, force=True)
    assert again.calls == first.calls


def _latency_study():
    from harness.report.compare import StudyPoints

    trials = [  # (MAC ratio, val, test, measured latency ratio or None)
        (0.5, 90.0, 89.0, 0.8),  # within MAC 0.5, but slow
        (0.7, 85.0, 84.0, 0.45),
        (0.3, 95.0, 94.0, None),  # measured no latency: on no latency front, at no target
        (0.6, 80.0, 79.0, 0.4),
        (0.9, 85.0, 83.0, 0.42),  # ties the second on validation, and is faster
    ]
    macs, val, test, ratio = (list(x) for x in zip(*trials, strict=True))
    costs = [{"latency_ratio_batch": r} if r else {} for r in ratio]
    return StudyPoints("l1", 0, "l1-s0", list(range(len(macs))), macs, val, test, costs)


def test_compare_picks_trials_at_a_latency_target():
    from harness.report.compare import _markdown, compare_tables

    study = _latency_study()
    by_macs = compare_tables([study], split="test", targets=[0.5], reference=(1.0, 10.0))
    row = by_macs["summary"].set_index("method").loc["l1"]
    assert row["q@0.5_mean"] == 94.0 and row["q@0.5_macs"] == 0.3  # the default: MAC ratio

    t = compare_tables([study], split="test", targets=[0.5, 0.3], reference=(1.0, 10.0),
                       target_kind="latency")  # fmt: skip
    row = t["summary"].set_index("method").loc["l1"]
    # at latency 0.5 the best on validation is a tie (85) that the lower latency breaks
    assert row["q@0.5_mean"] == 83.0 and row["q@0.5_macs"] == 0.9
    assert row["q@0.5_speedup"] == pytest.approx(1 / 0.42)
    assert row["q@0.3_reached"] == 0  # nothing measured that fast
    ties = t["ties"]
    assert ties[["trial", "decided_by"]].values.tolist() == [[4, "lower latency"]]
    # the front on latency: (0.4, 79), (0.42, 83), (0.8, 89) against (1.0, 10)
    area = (0.42 - 0.4) * 69 + (0.8 - 0.42) * 73 + (1.0 - 0.8) * 79
    assert row["hypervolume_mean"] == pytest.approx(area)
    points = t["points"].set_index("trial")
    assert points.loc[[0, 2, 3, 4], "on_front"].tolist() == [True, False, True, True]
    assert math.isnan(points.loc[2, "latency_ratio_batch"])
    md = _markdown(t, title="x", split="test", targets=[0.5, 0.3], granularity=0.0, alpha=0.05,
                   provenance=[], target_kind="latency")  # fmt: skip
    assert "q@0.5 (latency ≤ 0.5)" in md and "lower latency" in md
    assert "×2.38 (MACs 0.900)" in md


def test_compare_draws_the_front_against_latency():
    import matplotlib.pyplot as plt

    from harness.report.compare import pareto_figure

    fig = pareto_figure([_latency_study()], "test", [0.5], "x", "top1", "latency")
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("latency ratio")
    (front,) = [line for line in ax.lines if line.get_label() == "l1"]
    assert front.get_xydata().tolist() == [[0.4, 79.0], [0.42, 83.0], [0.8, 89.0]]
    plt.close(fig)
    fig = pareto_figure([_latency_study()], "test", [0.5], "x", "top1")
    assert fig.axes[0].get_xlabel().startswith("MAC ratio")
    plt.close(fig)


def test_compare_refuses_an_unknown_target_kind():
    from omegaconf import OmegaConf

    from harness.errors import ConfigError
    from harness.report.compare import _check_compare

    c = OmegaConf.create({"methods": ["l1"], "targets": [0.5], "target_kind": "fast"})
    with pytest.raises(ConfigError, match="compare.target_kind=fast"):
        _check_compare(c)
    c.target_kind, c.targets = "latency", [1.5]
    with pytest.raises(ConfigError, match="give latency ratios"):
        _check_compare(c)
