"""The incremental allocator makes exactly the plans of the original one (which recomputed the
whole cost after every removed unit), kept in benchmarks/reference_allocate.py as the reference."""

from __future__ import annotations

import pytest
import torch

from benchmarks.reference_allocate import allocate as reference_allocate
from harness.errors import ImpossibleTargetError
from harness.registry import MODELS
from harness.structure import CostModel, allocate, build_structure
from tests.conftest import TINY_MODELS


def _scores(structure, seed: int, ties: bool) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for g in structure.prunable:
        s = torch.rand(g.size, generator=gen)
        out[g.name] = (s * 4).floor() if ties else s  # ties: 4 distinct values per group
    return out


def _plan_or_error(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs).kept
    except ImpossibleTargetError as e:
        return str(e)


def _compare(structure, **kwargs) -> int:
    cost = CostModel(structure)
    checked = 0
    for seed, ties in ((0, False), (1, True)):
        scores = _scores(structure, seed, ties)
        for allocation in ("uniform", "global"):
            for normalize in (True, False):
                if allocation == "uniform" and not normalize:
                    continue
                for target, floor, min_channels in ((0.7, 0.0, 1), (0.4, 0.25, 2), (0.05, 0.5, 1)):
                    args = (cost, scores, target)
                    opts = dict(
                        allocation=allocation,
                        normalize=normalize,
                        floor=floor,
                        min_channels=min_channels,
                        **kwargs,
                    )
                    assert _plan_or_error(allocate, *args, **opts) == _plan_or_error(
                        reference_allocate, *args, **opts
                    ), (allocation, normalize, target, floor, seed, ties)
                    checked += 1
    return checked


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_same_plans_as_reference_on_tiny_models(name):
    in_chans = 1 if name == "concat" else 3
    model = TINY_MODELS[name](in_chans=in_chans).eval()
    assert _compare(build_structure(model, torch.randn(1, in_chans, 8, 8))) == 18


def test_same_plans_as_reference_on_resnet20_with_progressive_state():
    import tasks  # noqa: F401  (registers resnet20)

    torch.manual_seed(0)
    model = MODELS.get("resnet20")(in_chans=3, num_classes=10).eval()
    structure = build_structure(model, torch.randn(1, 3, 32, 32))
    _compare(structure)
    # continuing from an earlier step's removals (progressive pruning)
    first = allocate(CostModel(structure), _scores(structure, 2, False), 0.8)
    _compare(structure, removed=first.removed(structure))


def test_tracker_matches_full_recount():
    model = TINY_MODELS["depthwise"]().eval()
    structure = build_structure(model, torch.randn(1, 3, 8, 8))
    cost = CostModel(structure)
    tracker = cost.tracker()
    state = {g.name: torch.zeros(g.size, dtype=torch.bool) for g in structure.prunable}
    for g in structure.prunable:
        for unit in range(g.size - 1):
            state[g.name][unit] = True
            tracker.remove(g.name, unit)
            assert tracker.macs == cost.macs(state)
