"""Pareto arithmetic and `compare` semantics on hand-made studies whose answers are worked out
in the comments: at-target picks, seed counts, paired tests, fixed-reference hypervolumes."""

from __future__ import annotations

import io
import math

import pandas as pd
import pytest

from harness.config import compose
from harness.errors import ConfigError
from harness.report.compare import StudyPoints, compare_tables, format_cell, reference_point
from harness.report.pareto import at_target, coverage, dominates, hypervolume_2d, pareto_front
from harness.report.significance import paired_t, rank

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


def test_a_point_above_the_target_never_counts():
    # (macs, val, test): the 0.151 trial is the best on both splits but misses 0.15
    pts = [(0.151, 99.0, 99.0), (0.15, 90.0, 91.0), (0.10, 85.0, 86.0)]
    assert at_target(pts, 0.15) == (0.15, 90.0, 91.0)
    assert at_target(pts, 0.1499) == (0.10, 85.0, 86.0)
    assert at_target(pts, 0.09) is None  # not reached: nothing is extrapolated
    # a declared channel-granularity slack admits it, and only then
    assert at_target(pts, 0.15, granularity=0.001) == (0.151, 99.0, 99.0)


def test_the_pick_is_made_on_validation_and_shown_on_test():
    # val prefers the 0.30 trial (95 > 93); test would prefer the 0.28 one (99 > 80). The report
    # shows the test score of the validation pick: 80, not 99 (no front rebuilt from test)
    pts = [(0.30, 95.0, 80.0), (0.28, 93.0, 99.0)]
    assert at_target(pts, 0.3) == (0.30, 95.0, 80.0)
    # equal validation: fewer MACs wins
    assert at_target([(0.3, 90.0, 1.0), (0.2, 90.0, 2.0)], 0.3) == (0.2, 90.0, 2.0)
    # between two trials nothing is interpolated: the 0.2 trial is the answer at 0.25
    assert at_target([(0.2, 80.0, 80.0), (0.3, 90.0, 90.0)], 0.25) == (0.2, 80.0, 80.0)


def test_paired_t_matches_the_closed_form():
    # with 2 degrees of freedom the t CDF is 1/2 + t / (2·sqrt(2 + t²)), so the two-sided p is
    # 1 − t / sqrt(2 + t²). Differences [1, 2, 3]: mean 2, sd 1, t = 2·sqrt(3)
    t = 2 * math.sqrt(3)
    got = paired_t({0: 90.0, 1: 92.0, 2: 94.0}, {0: 89.0, 1: 90.0, 2: 91.0})
    assert (got.n, got.mean_diff) == (3, pytest.approx(2.0))
    assert got.p == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9)  # 0.0742
    # differences [10, 11, 11]: mean 32/3, sd sqrt(1/3), t = 32
    got = paired_t({0: 90.0, 1: 92.0, 2: 94.0}, {0: 80.0, 1: 81.0, 2: 83.0})
    assert got.p == pytest.approx(1 - 32 / math.sqrt(2 + 32 * 32), rel=1e-9)  # 0.00098
    # only the seeds both have count; one pair cannot be tested
    one = paired_t({0: 90.0, 1: 92.0}, {1: 91.0, 2: 50.0})
    assert one.n == 1 and math.isnan(one.p)
    # identical differences: no spread, t infinite (or 0 when they are all 0)
    assert paired_t({0: 2.0, 1: 3.0}, {0: 1.0, 1: 2.0}).p == 0.0
    assert paired_t({0: 2.0, 1: 3.0}, {0: 2.0, 1: 3.0}).p == 1.0


def study(method: str, seed: int, trials: list[tuple[float, float, float]], wall: float):
    macs, val, test = (list(x) for x in zip(*trials, strict=True))
    costs = [{"cost_wall_s": wall, "cost_finetune_epochs": 8.0} for _ in trials]
    return StudyPoints(method, seed, f"{method}-s{seed}", list(range(len(trials))), macs, val,
                       test, costs)  # fmt: skip


def hand_made() -> list[StudyPoints]:
    """At target 0.3 (test scores per seed 0, 1, 2):
    a: 90, 92, 94 (the val pick at 0.30; its 0.28 trial scores 99 on test but less on val, and
       its 0.31 trial is above the target)                       → 92 ± 2 (3/3), best
    b: 89, 90, 91   → 90 ± 1 (3/3); a − b = [1, 2, 3], p = 0.074 → not significantly worse
    c: 80, 81, 83   → a − c = [10, 11, 11], p = 0.00098        → significantly worse
    d: 99, 99, —    (seed 2 only has a 0.31 trial)            → 99 ± 0 (2/3), not ranked
    e: only 0.5 trials                                        → not reached (0/3)
    """
    out = []
    for s in range(3):
        out.append(study("a", s, [(0.30, 95.0, 90.0 + 2 * s), (0.28, 93.0, 99.0),
                                  (0.31, 99.0, 99.0), (0.60, 98.0, 97.0)], 10.0))  # fmt: skip
        out.append(study("b", s, [(0.29, 91.0, 89.0 + s), (0.60, 97.0, 96.0)], 20.0))
        out.append(study("c", s, [(0.20, 85.0, [80.0, 81.0, 83.0][s])], 30.0))
        out.append(study("d", s, [(0.30 if s < 2 else 0.31, 99.0, 99.0)], 40.0))
        out.append(study("e", s, [(0.5, 99.0, 99.0)], 50.0))
    return out


def test_compare_at_target_seed_counts_and_significance():
    t = compare_tables(hand_made(), split="test", targets=[0.3], reference=(1.0, 10.0))
    s = t["summary"].set_index("method")
    assert s.loc["a", "q@0.3_mean"] == pytest.approx(92.0)
    assert s.loc["a", "q@0.3_std"] == pytest.approx(2.0)
    assert s.loc["a", "q@0.3_macs"] == pytest.approx(0.30)
    assert s.loc["b", "q@0.3_mean"] == pytest.approx(90.0)
    assert s.loc["c", "q@0.3_mean"] == pytest.approx(244 / 3)
    assert s.loc["d", "q@0.3_mean"] == pytest.approx(99.0)
    assert list(s["q@0.3_reached"]) == [3, 3, 3, 2, 0]
    # d has the highest mean but reached in 2 of 3 seeds: incomplete, never the best
    assert dict(s["q@0.3_mark"]) == {"a": "best", "b": "tied", "c": "worse", "d": "incomplete",
                                     "e": "none"}  # fmt: skip
    t2 = 2 * math.sqrt(3)
    assert s.loc["b", "q@0.3_p_raw"] == pytest.approx(1 - t2 / math.sqrt(2 + t2 * t2))
    p_c = 1 - 32 / math.sqrt(2 + 32 * 32)
    assert s.loc["c", "q@0.3_p_raw"] == pytest.approx(p_c)
    # Holm over the table's 6 paired tests (hypervolume: b, c, d, e against a; q@0.3: b, c).
    # e's hypervolume difference is the same in every seed (p = 0): the smallest; c's q@0.3 p is
    # the second smallest, so it is multiplied by 6 − 1 = 5
    assert len(t["tests"]) == 6
    assert s.loc["c", "q@0.3_p"] == pytest.approx(5 * p_c)
    assert s.loc["e", "hypervolume_p"] == 0.0
    cells = {m: format_cell(row, "q@0.3") for m, row in t["summary"].set_index("method").iterrows()}
    assert cells["a"] == "92.00 ± 2.00 (3/3) ★"
    assert cells["b"] == "90.00 ± 1.00 (3/3) ≈"
    assert cells["c"] == "81.33 ± 1.53 (3/3)"
    assert cells["d"] == "99.00 ± 0.00 (2/3) †"
    assert cells["e"] == "not reached (0/3)"
    # on validation, a's pick scores 95 in every seed: the val column shows the val score
    v = compare_tables(hand_made(), split="val", targets=[0.3], reference=(1.0, 10.0))
    assert v["summary"].set_index("method").loc["a", "q@0.3_mean"] == pytest.approx(95.0)


def test_hypervolume_uses_the_fixed_reference_whatever_the_methods():
    # a's validation front: (0.28, 93), (0.30, 95), (0.31, 99); on test (0.28, 99) dominates the
    # other two, so HV = 0.72 · (99 − 10) = 64.08 in every seed.
    # b (seed s): val front (0.29, 91), (0.60, 97); on test 0.31 · (79 + s) + 0.4 · 86
    studies = hand_made()
    t = compare_tables(studies, split="test", targets=[0.3], reference=(1.0, 10.0))
    s = t["summary"].set_index("method")
    assert s.loc["a", "hypervolume_mean"] == pytest.approx(64.08)
    assert s.loc["a", "hypervolume_std"] == pytest.approx(0.0)
    b = [0.31 * (79 + k) + 0.4 * 86 for k in range(3)]
    assert s.loc["b", "hypervolume_mean"] == pytest.approx(sum(b) / 3)
    assert s.loc["a", "hypervolume_mark"] == "best" and s.loc["b", "hypervolume_mark"] == "worse"
    only_ab = [sp for sp in studies if sp.method in ("a", "b")]
    t_ab = compare_tables(only_ab, split="test", targets=[0.3], reference=(1.0, 10.0))
    ab = t_ab["summary"].set_index("method")
    assert ab.loc["a", "hypervolume_mean"] == s.loc["a", "hypervolume_mean"]
    assert ab.loc["b", "hypervolume_mean"] == s.loc["b", "hypervolume_mean"]


def test_reference_point_depends_on_task_and_data_only():
    base = ["task=classification", "data=digits", "model=resnet20"]
    one = reference_point(compose([*base, "compare.methods=[l1,random,fpgm]"]))
    two = reference_point(compose([*base, "compare.methods=[l1]"]))
    assert one == two == (1.0, 10.0)  # chance accuracy of 10 digit classes, in %
    assert reference_point(compose([*base, "compare.reference.quality=50"])) == (1.0, 50.0)
    assert reference_point(compose([*base, "+data.reference_quality=20"])) == (1.0, 20.0)
    with pytest.raises(ConfigError, match="data.reference_quality"):
        reference_point(compose(["task=sr"]))


def test_summary_csv_is_typed_and_carries_costs():
    t = compare_tables(hand_made(), split="test", targets=[0.3, 0.15], reference=(1.0, 10.0))
    back = pd.read_csv(io.StringIO(t["summary"].to_csv(index=False)))
    for col in ("q@0.3_mean", "q@0.3_std", "q@0.15_mean", "hypervolume_mean", "cost_wall_s",
                "cost_finetune_epochs", "front_mean"):  # fmt: skip
        assert pd.api.types.is_float_dtype(back[col]), col
    assert pd.api.types.is_integer_dtype(back["q@0.3_reached"])
    costs = back.set_index("method")["cost_wall_s"]
    assert dict(costs) == {"a": 10.0, "b": 20.0, "c": 30.0, "d": 40.0, "e": 50.0}
    points = t["points"]
    assert {"cost_wall_s", "cost_finetune_epochs", "cost_train_images"} <= set(points.columns)


def test_rank_needs_complete_methods_to_name_a_best():
    marks = rank({"x": {0: 1.0}, "y": {0: 2.0, 1: math.nan}}, seeds=[0, 1])
    assert {m: k.kind for m, k in marks.items()} == {"x": "incomplete", "y": "incomplete"}
    marks = rank({"x": {0: 1.0}, "y": {0: 2.0}}, seeds=[0])  # one seed: nothing is testable
    assert {m: k.kind for m, k in marks.items()} == {"x": "tied", "y": "best"}
