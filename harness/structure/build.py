"""A model's channel groups, derived from its graph and then checked by pruning a copy.

The dependency graph can call a group prunable when the model's code disagrees: timm's attention
reshapes its qkv output to (3, heads, head_dim) with sizes fixed at construction, so removing one
qkv channel breaks the forward pass. No graph rule catches every such construct, so every
structure is checked by removing one unit of every prunable group from a copy and running it.
When that breaks, the groups that break it are found by bisection and frozen with the error.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from harness.errors import UnsupportedModelError
from harness.structure.groups import Structure, derive_structure
from harness.structure.plan import Plan, apply_plan

__all__ = ["build_structure", "check_prunable"]

log = logging.getLogger(__name__)


def build_structure(
    model: nn.Module,
    example: Tensor,
    *,
    frozen: Iterable[str] = (),
) -> Structure:
    """Trace `model` once at `example` (a batch of one) and derive its channel groups (see
    `derive_structure` for when a group is frozen); then freeze every group whose removal, tried
    on a copy, breaks the forward pass or changes the output shape."""
    structure = derive_structure(model, example, frozen=frozen)
    was_training = model.training
    model.eval()
    try:
        broken = _probe(model, structure, example)
    finally:
        model.train(was_training)
    for name, why in broken.items():
        group = structure.groups[name]
        group.prunable = False
        group.reason = f"removing one of its channels breaks the forward pass ({why})"
    if broken:
        first = next(iter(broken))
        log.warning(
            "%s: %d groups frozen, removing their channels breaks the forward pass (first: %s: %s)",
            type(model).__name__,
            len(broken),
            first,
            broken[first],
        )
    return structure


def check_prunable(model: nn.Module, example: Tensor, *, frozen: Iterable[str] = ()) -> Structure:
    """`build_structure`, refusing a model with no prunable group in one line before any work."""
    structure = build_structure(model, example, frozen=frozen)
    if not structure.prunable:
        reasons = sorted({g.reason for g in structure.groups.values()})
        raise UnsupportedModelError(
            f"{type(model).__name__} has no prunable channel group ({len(structure.groups)} "
            f"groups, frozen because: {'; '.join(reasons)[:300]}); prune another model"
        )
    return structure


def _shapes(out: object) -> object:
    if isinstance(out, Tensor):
        return tuple(out.shape)
    if isinstance(out, (tuple, list)):
        return tuple(_shapes(o) for o in out)
    if isinstance(out, dict):
        return {k: _shapes(v) for k, v in out.items()}
    return type(out).__name__


@torch.no_grad()
def _breaks(
    model: nn.Module, structure: Structure, example: Tensor, names: list[str], want: object
) -> str:
    """'' when removing the last unit of each group in `names` leaves a copy that runs and gives
    outputs of the shapes `want` (the original's); else what went wrong, in one line."""
    trial = copy.deepcopy(model)
    plan = Plan({g: list(range(structure.groups[g].size - 1)) for g in names})
    try:
        apply_plan(trial, structure, plan)
        got = _shapes(trial(example))
    except Exception as e:  # any failure of the compact copy is the finding
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
    return "" if got == want else f"output shapes {got} instead of {want}"


def _probe(model: nn.Module, structure: Structure, example: Tensor) -> dict[str, str]:
    """Group → why, for the prunable groups that cannot lose a unit. One trial when none fails;
    otherwise bisection, repeated until the remaining groups pass together."""
    broken: dict[str, str] = {}
    remaining = [g.name for g in structure.prunable]
    if not remaining:
        return broken
    with torch.no_grad():
        want = _shapes(model(example))

    def bisect(names: list[str], why: str) -> None:
        if len(names) == 1:
            broken[names[0]] = why
            return
        found = len(broken)
        half = len(names) // 2
        for part in (names[:half], names[half:]):
            part_why = _breaks(model, structure, example, part, want)
            if part_why:
                bisect(part, part_why)
        if len(broken) == found:  # each half runs alone: they break only together
            broken.update(dict.fromkeys(names, f"together with {len(names) - 1} others: {why}"))

    while remaining:
        why = _breaks(model, structure, example, remaining, want)
        if not why:
            break
        bisect(remaining, why)
        remaining = [n for n in remaining if n not in broken]
    return broken
