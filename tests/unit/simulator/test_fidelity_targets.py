"""The fidelity targets' arithmetic on hand-made samples."""

from __future__ import annotations

import math

import pytest

from simulator.fidelity_targets import (
    Estimate,
    Kind,
    Verdict,
    check_order,
    estimate,
    format_judgements,
    judge,
)


def test_estimate_is_the_student_t_interval() -> None:
    e = estimate([9.0, 10.0, 11.0])  # mean 10, sd 1, t(0.975, 2) = 4.3027
    assert e.mean == 10.0 and e.n == 3
    assert e.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert e.relative_half_width == pytest.approx(0.24841, rel=1e-4)
    with pytest.raises(ValueError, match="at least 2 samples"):
        estimate([1.0])


def test_central_figures_take_ten_percent_or_the_real_ci_capped_at_twenty() -> None:
    tight = Estimate(10.0, 0.2, 3)  # 2 % half-width: the 10 % floor applies
    assert judge("e2e mean", Kind.CENTRAL, tight, 10.9).verdict is Verdict.MET
    assert judge("e2e mean", Kind.CENTRAL, tight, 11.1).verdict is Verdict.MISSED
    wide = Estimate(10.0, 1.4, 3)  # 14 %: the tolerance widens to it
    j = judge("e2e mean", Kind.CENTRAL, wide, 8.7)
    assert j.tolerance == pytest.approx(0.14) and j.error == pytest.approx(-0.13)
    assert j.verdict is Verdict.MET
    assert judge("e2e mean", Kind.CENTRAL, wide, 8.5).verdict is Verdict.MISSED


def test_a_real_ci_wider_than_fifteen_percent_is_inconclusive_never_met() -> None:
    noisy = Estimate(10.0, 1.6, 3)
    assert judge("ttft p50", Kind.CENTRAL, noisy, 10.0).verdict is Verdict.INCONCLUSIVE
    assert judge("ttft p50", Kind.CENTRAL, Estimate(10.0, 0.1, 2), 10.0).verdict \
        is Verdict.INCONCLUSIVE  # fewer than 3 repetitions


def test_tail_count_and_points_rules() -> None:
    real = Estimate(100.0, 5.0, 4)
    assert judge("e2e p99", Kind.TAIL, real, 119.0).verdict is Verdict.MET
    assert judge("e2e p99", Kind.TAIL, real, 121.0).verdict is Verdict.MISSED
    assert judge("recomputed tokens", Kind.COUNT, real, 114.0).verdict is Verdict.MET
    assert judge("preemptions", Kind.COUNT, real, 84.0).verdict is Verdict.MISSED
    share = Estimate(40.0, 8.0, 3)  # a percentage: judged in points, its CI not relative
    j = judge("preserve %", Kind.POINTS, share, 44.5)
    assert j.error == pytest.approx(4.5) and j.verdict is Verdict.MET
    assert judge("attainment interactive %", Kind.POINTS, share, 34.0).verdict is Verdict.MISSED


def test_order_is_checked_only_where_the_real_cis_separate() -> None:
    fcfs, lamps = Estimate(20.0, 1.0, 3), Estimate(15.0, 1.0, 3)
    assert check_order("e2e mean", "fcfs", fcfs, 19.0, "lamps", lamps, 16.0).verdict is Verdict.MET
    assert check_order("e2e mean", "fcfs", fcfs, 14.0, "lamps", lamps, 16.0).verdict \
        is Verdict.MISSED
    overlap = check_order("e2e mean", "fcfs", Estimate(16.0, 1.5, 3), 14.0, "lamps", lamps, 16.0)
    assert not overlap.separated and overlap.verdict is Verdict.INCONCLUSIVE


def test_table_shows_each_verdict() -> None:
    rows = [judge("e2e mean", Kind.CENTRAL, Estimate(10.0, 0.5, 3), 10.5),
            judge("preserve %", Kind.POINTS, Estimate(40.0, 2.0, 3), 50.0)]
    table = format_judgements(rows)
    assert "| e2e mean | 10 ± 0.5 (n=3) | 10.5 | +5.0 % | ±10 % | met |" in table
    assert "| preserve % | 40 ± 2 (n=3) | 50 | +10.0 pt | ±5 pt | missed |" in table


def test_a_figure_that_is_zero_in_every_real_run_can_be_met() -> None:
    zero = estimate([0.0, 0.0, 0.0])
    assert zero.half_width == 0.0 and zero.relative_half_width == 0.0
    assert judge("preemptions", Kind.COUNT, zero, 0.0).verdict is Verdict.MET
    assert judge("preemptions", Kind.COUNT, zero, 3.0).verdict is Verdict.MISSED


def test_utilization_is_the_steps_time_over_the_run_and_marks_saturation() -> None:
    from replicas.policy.profile import StepRecord
    from simulator.fidelity import SATURATED_UTILIZATION, PointResult, utilization
    steps = [StepRecord(1, 1, 0, 10, 250.0), StepRecord(8, 8, 0, 80, 650.0)]
    assert utilization(steps, 1.0) == pytest.approx(0.9)
    assert utilization(steps, 2.0) == pytest.approx(0.45)
    assert utilization(steps, 0.0) == 0.0
    point = PointResult("c", 1.0, {}, {}, [], None, utilization(steps, 1.0))
    assert point.saturated and SATURATED_UTILIZATION == 0.9
    assert not PointResult("c", 1.0, {}, {}, [], None, 0.89).saturated
    assert not PointResult("c", 1.0, {}, {}, [], None, None).saturated


def test_figures_add_each_slo_class_attainment_in_percent() -> None:
    from simulator.fidelity_runs import figures
    summary = {"mean_e2e_s": 2.0, "p50_e2e_s": 1.5, "mean_ttft_s": 0.2, "p99_e2e_s": 9.0,
               "slo_attainment_per_class": {"standard": 0.5, "interactive": 0.25}}
    got = figures(summary, [0.1, 0.3], {"calls_preserve": 1.0, "calls_discard": 3.0})
    assert got["slo % interactive"] == 25.0 and got["slo % standard"] == 50.0
    assert got["preserve %"] == 25.0 and got["ttft p50 s"] == pytest.approx(0.2)
    assert [k for k in got if k.startswith("slo % ")] == ["slo % interactive", "slo % standard"]
