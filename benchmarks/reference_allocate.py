"""The original allocator, kept only as the reference the incremental one is tested and
benchmarked against: it recomputes the whole cost after removing each unit (units × layers).

Two allocations: `uniform` keeps every group at (nearly) the same kept fraction, removing next from
the group with the highest kept fraction; `global` ranks all units of all groups together by their
group-normalised score. Both respect a per-group floor and stop at the first plan whose MAC ratio
is ≤ target, so the result undershoots the target by at most one unit's MACs.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor

from harness.errors import ConfigError, ImpossibleTargetError
from harness.structure.allocate import check_target, floor_of
from harness.structure.cost import CostModel
from harness.structure.plan import Plan

__all__ = ["allocate"]

Allocation = Literal["uniform", "global"]


def allocate(
    cost: CostModel,
    scores: Mapping[str, Tensor],
    target: float,
    *,
    allocation: Allocation = "uniform",
    floor: float = 0.0,
    min_channels: int = 1,
    normalize: bool = True,
    removed: Mapping[str, Tensor] | None = None,
) -> Plan:
    """`harness.structure.allocate` as it was: same arguments, same plans, O(units × layers)."""
    check_target(target)
    if allocation not in ("uniform", "global"):
        raise ConfigError(f"unknown allocation '{allocation}'; known: global, uniform")
    groups = cost.structure.groups
    state = {g: torch.zeros(groups[g].size, dtype=torch.bool) for g in scores}
    for g, m in (removed or {}).items():
        state[g] = m.clone()
    order: dict[str, list[int]] = {}
    for g, s in scores.items():
        if s.shape != (groups[g].size,):
            raise ValueError(
                f"scores of group {g} have shape {tuple(s.shape)}, expected ({groups[g].size},)"
            )
        # lowest score first; ties broken by index so equal scores give a stable plan
        ranked = sorted(range(len(s)), key=lambda i: (float(s[i]), i))
        order[g] = [i for i in ranked if not state[g][i]]
    keep_min = {g: floor_of(groups[g].size, floor, min_channels) for g in scores}
    goal = target * cost.base_macs
    macs = cost.macs(state)

    def removable(g: str) -> bool:
        return bool(order[g]) and int((~state[g]).sum()) > keep_min[g]

    if allocation == "global":
        # each group's mean |score| in float64, floored relative to the largest group mean (not
        # at an absolute number), so scaling every score by c > 0 leaves the plan unchanged
        means = {g: float(s.double().abs().mean()) if len(s) else 0.0 for g, s in scores.items()}
        top = max(means.values(), default=0.0)
        norm = {g: max(m, 1e-12 * top) if normalize and top > 0 else 1.0 for g, m in means.items()}
        heap = [
            (float(scores[g][order[g][0]].double()) / norm[g], g) for g in scores if removable(g)
        ]
        heapq.heapify(heap)
    while macs > goal:
        if allocation == "uniform":
            candidates = [g for g in scores if removable(g)]
            if not candidates:
                break
            # highest kept fraction first; ties go to the earliest group in model order
            g = max(candidates, key=lambda g: float((~state[g]).float().mean()))
        else:
            if not heap:
                break
            _, g = heapq.heappop(heap)
        state[g][order[g].pop(0)] = True
        macs = cost.macs(state)
        if allocation == "global" and removable(g):
            heapq.heappush(heap, (float(scores[g][order[g][0]].double()) / norm[g], g))
    if macs > goal:
        raise ImpossibleTargetError(
            f"target={target} is below the smallest MAC ratio the floors allow "
            f"({macs / cost.base_macs:.3f} with prune.floor={floor}, "
            f"prune.min_channels={min_channels}); raise the target or lower the floor"
        )
    return Plan.from_removed(state)
