"""Turn per-unit scores into a plan that meets a MAC target, progressively, one unit at a time.

Two allocations: `uniform` keeps every group at (nearly) the same kept fraction, removing next from
the group with the highest kept fraction; `global` ranks all units of all groups together by their
group-normalised score. Both respect a per-group floor and stop at the first plan whose MAC ratio
is ≤ target, so the result undershoots the target by at most one unit's MACs.

The order of removals never depends on the MACs, only the stopping point does, so each step costs
one heap operation and an exact MAC update of the few layers the removed unit touches
(`CostModel.tracker`): linear in the number of units, not units × layers.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from harness.errors import ConfigError, ImpossibleTargetError
from harness.structure.cost import CostModel
from harness.structure.plan import Plan
from harness.structure.rounding import round_removed

__all__ = ["allocate", "check_target", "floor_of", "group_norms"]

#: a group whose mean |score| is below this fraction of the largest group mean is divided by
#: that floor instead (relative, so multiplying every score by c > 0 never changes a plan)
RELATIVE_FLOOR = 1e-12

Allocation = Literal["uniform", "global"]


def check_target(target: float) -> None:
    if not (isinstance(target, int | float) and 0.0 < target <= 1.0):
        raise ImpossibleTargetError(
            f"target={target} is not a MAC ratio in (0, 1]; e.g. target=0.5 keeps half the MACs"
        )


def allocation_target(target: float, *, measured: int, analytic: int) -> float:
    """The cost-model ratio to allocate to so that the measured (fvcore) MAC ratio is ≤ `target`.

    fvcore also counts what the cost model cannot see: attention matmuls, and layers called
    through `F.linear` on their own weights (Swin's qkv and proj). Those `measured - analytic`
    MACs are taken not to shrink, so the visible layers must make up the whole cut:
    analytic·(1 - t') = measured·(1 - target). Pruning can only lower the hidden part, so the
    measured ratio lands at or below `target`. Where nothing is hidden, `target` is returned as is.
    """
    hidden = measured - analytic
    if hidden <= 0:
        return target
    visible = 1.0 - (1.0 - target) * measured / analytic
    if visible <= 0.0:
        raise ImpossibleTargetError(
            f"target={target} is out of reach: {hidden / measured:.1%} of the model's "
            f"{measured:,} MACs are in operations the pruner cannot shrink (attention matmuls, "
            f"layers called functionally), so no plan measures below {hidden / measured:.3f}; "
            "raise the target"
        )
    return visible


def floor_of(size: int, floor: float, min_channels: int) -> int:
    """Units a group always keeps: at least `min_channels` and `floor` of its size."""
    return min(size, max(min_channels, math.ceil(floor * size)))


def group_norms(scores: Mapping[str, Tensor], normalize: bool = True) -> dict[str, float]:
    """Group → the divisor of its scores for global ranking: its mean |score| (float64).

    Scale-free: the floor that keeps an all-zero group finite is relative to the largest group
    mean, not an absolute number, so `scores·c` gives the divisors `norms·c` for every c > 0 and
    the normalised scores, hence the plan, do not change. Scores of 1e-17 (Taylor on small
    losses) are normalised like scores of 1. `normalize=False`: 1.0 for every group (raw scores,
    one global threshold), equally scale-free.
    """
    if not normalize:
        return {g: 1.0 for g in scores}
    means = {
        g: float(s.detach().double().abs().mean()) if len(s) else 0.0 for g, s in scores.items()
    }
    top = max(means.values(), default=0.0)
    if top <= 0.0 or not math.isfinite(top):
        return {g: 1.0 for g in scores}
    return {g: max(m, RELATIVE_FLOOR * top) for g, m in means.items()}


def _kept_fraction(kept: int, size: int) -> float:
    # float32, like the mean of a bool mask: fractions that round equal tie (earliest group wins)
    return float(np.float32(kept) / np.float32(size))


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
    round_to: int = 1,
) -> Plan:
    """Remove the lowest-scored units until MACs/base ≤ `target`.

    Args:
        scores: group name → [size] scores (higher = keep) for every group that may be pruned;
            groups absent here are left whole.
        normalize: for global allocation, divide each group's scores by their mean |score| so
            layers of different scale compete fairly; False ranks raw scores (one threshold).
            Either way the plan is invariant to multiplying every score by c > 0 (`group_norms`).
        removed: units already removed (progressive pruning continues from there).
        round_to: every pruned group keeps a multiple of this many units (`rounding.py`).
    """
    check_target(target)
    if allocation not in ("uniform", "global"):
        raise ConfigError(f"unknown allocation '{allocation}'; known: global, uniform")
    groups = cost.structure.groups
    state = {g: torch.zeros(groups[g].size, dtype=torch.bool) for g in scores}
    for g, m in (removed or {}).items():
        state[g] = m.clone()
    order: dict[str, list[int]] = {}  # per group: units still present, the next to go LAST
    for g, s in scores.items():
        if s.shape != (groups[g].size,):
            raise ValueError(
                f"scores of group {g} have shape {tuple(s.shape)}, expected ({groups[g].size},)"
            )
        # lowest score first; ties broken by index so equal scores give a stable plan
        ranked = torch.argsort(s.detach().cpu(), stable=True).tolist()
        gone = state[g].tolist()
        order[g] = [i for i in reversed(ranked) if not gone[i]]
    kept = {g: int((~state[g]).sum()) for g in scores}
    keep_min = {g: floor_of(groups[g].size, floor, min_channels) for g in scores}
    goal = target * cost.base_macs
    tracker = cost.tracker(state)

    def removable(g: str) -> bool:
        return bool(order[g]) and kept[g] > keep_min[g]

    position = {g: i for i, g in enumerate(scores)}
    if allocation == "global":
        norms = group_norms(scores, normalize)
        ranked_scores = {
            g: (s.detach().double().cpu() / norms[g]).tolist() for g, s in scores.items()
        }

        def key(g: str) -> tuple[float, str]:
            return (ranked_scores[g][order[g][-1]], g)
    else:

        def key(g: str) -> tuple[float, int]:  # highest kept fraction, then model order
            return (-_kept_fraction(kept[g], groups[g].size), position[g])

    heap = [(*key(g), g) for g in scores if removable(g)]
    heapq.heapify(heap)
    while tracker.macs > goal and heap:
        g = heapq.heappop(heap)[-1]
        unit = order[g].pop()
        state[g][unit] = True
        kept[g] -= 1
        tracker.remove(g, unit)
        if removable(g):
            heapq.heappush(heap, (*key(g), g))
    if tracker.macs > goal:
        raise ImpossibleTargetError(
            f"target={target} is below the smallest MAC ratio the floors allow "
            f"({tracker.macs / cost.base_macs:.3f} with prune.floor={floor}, "
            f"prune.min_channels={min_channels}); raise the target or lower the floor"
        )
    if round_to != 1:
        state = round_removed(
            cost, scores, state, already=removed, goal=goal, keep_min=keep_min, multiple=round_to
        )
    return Plan.from_removed(state)
