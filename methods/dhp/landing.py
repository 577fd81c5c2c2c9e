"""Landing DHP's compact network on its target: cut the smallest-|z| units until the ratio lies
in [target − land_within, target], searching a few swaps where one unit is coarser than the band
(tiny nets), so a search never stops far under the target it was asked for.

The ratio is the MAC ratio, or with `target_kind=latency` the whole network's latency ratio the
run's latency table predicts (`stop_cost`): the stop rule and the landing then read the same cost
the allocator of every other method does.

With `prune.round_to=N` the landed cut is rounded as the shared allocation rounds
(`round_kept`: harness/structure/rounding.py's rules and floors) and then filled back up to the
target one block of N at a time, so the kept counts are multiples of N at or below the target
and as close under it as whole blocks allow.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from harness.structure import CostModel
from harness.structure.latency import LatencyCostModel
from harness.structure.rounding import allowed_widths, round_removed
from methods.dhp.latents import with_ties

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["StopCost", "check_rounding", "cut_to_target", "round_kept", "stop_cost"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StopCost:
    """What DHP's stop rule and landing read: `ratio(removed)` in `kind` units and the `target`
    in the same units. `kind` macs: the cost model's MAC ratio; latency: the whole network's
    predicted latency (the table's layer sum plus its calibrated residual) over the unpruned
    model's, so the landing band is a band of the latency ratio the user asked for."""

    model: CostModel
    target: float
    kind: str = "macs"

    def ratio(self, removed: Mapping[str, Tensor] | None = None) -> float:
        if isinstance(self.model, LatencyCostModel):
            return self.model.predict_ms(removed) / self.model.predict_ms()
        return self.model.ratio(removed)

    def record(self, removed: Mapping[str, Tensor]) -> dict[str, float]:
        """The landed plan's MAC ratio, and under a latency cost its predicted latency ratio."""
        if not isinstance(self.model, LatencyCostModel):
            return {"macs_ratio": self.model.ratio(removed)}
        return {
            "macs_ratio": CostModel(self.model.structure).ratio(removed),
            "latency_ratio_predicted": self.ratio(removed),
        }

    def units(self, ratio: float) -> float:
        """`ratio` in the cost model's own units (MACs, or the table's layer sum in ms): a plan's
        `self.ratio` is ≤ `ratio` exactly when its `model.macs` is ≤ this."""
        fixed = self.model.fixed_ms if isinstance(self.model, LatencyCostModel) else 0.0
        return ratio * (self.model.base_macs + fixed) - fixed


def stop_cost(cost: CostModel, target: float) -> StopCost:
    """The run's cost (`ctx.cost`) as DHP's stop cost, at the run's target (`ctx.target`).

    Under a latency table the run's target is an allocation target, a ratio of the table's
    layer sum (`latency_allocation_target`); it is turned back into the whole-network latency
    ratio it was made from: (t · layers + residual) / (layers + residual)."""
    if not isinstance(cost, LatencyCostModel):
        return StopCost(cost, target)
    layers, fixed = cost.base_macs, cost.fixed_ms
    return StopCost(cost, (target * layers + fixed) / (layers + fixed), "latency")


def cut_to_target(
    cost: CostModel | StopCost,
    scores: Mapping[str, Tensor],
    removed: Mapping[str, Tensor],
    target: float,
    *,
    min_channels: int = 4,
    ties: Mapping[str, str] | None = None,
    floor: float | None = None,
) -> tuple[dict[str, Tensor], int]:
    """Remove the smallest-|z| remaining units (one global ranking, as the threshold T is one
    global value) until `cost.ratio` (the MAC ratio, or a `StopCost`'s) is ≤ `target`, keeping
    ≥ min(min_channels, size) units per group; tied groups follow their owner. Returns the new
    masks (tied groups set from their owners) and the count of units removed. Stops short, with
    a warning, when the floors leave nothing to cut.

    With `floor`, a unit whose removal would take the ratio under `floor` is passed over for the
    next-smallest; if the ranking cannot land in [floor, target] that way (on small nets one unit
    can be several % of the MACs), `_land` moves single units in or out, or swaps pairs, until
    it does."""
    ties = dict(ties or {})
    state = {g: m.clone() for g, m in removed.items()}
    heap = [
        (float(s[i]), g, i) for g, s in scores.items() for i in range(len(s)) if not state[g][i]
    ]
    heapq.heapify(heap)
    ratio = cost.ratio(with_ties(state, ties))
    while ratio > target and heap:
        _, g, i = heapq.heappop(heap)
        if _at_floor(state[g], min_channels):
            continue
        state[g][i] = True
        after = cost.ratio(with_ties(state, ties))
        if floor is not None and after < floor:
            state[g][i] = False  # passed over: it would land under the floor
            continue
        ratio = after
    if floor is not None and not floor <= ratio <= target:
        ratio = _land(cost, scores, state, target, floor, min_channels=min_channels, ties=ties)
    if ratio > target:
        log.warning(
            "dhp: cannot cut to %.3f: %.3f is the least the ≥ %d-unit floor allows (%s)",
            target, ratio, min_channels, getattr(cost, "kind", "macs"),
        )  # fmt: skip
    cut = sum(int((state[g] & ~removed[g]).sum()) for g in scores)
    return with_ties(state, ties), cut


class _Tied:
    """The cost model seen through DHP's ties (tied groups follow their owner), with the two
    members `round_removed` reads."""

    def __init__(self, model: CostModel, ties: Mapping[str, str]) -> None:
        self.model, self.ties, self.base_macs = model, ties, model.base_macs

    def macs(self, removed: Mapping[str, Tensor]) -> float:
        return self.model.macs(with_ties(dict(removed), self.ties))


def round_kept(
    cost: StopCost,
    scores: Mapping[str, Tensor],
    removed: Mapping[str, Tensor],
    goal: float,
    *,
    multiple: int,
    keep_min: Mapping[str, int],
    ties: Mapping[str, str] | None = None,
) -> dict[str, Tensor]:
    """`removed` with every group of `scores` keeping an allowed width (a multiple of `multiple`
    ≥ `keep_min`, or the whole group) and `cost.ratio` ≤ `goal`: rounded by `round_removed` (up
    to the next multiple with the highest-|z| units, then blocks of the lowest-|z| off until at
    or below the goal), then filled: while some group can take its next width and stay at or
    below the goal, the one that lands nearest under it does. Raises ImpossibleTargetError
    (naming prune.round_to) where no allowed widths reach the goal."""
    ties = dict(ties or {})
    tied, units = _Tied(cost.model, ties), cost.units(goal)
    state = {g: m.clone() for g, m in removed.items()}
    out = round_removed(
        tied, scores, state, already=None, goal=units, keep_min=keep_min, multiple=multiple
    )
    order = {
        g: torch.argsort(s.detach().cpu(), descending=True, stable=True) for g, s in scores.items()
    }
    while True:
        best: tuple[float, str, Tensor] | None = None
        for g in scores:
            kept = int((~out[g]).sum())
            wider = [w for w in allowed_widths(len(out[g]), multiple, keep_min[g]) if w > kept]
            if not wider:
                continue
            mask = torch.ones_like(out[g])
            mask[order[g][: wider[0]]] = False
            macs = tied.macs({**out, g: mask})
            if macs <= units and (best is None or macs > best[0]):
                best = (macs, g, mask)
        if best is None:
            return with_ties(out, ties)
        out[best[1]] = best[2]


def check_rounding(
    cost: StopCost,
    sizes: Mapping[str, int],
    *,
    multiple: int,
    keep_min: Mapping[str, int],
    ties: Mapping[str, str] | None = None,
) -> None:
    """Refuse (ImpossibleTargetError naming prune.round_to, one line) a target that no plan of
    allowed widths reaches: every group at its smallest allowed width is already above it."""
    scores = {g: torch.zeros(n) for g, n in sizes.items()}
    state = {g: torch.arange(n) >= keep_min[g] for g, n in sizes.items()}
    round_removed(
        _Tied(cost.model, dict(ties or {})), scores, state, already=None,
        goal=cost.units(cost.target), keep_min=keep_min, multiple=multiple,
    )  # fmt: skip


def _at_floor(mask: Tensor, min_channels: int) -> bool:
    return int((~mask).sum()) <= min(min_channels, len(mask))


#: `_land`'s limits: rounds, states kept per round, pair swaps only while removed × kept is small
LAND_ROUNDS, LAND_BEAM, LAND_PAIRS = 24, 8, 40_000

Move = tuple[tuple[str, int], ...]


def _land(
    cost: CostModel | StopCost,
    scores: Mapping[str, Tensor],
    state: dict[str, Tensor],
    target: float,
    floor: float,
    *,
    min_channels: int,
    ties: Mapping[str, str],
) -> float:
    """Move `state` (in place) into ratio [floor, target] by a beam search over single-unit
    moves (cut a kept unit, keep a removed one) and pair swaps.

    The beam keeps the states nearest the band, one per MAC ratio (units of one layer are
    interchangeable for the cost; of those, the one that disturbs the |z| ranking least: cutting
    a unit costs its |z|, keeping a removed one gains it), so a few moves away from the band, and
    through states above the target, are explored: on coarse nets the band is often a swap or two
    from where the greedy cut stopped. Leaves the best state found (≤ target first, then nearest
    the band, then least disturbance) and returns its ratio."""
    groups = list(scores)

    def ratio_of(st: dict[str, Tensor]) -> float:
        return cost.ratio(with_ties(st, ties))

    def distance(r: float) -> float:
        return max(floor - r, r - target, 0.0)

    def final_rank(r: float, penalty: float) -> tuple[bool, float, float]:
        return (r > target, distance(r), penalty)

    ratio0 = ratio_of(state)
    best = (final_rank(ratio0, 0.0), {g: m.clone() for g, m in state.items()})
    beam: list[tuple[float, dict[str, Tensor]]] = [(0.0, best[1])]
    visited = {ratio0}
    for _ in range(LAND_ROUNDS):
        if best[0][:2] == (False, 0.0):
            break
        found: dict[float, tuple[float, int, Move]] = {}  # ratio → (penalty, parent, move)
        for parent, (penalty, st) in enumerate(beam):
            kept = [
                (g, i)
                for g in groups
                if not _at_floor(st[g], min_channels)
                for i in (~st[g]).nonzero().flatten().tolist()
            ]
            gone = [(g, i) for g in groups for i in st[g].nonzero().flatten().tolist()]
            moves: list[Move] = [(u,) for u in kept + gone]
            if len(kept) * len(gone) <= LAND_PAIRS:
                moves += [(v, u) for v in kept for u in gone]
            for move in moves:
                cost_of = penalty
                for g, i in move:
                    z = float(scores[g][i])
                    cost_of += -z if st[g][i] else z
                    st[g][i] = not bool(st[g][i])
                if not any(_floor_broken(st[g], min_channels) for g, _ in move):
                    r = ratio_of(st)
                    if r not in visited and (r not in found or cost_of < found[r][0]):
                        found[r] = (cost_of, parent, move)
                for g, i in move:
                    st[g][i] = not bool(st[g][i])
        if not found:
            break
        chosen = sorted(found.items(), key=lambda f: (distance(f[0]), f[1][0]))[:LAND_BEAM]
        next_beam = []
        for r, (penalty, parent, move) in chosen:
            st = {g: m.clone() for g, m in beam[parent][1].items()}
            for g, i in move:
                st[g][i] = not bool(st[g][i])
            next_beam.append((penalty, st))
            if final_rank(r, penalty) < best[0]:
                best = (final_rank(r, penalty), st)
        visited.update(found)
        beam = next_beam
    state.update(best[1])
    return ratio_of(state)


def _floor_broken(mask: Tensor, min_channels: int) -> bool:
    return int((~mask).sum()) < min(min_channels, len(mask))
