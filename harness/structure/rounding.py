"""Hardware-friendly widths: every pruned group keeps a multiple of N channels (`prune.round_to`).

Kernels pad channel counts to their vector width (8 for AVX2 fp32 and tensor cores), so 57 kept
channels cost what 64 do. The allocation is rounded afterwards, by the same cost model it used
(MACs or latency): each pruned group first goes *up* to the next multiple (keeping its next best
units), then, while the plan is over the goal, the group rounded up the most (relative to what the
allocation gave it) drops one block of N (its lowest-scored units), until the plan is at or below
the goal. A group left whole keeps its size, which need not be a multiple.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from harness.errors import ConfigError, ImpossibleTargetError
from harness.structure.cost import CostModel

__all__ = ["allowed_widths", "round_removed"]


def allowed_widths(available: int, multiple: int, minimum: int) -> list[int]:
    """Kept counts a group of `available` units may have: multiples of `multiple` ≥ `minimum`
    (and ≥ `multiple`), plus `available` itself (the group left whole)."""
    low = max(multiple, math.ceil(minimum / multiple) * multiple)
    return [*range(low, available, multiple), available]


def round_removed(
    cost: CostModel,
    scores: Mapping[str, Tensor],
    state: dict[str, Tensor],
    *,
    already: Mapping[str, Tensor] | None,
    goal: float,
    keep_min: Mapping[str, int],
    multiple: int,
) -> dict[str, Tensor]:
    """`state` (group → removed mask, from the allocation) with every group's kept count rounded
    to an allowed width and the cost at or below `goal`; `already`: units removed before this
    allocation (never brought back)."""
    if not isinstance(multiple, int) or multiple < 1:
        raise ConfigError(f"prune.round_to={multiple} must be a positive integer")
    ranked: dict[str, list[int]] = {}  # per group: units that may be kept, best first
    for g, s in scores.items():
        gone = (already or {}).get(g)
        order = torch.argsort(s.detach().cpu(), descending=True, stable=True).tolist()
        ranked[g] = [i for i in order if gone is None or not bool(gone[i])]
    wanted = {g: len(ranked[g]) - int(state[g].sum()) + _pre(already, g) for g in scores}
    widths = {g: allowed_widths(len(ranked[g]), multiple, keep_min[g]) for g in scores}
    # index into widths[g]: the smallest allowed width ≥ what the allocation kept
    at = {g: next(i for i, w in enumerate(widths[g]) if w >= wanted[g]) for g in scores}
    out = {g: m.clone() for g, m in state.items()}

    def set_kept(g: str) -> None:
        mask = torch.ones_like(out[g])
        mask[torch.as_tensor(ranked[g][: widths[g][at[g]]], dtype=torch.long)] = False
        out[g] = mask

    for g in scores:
        set_kept(g)
    macs = cost.macs(out)
    position = {g: i for i, g in enumerate(scores)}
    while macs > goal:
        movable = [g for g in scores if at[g] > 0]
        if not movable:
            raise ImpossibleTargetError(
                f"no plan with every group a multiple of prune.round_to={multiple} reaches the "
                f"target within the floors ({macs / cost.base_macs:.3f} of the cost at the "
                "smallest widths); raise the target or lower prune.round_to"
            )
        g = max(movable, key=lambda g: (widths[g][at[g]] / max(1, wanted[g]), -position[g]))
        at[g] -= 1
        set_kept(g)
        macs = cost.macs(out)
    return out


def _pre(already: Mapping[str, Tensor] | None, g: str) -> int:
    """Units removed before the allocation: counted in `state` but not in `ranked`."""
    m = (already or {}).get(g)
    return 0 if m is None else int(m.sum())
