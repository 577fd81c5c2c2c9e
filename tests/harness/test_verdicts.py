"""Verdicts that survive a second look: the tie-break is the stated one, Holm's correction on
known p-values, the effect's confidence interval and the seeds-needed line, all worked by hand."""

from __future__ import annotations

import math

import pytest

from harness.errors import ConfigError
from harness.report.compare import StudyPoints, _markdown, compare_tables
from harness.report.pareto import at_target
from harness.report.significance import holm, paired_t, rank, rank_table, seeds_needed


def test_holm_on_known_p_values():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → raised to 0.06
    # (step-down: an adjusted p never falls below the one before it); NaN is no test
    got = holm([0.01, 0.04, 0.03, math.nan, 0.005])
    assert got[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(got[3]) and got[4] == pytest.approx(0.02)
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_holm_turns_two_marginal_marks_into_ties():
    # two columns with the same differences x − y = [3, 4.5, 6.4]: p ≈ 0.042 each, significant
    # alone; as a family of two, Holm multiplies the smaller by 2 and the larger by 1, raised
    # to the smaller's: both become 2p ≈ 0.084
    seeds = [0, 1, 2]
    weak = {"x": {0: 3.0, 1: 5.0, 2: 7.0}, "y": {0: 0.0, 1: 0.5, 2: 0.6}}
    p = paired_t(weak["x"], weak["y"]).p
    assert 0.025 < p < 0.05
    none = rank_table({"a": weak, "b": weak}, seeds, 0.05, correction="none")
    assert none["a"]["y"].kind == none["b"]["y"].kind == "worse"
    assert none["b"]["y"].p == pytest.approx(p)
    holm_marks = rank_table({"a": weak, "b": weak}, seeds, 0.05)  # holm by default
    for col in ("a", "b"):
        mark = holm_marks[col]["y"]
        assert (mark.kind, mark.p, mark.p_raw) == ("tied", pytest.approx(2 * p), pytest.approx(p))
        assert holm_marks[col]["x"].kind == "best"
    # one column alone is a family of one test: unchanged
    assert rank(weak, seeds)["y"].kind == "worse"
    with pytest.raises(ConfigError, match="compare.correction=bonferoni"):
        rank(weak, seeds, correction="bonferoni")


def test_effect_size_and_its_confidence_interval():
    # differences [1, 2, 3]: mean 2, sd 1, n 3; t(0.975, 2) = 4.302653 → 2 ± 4.302653 / √3
    test = paired_t({0: 90.0, 1: 92.0, 2: 94.0}, {0: 89.0, 1: 90.0, 2: 91.0})
    low, high = test.ci()
    half = 4.302652729911275 / math.sqrt(3)
    assert (low, high) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert test.dz == pytest.approx(2.0)
    assert math.isnan(paired_t({0: 1.0}, {0: 0.0}).ci()[0])  # one pair: no interval


def test_seeds_needed_matches_the_power_tables():
    # two-sided paired t, α 0.05, 80 % power (G*Power / Cohen's tables): d_z 0.5 → 34, 1 → 10
    assert seeds_needed(0.5) == 34
    assert seeds_needed(1.0) == 10
    assert seeds_needed(-1.0) == 10  # the direction does not matter
    assert seeds_needed(0.0) is None and seeds_needed(math.nan) is None
    assert seeds_needed(math.inf) == 2
    assert seeds_needed(0.01) == 1001  # beyond the search: "> 1000"


def studies_with_ties() -> list[StudyPoints]:
    """Seed 0: two trials tie on validation (90) under 0.3: 0.25 and 0.2 MACs → fewer MACs
    (trial 1) wins although trial 0 scores higher on test. Seed 1: an exact tie on both → the
    lower trial number (0). Method n never ties."""

    def sp(method: str, seed: int, trials: list[tuple[float, float, float]]) -> StudyPoints:
        macs, val, test = (list(x) for x in zip(*trials, strict=True))
        return StudyPoints(method, seed, f"{method}-s{seed}", list(range(len(trials))), macs,
                           val, test)  # fmt: skip

    return [
        sp("m", 0, [(0.25, 90.0, 95.0), (0.20, 90.0, 80.0)]),
        sp("m", 1, [(0.20, 90.0, 70.0), (0.20, 90.0, 99.0)]),
        sp("n", 0, [(0.30, 85.0, 85.0)]),
        sp("n", 1, [(0.30, 86.0, 86.0)]),
    ]


def test_the_tie_break_is_fewer_macs_then_the_lower_trial_and_the_report_says_so():
    s0, s1 = studies_with_ties()[:2]
    assert at_target(s0.trained(), 0.3) == (0.20, 90.0, 80.0)
    assert at_target(s1.trained(), 0.3) == (0.20, 90.0, 70.0)  # trial 0, not 1
    t = compare_tables(studies_with_ties(), split="test", targets=[0.3], reference=(1.0, 10.0))
    assert t["summary"].set_index("method").loc["m", "q@0.3_mean"] == pytest.approx(75.0)
    ties = t["ties"].set_index("seed")
    assert list(ties["method"]) == ["m", "m"]
    assert dict(ties["decided_by"]) == {0: "fewer MACs", 1: "lower trial number"}
    assert dict(ties["trial"]) == {0: 1, 1: 0}
    md = _markdown(t, title="x", split="test", targets=[0.3], granularity=0.0, alpha=0.05,
                   provenance=[])  # fmt: skip
    assert "a tie on validation goes to the trial with fewer MACs, then to the lower trial" in md
    assert "2 picks were decided by such a tie (m 2)" in md
    assert "Holm-corrected over this table's" in md


def test_the_report_lists_effects_and_the_seeds_a_difference_would_need():
    t = compare_tables(studies_with_ties(), split="test", targets=[0.3], reference=(1.0, 10.0))
    q = t["tests"].set_index("column").loc["q@0.3"]
    # m − n on test: [80 − 85, 70 − 86] → n is the best (85.5 > 75): best − m = [5, 16]
    assert (q["vs"], q["method"], q["n"]) == ("n", "m", 2)
    assert q["diff"] == pytest.approx(10.5)
    assert q["dz"] == pytest.approx(10.5 / math.sqrt(60.5))
    assert q["p"] >= q["p_raw"]
    assert q["seeds_needed"] == seeds_needed(10.5 / math.sqrt(60.5))
    md = _markdown(t, title="x", split="test", targets=[0.3], granularity=0.0, alpha=0.05,
                   provenance=[])  # fmt: skip
    assert "difference [95 % CI]" in md and "p uncorrected" in md and "p (Holm)" in md
    assert f"would need {int(q['seeds_needed'])}" in md
