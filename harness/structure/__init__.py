"""Structural pruning: channel groups, plans, the analytic cost model and MAC-target allocation."""

from harness.structure.allocate import allocate, allocation_target, check_target, floor_of
from harness.structure.build import build_structure, check_prunable
from harness.structure.cost import CostModel
from harness.structure.fvcore_landing import loosest_plan
from harness.structure.groups import ChannelGroup, Slot, Structure
from harness.structure.plan import (
    Plan,
    apply_plan,
    channel_config,
    load_pruned,
    masked_copy,
    resize_to,
    save_pruned,
)
from harness.structure.policy import AllocationPolicy, allocation_policy, prune_one_shot
from harness.structure.scoring import LayerView, score_groups

__all__ = [
    "AllocationPolicy",
    "ChannelGroup",
    "CostModel",
    "LayerView",
    "Plan",
    "Slot",
    "Structure",
    "allocate",
    "allocation_policy",
    "allocation_target",
    "apply_plan",
    "build_structure",
    "channel_config",
    "check_prunable",
    "check_target",
    "floor_of",
    "load_pruned",
    "loosest_plan",
    "masked_copy",
    "prune_one_shot",
    "resize_to",
    "save_pruned",
    "score_groups",
]
