"""Allocation checked against fvcore when the cost model cannot see every MAC.

`allocation_target` assumes the MACs the cost model cannot see (attention matmuls) stay as they
are, so a plan lands at or below the target. Where some of them shrink with the pruned channels
(MobileViT's attention runs over pruned channels), the plan overshoots: the compact model
measures well under the target. `loosest_plan` loosens the allocation target by bisection until
the compact model measures just under the target.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import nn

from harness.run.measure import count_macs
from harness.structure.groups import Structure
from harness.structure.plan import Plan, apply_plan

__all__ = ["loosest_plan", "measured_ratio"]

#: a plan measuring within this of the target is kept as it is
TOLERANCE = 0.005


def measured_ratio(
    model: nn.Module, structure: Structure, plan: Plan, shape: tuple[int, ...], base: int
) -> float:
    """fvcore MACs of `model` with `plan` applied (to a copy) over `base`."""
    return count_macs(apply_plan(copy.deepcopy(model), structure, plan), shape).macs / base


def loosest_plan(
    allocate_to: Callable[[float], Plan],
    start: float,
    model: nn.Module,
    structure: Structure,
    *,
    target: float,
    shape: tuple[int, ...],
    base: int,
    steps: int = 8,
) -> Plan:
    """The plan of the loosest allocation target in [start, 1] whose compact model measures
    ≤ `target`. `allocate_to(t)` allocates to cost-model ratio t; `start` is the conservative one
    (measures ≤ target). Plans are nested (a looser target removes a subset of the units: the
    removal order does not depend on the goal), so the measured ratio grows with t."""
    best = allocate_to(start)
    if measured_ratio(model, structure, best, shape, base) >= target - TOLERANCE:
        return best
    lo, hi = start, 1.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        plan = allocate_to(mid)
        if measured_ratio(model, structure, plan, shape, base) <= target:
            lo, best = mid, plan
        else:
            hi = mid
    return best
