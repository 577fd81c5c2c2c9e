"""Pareto-front arithmetic for quality (higher is better) vs MAC ratio (lower is better).

Points are `(macs_ratio, quality)` pairs. Everything here is plain Python on small lists, so the
answers are easy to check by hand (tests/harness/test_pareto.py does).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

__all__ = ["Trained", "at_target", "coverage", "dominates", "hypervolume_2d", "pareto_front"]

Point = tuple[float, float]  # (macs_ratio, quality)
Trained = tuple[float, float, float]  # (macs_ratio, val quality, test quality) of one trial


def dominates(a: Point, b: Point) -> bool:
    """`a` is no worse in both and better in one: fewer MACs and/or higher quality."""
    return a[0] <= b[0] and a[1] >= b[1] and (a[0] < b[0] or a[1] > b[1])


def pareto_front(points: Iterable[Point]) -> list[Point]:
    """The non-dominated points, sorted by MAC ratio (so quality rises along the list)."""
    front: list[Point] = []
    for p in sorted(set(points), key=lambda p: (p[0], -p[1])):
        if not front or p[1] > front[-1][1]:
            front.append(p)
    return front


def hypervolume_2d(points: Iterable[Point], reference: Point) -> float:
    """Area dominated by `points` and bounded by `reference` = (worst MAC ratio, worst quality).

    Only points better than the reference in both coordinates contribute. The area is the union
    of the rectangles [macs_i, ref_macs] × [ref_quality, quality_i]: a staircase.
    """
    ref_m, ref_q = reference
    front = [p for p in pareto_front(points) if p[0] < ref_m and p[1] > ref_q]
    area = 0.0
    for i, (m, q) in enumerate(front):
        right = front[i + 1][0] if i + 1 < len(front) else ref_m
        area += (right - m) * (q - ref_q)
    return area


def coverage(a: Sequence[Point], b: Sequence[Point]) -> float:
    """C(A, B) (Zitzler & Thiele 1998): the fraction of B's points that some point of A weakly
    dominates (at most the MACs and at least the quality). C(A, B) = 1 and C(B, A) < 1 means A's
    front is strictly better; the measure is not symmetric."""
    if not b:
        return math.nan
    covered = sum(any(pa[0] <= pb[0] and pa[1] >= pb[1] for pa in a) for pb in b)
    return covered / len(b)


def at_target(points: Sequence[Trained], target: float, granularity: float = 0.0) -> Trained | None:
    """The trial a study would pick at MAC target `target`, or None when none reaches it.

    A trial reaches the target only when its MAC ratio is at most `target + granularity`
    (`granularity`: the channel-rounding slack a report declares; 0 by default). Among those,
    the best on validation is picked (fewer MACs breaks ties): the study's own selection, which
    always lies on its validation front. Its test score is what a report shows; it is never
    rebuilt from test scores nor interpolated between trials.
    """
    bound = target + granularity
    reached = [p for p in points if p[0] <= bound and not math.isnan(p[1])]
    if not reached:
        return None
    return max(reached, key=lambda p: (p[1], -p[0]))
