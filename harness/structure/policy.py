"""The run's allocation policy: how channel scores become a plan, in one object.

Criterion normalisation, uniform or global allocation, the per-group floor and minimum, rounding
(`prune.round_to`) and the cost model it allocates against (MACs, or a latency table) are resolved
once per run by `allocation_policy` and handed to every method and hook through the context, so
a train-time method's hooks zero what the final cut removes, and a new cost model or rounding is
threaded through one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from torch import Tensor, nn

from harness.structure.allocate import Allocation, allocate
from harness.structure.cost import CostModel
from harness.structure.groups import Structure
from harness.structure.plan import Plan, apply_plan
from harness.structure.scoring import LayerView, score_groups

__all__ = ["AllocationPolicy", "allocation_policy", "prune_one_shot"]


@dataclass(frozen=True)
class AllocationPolicy:
    """`allocate()`'s settings and cost model for one run; built by `allocation_policy`."""

    cost: CostModel  # MACs (`CostModel`) or measured latency (`LatencyCostModel`)
    allocation: Allocation = "uniform"
    normalize: bool = True
    floor: float = 0.0
    min_channels: int = 1
    round_to: int = 1

    def allocate(
        self, scores: Mapping[str, Tensor], target: float, *, removed: Mapping | None = None
    ) -> Plan:
        """The plan removing the lowest-scored units until cost/base ≤ `target`."""
        return allocate(
            self.cost,
            scores,
            target,
            allocation=self.allocation,
            normalize=self.normalize,
            floor=self.floor,
            min_channels=self.min_channels,
            removed=removed,
            round_to=self.round_to,
        )

    def over(self, cost: CostModel) -> AllocationPolicy:
        """The same policy against another cost model (a re-derived structure's)."""
        return replace(self, cost=cost)


def allocation_policy(prune: Mapping[str, Any], method: Any, cost: CostModel) -> AllocationPolicy:
    """The run's policy from its `prune` section (validated already) and the method's defaults
    (`default_allocation`, `normalize_scores`) where the section leaves them null."""
    normalize = prune.get("normalize")
    return AllocationPolicy(
        cost=cost,
        allocation=prune.get("allocation") or method.default_allocation,
        normalize=method.normalize_scores if normalize is None else bool(normalize),
        floor=float(prune.get("floor", 0.0)),
        min_channels=int(prune.get("min_channels", 1)),
        round_to=int(prune.get("round_to", 1)),
    )


#: `land(allocate_to, target, model, structure, last)`: the plan of one step, where a step's plan is
#: corrected by measurement (latency target, MACs the cost model cannot see); None: `allocate_to`
Landing = Callable[[Callable[[float], Plan], float, nn.Module, Structure, bool], Plan | None]


def prune_one_shot(
    model: nn.Module,
    structure: Structure,
    policy: AllocationPolicy,
    target: float,
    score: Callable[[LayerView], Tensor | None],
    *,
    grads: bool = False,
    steps: int = 1,
    prepare: Callable[[nn.Module, Structure, AllocationPolicy], None] | None = None,
    land: Landing | None = None,
    between: Callable[[nn.Module, int], Structure] | None = None,
) -> tuple[nn.Module, Plan]:
    """Score → allocate → remove, in `steps` progressive steps (geometric targets).

    `prepare` runs before each step's scoring (the method's, e.g. Taylor's gradients); `land` may
    replace a step's plan by a measured one; `between(model, k)` runs after step k < `steps`
    (fine-tuning) and returns the compact model's re-derived structure."""
    base = policy.cost.base_macs
    plan = Plan()
    for k in range(1, steps + 1):
        step_target = target ** (k / steps) * base / policy.cost.base_macs
        if prepare is not None:
            prepare(model, structure, policy)
        scores = score_groups(model, structure, score, grads=grads)

        def allocate_to(t: float, policy: AllocationPolicy = policy, scores: dict = scores) -> Plan:
            return policy.allocate(scores, min(1.0, t))

        landed = land(allocate_to, step_target, model, structure, k == steps) if land else None
        plan = landed if landed is not None else allocate_to(step_target)
        apply_plan(model, structure, plan)
        if k < steps:
            if between is None:
                raise ValueError("prune_one_shot: steps > 1 needs `between` to re-derive groups")
            structure = between(model, k)
            policy = policy.over(CostModel(structure))
    return model, plan
