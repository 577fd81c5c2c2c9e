"""Which methods a comparison can tell apart: paired t-tests over seeds against the best method.

Studies of one seed share the baseline, data splits and batch order, so the methods' values at
one seed form a pair; the test is on the per-seed differences (two-sided, n = seeds where both
methods have a value). The best method is the one with the highest mean among the methods that
have a value at every seed; a method with fewer values is "incomplete" and never ranked.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Mark", "PairedTest", "paired_t", "rank"]

TEST_NAME = "two-sided paired t-test over seeds"

#: what a cell's mark means, in table order
MARKS = {
    "best": "★",  # highest mean among the complete methods
    "tied": "≈",  # not significantly different from the best (p ≥ alpha, or n < 2)
    "worse": "",  # significantly below the best
    "incomplete": "†",  # reached in fewer seeds than the others: not ranked
    "none": "",  # reached in no seed
}


@dataclass(frozen=True)
class PairedTest:
    """Best minus other, over the seeds both have."""

    n: int
    mean_diff: float
    p: float  # NaN when n < 2: the difference cannot be tested


@dataclass(frozen=True)
class Mark:
    kind: str  # a key of MARKS
    p: float  # p-value against the best (NaN for the best, incomplete, untested)
    n: int  # pairs the test used

    @property
    def symbol(self) -> str:
        return MARKS[self.kind]


def paired_t(best: Mapping[int, float], other: Mapping[int, float]) -> PairedTest:
    """Paired t-test of best[s] − other[s] over the seeds s where both are finite."""
    from scipy.stats import t as student_t

    seeds = sorted(s for s in best.keys() & other.keys() if _finite(best[s], other[s]))
    diffs = [best[s] - other[s] for s in seeds]
    n = len(diffs)
    if n < 2:
        return PairedTest(n, diffs[0] if diffs else math.nan, math.nan)
    mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
    if sd == 0.0:  # identical differences: t is 0 (no difference) or infinite
        return PairedTest(n, mean, 1.0 if mean == 0.0 else 0.0)
    t = mean / (sd / math.sqrt(n))
    return PairedTest(n, mean, float(2.0 * student_t.sf(abs(t), n - 1)))


def rank(
    values: Mapping[str, Mapping[int, float]], seeds: Sequence[int], alpha: float = 0.05
) -> dict[str, Mark]:
    """Mark each method: best, tied with the best, worse, incomplete or none.

    `values[method][seed]` is NaN (or absent) where the method has no value at that seed.
    """
    have = {m: {s: v[s] for s in seeds if s in v and _finite(v[s])} for m, v in values.items()}
    complete = [m for m in values if seeds and len(have[m]) == len(seeds)]
    marks: dict[str, Mark] = {}
    best = max(complete, key=lambda m: statistics.mean(have[m].values()), default=None)
    for m in values:
        if not have[m]:
            marks[m] = Mark("none", math.nan, 0)
        elif m not in complete:
            marks[m] = Mark("incomplete", math.nan, 0)
        elif m == best:
            marks[m] = Mark("best", math.nan, len(seeds))
        else:
            test = paired_t(have[best], have[m])
            tied = math.isnan(test.p) or test.p >= alpha
            marks[m] = Mark("tied" if tied else "worse", test.p, test.n)
    return marks


def _finite(*xs: float) -> bool:
    return all(x is not None and math.isfinite(x) for x in xs)
