"""Which methods a comparison can tell apart: paired t-tests over seeds against the best method.

Studies of one seed share the baseline, data splits and batch order, so the methods' values at
one seed form a pair; the test is on the per-seed differences (two-sided, n = seeds where both
methods have a value). The best method is the one with the highest mean among the methods that
have a value at every seed; a method with fewer values is "incomplete" and never ranked.

A table runs many such tests (every column, every method), so its p-values are corrected for
multiple comparisons (Holm's step-down, on by default: `rank_table`); the uncorrected p stays
beside it. Each test also carries its effect: the mean paired difference with a t confidence
interval over seeds, Cohen's d_z, and how many seeds the observed spread would need to detect the
observed difference with 80 % power (`seeds_needed`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from harness.errors import ConfigError

__all__ = [
    "CORRECTIONS",
    "Mark",
    "PairedTest",
    "holm",
    "paired_t",
    "rank",
    "rank_family",
    "rank_table",
    "seeds_needed",
]

TEST_NAME = "two-sided paired t-test over seeds"
#: multiple-comparison corrections over one table's paired tests
CORRECTIONS = ("holm", "none")
#: power the `seeds_needed` line is computed for
POWER = 0.8
#: `seeds_needed` searches up to this many seeds (beyond: reported as "> MAX_SEEDS")
MAX_SEEDS = 1000

#: what a cell's mark means, in table order
MARKS = {
    "best": "★",  # highest mean among the complete methods
    "tied": "≈",  # not significantly different from the best (p ≥ alpha, or n < 2)
    "worse": "",  # significantly below the best
    "incomplete": "†",  # reached in fewer seeds than the others: not ranked
    "none": "",  # reached in no seed
    "control": "",  # a control row: compared with its method, never ranked
}
#: a method cell whose advantage over its own Scratch-B control is not significant
NOT_BETTER = "‡"


@dataclass(frozen=True)
class PairedTest:
    """Best minus other, over the seeds both have."""

    n: int
    mean_diff: float
    p: float  # NaN when n < 2: the difference cannot be tested
    sd: float = math.nan  # standard deviation of the paired differences (NaN when n < 2)

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        """The t confidence interval of the mean difference over seeds (NaN when n < 2)."""
        from scipy.stats import t as student_t

        if self.n < 2 or math.isnan(self.sd):
            return math.nan, math.nan
        half = float(student_t.ppf(0.5 + level / 2, self.n - 1)) * self.sd / math.sqrt(self.n)
        return self.mean_diff - half, self.mean_diff + half

    @property
    def dz(self) -> float:
        """Cohen's d_z: the mean difference in units of its spread over seeds (±inf when the
        differences do not vary, NaN when they cannot be measured)."""
        if self.n < 2 or math.isnan(self.sd):
            return math.nan
        if self.sd == 0.0:
            return 0.0 if self.mean_diff == 0.0 else math.copysign(math.inf, self.mean_diff)
        return self.mean_diff / self.sd


@dataclass(frozen=True)
class Mark:
    kind: str  # a key of MARKS
    p: float  # p-value the mark was decided on: corrected when a correction is on (NaN: untested)
    n: int  # pairs the test used
    p_raw: float = math.nan  # the uncorrected p of the same test
    test: PairedTest | None = None  # best − this method, when tested

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
        return PairedTest(n, mean, 1.0 if mean == 0.0 else 0.0, 0.0)
    t = mean / (sd / math.sqrt(n))
    return PairedTest(n, mean, float(2.0 * student_t.sf(abs(t), n - 1)), sd)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order; NaN (untested) stays NaN and does
    not count as a test. Sorted ascending, the i-th smallest of m gets max over j ≤ i of
    min(1, (m − j + 1) · p_(j)): it controls the family-wise error rate at α without assuming
    the tests are independent."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m = len(order)
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for j, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - j) * p))
        adjusted[i] = running
    return adjusted


def seeds_needed(dz: float, alpha: float = 0.05, power: float = POWER) -> int | None:
    """The fewest seeds n (≥ 2) at which a two-sided paired t-test at `alpha` detects a true
    standardised difference `dz` (Cohen's d_z) with probability `power` (noncentral t).
    None when there is no difference to detect (dz 0 or NaN); MAX_SEEDS + 1 when more than
    MAX_SEEDS would be needed."""
    from scipy.stats import nct
    from scipy.stats import t as student_t

    if math.isnan(dz) or dz == 0.0:
        return None
    if math.isinf(dz):
        return 2
    d = abs(dz)

    def achieved(n: int) -> float:
        crit = float(student_t.ppf(1 - alpha / 2, n - 1))
        nc = d * math.sqrt(n)
        upper, lower = float(nct.sf(crit, n - 1, nc)), float(nct.cdf(-crit, n - 1, nc))
        return (0.0 if math.isnan(upper) else upper) + (0.0 if math.isnan(lower) else lower)

    if achieved(MAX_SEEDS) < power:
        return MAX_SEEDS + 1
    lo, hi = 2, MAX_SEEDS  # power rises with n: bisect for the first n that reaches it
    while lo < hi:
        mid = (lo + hi) // 2
        if achieved(mid) >= power:
            hi = mid
        else:
            lo = mid + 1
    return lo


def rank(
    values: Mapping[str, Mapping[int, float]],
    seeds: Sequence[int],
    alpha: float = 0.05,
    correction: str = "holm",
) -> dict[str, Mark]:
    """Mark each method: best, tied with the best, worse, incomplete or none.

    `values[method][seed]` is NaN (or absent) where the method has no value at that seed. The
    column's tests are corrected as one family (`rank_table` corrects a whole table at once).
    """
    return rank_table({"_": values}, seeds, alpha, correction)["_"]


def rank_table(
    columns: Mapping[str, Mapping[str, Mapping[int, float]]],
    seeds: Sequence[int],
    alpha: float = 0.05,
    correction: str = "holm",
) -> dict[str, dict[str, Mark]]:
    """`rank` for every column of one table, the table's paired tests corrected together
    (`correction`: holm or none); each mark keeps the uncorrected p as `p_raw`."""
    return rank_family(columns, seeds, alpha, correction)[0]


def rank_family(
    columns: Mapping[str, Mapping[str, Mapping[int, float]]],
    seeds: Sequence[int],
    alpha: float = 0.05,
    correction: str = "holm",
    extra: Mapping[Any, PairedTest] | None = None,
) -> tuple[dict[str, dict[str, Mark]], dict[Any, Mark]]:
    """`rank_table` plus `extra` paired tests (a − b, e.g. a method against its control) in the
    same family: an extra test is "better" when its corrected p < alpha and a is ahead, else
    "not better"."""
    extra = dict(extra or {})
    if correction not in CORRECTIONS:
        raise ConfigError(
            f"compare.correction={correction}; known: {', '.join(CORRECTIONS)} (holm: Holm's "
            "step-down over the table's paired tests)"
        )
    raw = {col: _rank_raw(values, seeds) for col, values in columns.items()}
    tested = [(col, m) for col, marks in raw.items() for m, mk in marks.items() if mk.test]
    pvals = [raw[col][m].p_raw for col, m in tested] + [t.p for t in extra.values()]
    adjusted = holm(pvals) if correction == "holm" else list(pvals)
    for (col, m), p in zip(tested, adjusted, strict=False):
        mk = raw[col][m]
        tied = math.isnan(p) or p >= alpha
        raw[col][m] = replace(mk, kind="tied" if tied else "worse", p=p)
    decided = {}
    for (key, test), p in zip(extra.items(), adjusted[len(tested) :], strict=True):
        better = not math.isnan(p) and p < alpha and test.mean_diff > 0
        decided[key] = Mark("better" if better else "not better", p, test.n, test.p, test)
    return raw, decided


def _rank_raw(values: Mapping[str, Mapping[int, float]], seeds: Sequence[int]) -> dict[str, Mark]:
    """Marks before any decision: best, incomplete, none; every other method carries its paired
    test against the best (kind "tied" until `rank_table` decides)."""
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
            marks[m] = Mark("tied", test.p, test.n, test.p, test)
    return marks


def _finite(*xs: float) -> bool:
    return all(x is not None and math.isfinite(x) for x in xs)
