"""Pareto arithmetic on hand-made fronts whose answers are worked out in the comments."""

from __future__ import annotations

import math

import pytest

from harness.report.compare import StudyPoints, compare_tables
from harness.report.pareto import coverage, dominates, hypervolume_2d, pareto_front, quality_at

# (macs_ratio, quality): A is better than B everywhere; C trades off against A
A = [(0.3, 80.0), (0.5, 90.0), (0.7, 95.0)]
B = [(0.3, 70.0), (0.5, 85.0), (0.7, 90.0)]
C = [(0.2, 82.0), (0.9, 99.0)]


def test_dominance_and_front():
    assert dominates((0.3, 80.0), (0.5, 80.0)) and dominates((0.3, 80.0), (0.3, 79.0))
    assert not dominates((0.3, 80.0), (0.3, 80.0))  # equal points do not dominate
    assert not dominates((0.2, 70.0), (0.3, 80.0))  # a trade-off
    assert pareto_front(A + B) == A
    # duplicates collapse; a dominated point between front points is dropped
    assert pareto_front([(0.5, 90.0), (0.5, 90.0), (0.6, 85.0), (0.3, 80.0)]) == [
        (0.3, 80.0),
        (0.5, 90.0),
    ]


def test_hypervolume_is_the_staircase_area():
    # reference (1.0, 60): A's staircase is 0.2·20 + 0.2·30 + 0.3·35 = 4 + 6 + 10.5
    assert hypervolume_2d(A, (1.0, 60.0)) == pytest.approx(20.5)
    # B: 0.2·10 + 0.2·25 + 0.3·30 = 16
    assert hypervolume_2d(B, (1.0, 60.0)) == pytest.approx(16.0)
    # dominated points add nothing; points outside the reference box add nothing
    assert hypervolume_2d(A + B + [(1.2, 99.0), (0.4, 50.0)], (1.0, 60.0)) == pytest.approx(20.5)
    assert hypervolume_2d([], (1.0, 60.0)) == 0.0
    # one point: a rectangle
    assert hypervolume_2d([(0.25, 70.0)], (1.0, 60.0)) == pytest.approx(0.75 * 10)


def test_coverage_is_asymmetric():
    assert coverage(A, B) == 1.0 and coverage(B, A) == 0.0
    # A covers neither of C's points; C covers A's (0.3, 80) through (0.2, 82): 1 of 3
    assert coverage(A, C) == 0.0
    assert coverage(C, A) == pytest.approx(1 / 3)
    assert math.isnan(coverage(A, []))


def test_quality_at_targets_marks_how_it_was_obtained():
    assert quality_at(A, 0.5) == (90.0, "exact")
    assert quality_at(A, 0.505, tol=0.01) == (90.0, "exact")
    value, how = quality_at(A, 0.4)
    assert how == "interpolated" and value == pytest.approx(85.0)
    assert quality_at(A, 0.8) == (95.0, "fewer MACs")
    value, how = quality_at(A, 0.1)
    assert how == "not reached" and math.isnan(value)


def test_compare_tables_summary_and_dominance():
    def study(method, seed, pts):
        macs, q = zip(*pts, strict=True)
        return StudyPoints(method, seed, f"{method}-s{seed}", list(range(len(pts))), list(macs),
                           list(q), list(q))  # fmt: skip

    studies = [study("a", 0, A), study("a", 1, A), study("b", 0, B)]
    t = compare_tables(studies, split="test", targets=[0.5, 0.4], reference=(1.0, 60.0))
    summary = t["summary"].set_index("method")
    assert summary.loc["a", "hypervolume"] == "20.500 ± 0.000"
    assert summary.loc["b", "hypervolume"] == "16.000"
    assert summary.loc["a", "q@0.5"] == "90.00 ± 0.00"
    assert summary.loc["b", "q@0.4"] == "~77.50"  # interpolated between (0.3, 70) and (0.5, 85)
    assert t["dominance"].loc["a", "b"] == 1.0 and t["dominance"].loc["b", "a"] == 0.0
    assert int(t["points"].on_front.sum()) == 9
