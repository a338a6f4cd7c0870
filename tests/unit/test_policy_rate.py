"""The rate policy on hand-built snapshots and a tiny simulated job (tests/unit/policy_sim.py)."""

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from policy_sim import WORK, changes, run, snapshot

from rheostat.policy import rate
from rheostat.policy.rate import Limits, RateConfig, RateMemory
from rheostat.policy.snapshot import MetricsSnapshot, StepSample, TaskSample


def linear(p: int) -> float:
    return 1000.0 * p


def sub_linear(p: int) -> float:
    return 1000.0 * p ** 0.7


def test_a_x2_rate_step_is_sized_in_one_decision_with_linear_costs():
    seen = run(rate.decide, [1700.0] * 3 + [3400.0] * 6, 2, linear,
               config=RateConfig(catch_up_s=None))
    assert seen == [2, 2, 2, 2] + [4] * 6
    d = rate.decide(snapshot(3400.0, 2, linear), RateConfig(catch_up_s=None)).of(WORK)
    assert (d.action, d.target_parallelism, d.model) == ("rescale", 4, "linear")
    assert d.predicted_capacity_per_s == 4000.0 and d.target_rate_per_s == 3400.0
    assert d.reason.endswith("2 run at 170%: rescale 2 -> 4")
    assert d.inputs["true_rate_per_task"] == 1000.0


def test_the_backlog_catch_up_term_adds_to_the_target():
    snap = snapshot(3400.0, 2, linear, backlog=30_000)
    d = rate.decide(snap, RateConfig(catch_up_s=10.0)).of(WORK)
    assert d.target_rate_per_s == 3400.0 + 3000.0
    assert d.target_parallelism == math.ceil(6400 / 850)


def test_sub_linear_costs_converge_within_two_decisions_with_the_curve():
    rates = [1300.0] * 3 + [5200.0] * 8
    seen = run(rate.decide, rates, 2, sub_linear, config=RateConfig(catch_up_s=None))
    right = next(p for p in range(1, 100) if sub_linear(p) * 0.85 >= 5200.0)
    assert changes(seen) == 2 and seen[-1] == right
    linear_only = run(rate.decide, rates, 2, sub_linear,
                      config=RateConfig(catch_up_s=None, use_curve=False))
    assert linear_only[-1] < right  # the linear model settles short of the target headroom


def test_the_curve_replaces_the_linear_model_once_two_parallelisms_are_seen():
    out = rate.decide(snapshot(1300.0, 2, sub_linear))
    assert out.of(WORK).model == "linear" and len(out.memory.curves[WORK].points) == 1
    out = rate.decide(snapshot(5200.0, 5, sub_linear, time_s=1.0), memory=out.memory)
    d = out.of(WORK)
    assert d.model == "curve" and "measured capacity curve" in d.reason
    assert d.predicted_capacity_per_s == pytest.approx(sub_linear(d.target_parallelism))


def test_old_curve_points_are_forgotten():
    memory = rate.decide(snapshot(1300.0, 2, sub_linear)).memory
    later = rate.decide(snapshot(1300.0, 3, sub_linear, time_s=1000.0), memory=memory)
    assert [pt.parallelism for pt in later.memory.curves[WORK].points] == [3]


def test_no_change_under_ten_percent_noise():
    rng = random.Random(7)
    for nominal in (900.0, 1700.0, 4100.0, 12_345.0, 40_000.0):
        p = rate.decide(snapshot(nominal, 1, linear)).of(WORK).ideal_parallelism
        rates = [nominal * rng.uniform(0.9, 1.1) for _ in range(40)]
        assert changes(run(rate.decide, rates, p, linear)) == 0, nominal


def test_a_sustained_drop_scales_down_in_one_decision():
    seen = run(rate.decide, [6000.0] * 5, 12, linear)
    assert changes(seen) == 1 and seen[-1] == math.ceil(6000 / 700)
    d = rate.decide(snapshot(6000.0, 9, linear)).of(WORK)
    assert d.action == "none" and d.ideal_parallelism == 8  # inside the dead band


def test_limits_and_a_useless_scale_up():
    d = rate.decide(snapshot(9000.0, 2, linear),
                    RateConfig(limits={WORK: Limits(max_parallelism=5)})).of(WORK)
    assert d.target_parallelism == 5 and "needs more than the 5 allowed" in d.reason
    d = rate.decide(snapshot(9000.0, 5, linear),
                    RateConfig(limits={WORK: Limits(max_parallelism=5)})).of(WORK)
    assert d.action == "none" and d.reason.endswith("no change: 5 is its maximum")


def _hot_key_snapshot() -> MetricsSnapshot:
    """Task 0 is saturated by key group 7 alone; task 1 idles; the source falls behind."""
    src = StepSample("src", 1, (TaskSample("src#0", 1100.0, 1100.0, 0.05),), is_source=True,
                     source_rate_per_s=3000.0, backlog_rows=50_000)
    hot = TaskSample("agg#0", 1000.0, 1000.0, 1.0, queued_rows=2000, key_group_rows={7: 1000.0})
    cold = TaskSample("agg#1", 100.0, 100.0, 0.1, key_group_rows={1: 60.0, 2: 40.0})
    return MetricsSnapshot(5.0, 1.0, {"src": src, "agg": StepSample(
        "agg", 2, (hot, cold), inputs=("src",), key_group_owner=(1, 1, 1, 1, 1, 1, 1, 0))})


def test_a_hot_key_group_is_not_scaled_uselessly():
    d = rate.decide(_hot_key_snapshot()).of("agg")
    assert d.action == "none" and d.target_parallelism == 2
    assert "one key group carries 91% of its rows" in d.reason
    assert d.reason.endswith("no change: more tasks would not help")
    assert d.predicted_capacity_per_s < 1200.0


def test_the_core_budget_goes_to_the_bottleneck_first():
    src = StepSample("src", 1, (TaskSample("src#0", 1000.0, 1000.0, 0.1),), is_source=True,
                     source_rate_per_s=4000.0)
    cheap = StepSample("cheap", 1, (TaskSample("cheap#0", 1000.0, 1000.0, 0.5),),
                       inputs=("src",))
    dear = StepSample("dear", 1, (TaskSample("dear#0", 1000.0, 1000.0, 1.0),),
                      inputs=("cheap",))
    snap = MetricsSnapshot(0.0, 1.0, {"src": src, "cheap": cheap, "dear": dear})
    free = rate.decide(snap)
    assert (free.of("cheap").target_parallelism, free.of("dear").target_parallelism) == (3, 5)
    out = rate.decide(snap, RateConfig(core_budget=7))
    got = (out.of("cheap").target_parallelism, out.of("dear").target_parallelism)
    assert got == (2, 4) and "core budget of 7 allows 4" in out.of("dear").reason


def test_an_idle_step_is_left_alone_with_a_reason():
    d = rate.decide(snapshot(0.0, 3, linear)).of(WORK)
    assert d.action == "none" and d.reason.startswith("too little useful time")
    assert rate.decide(snapshot(0.0, 3, linear)).of("src").reason.startswith("a source")


@settings(max_examples=150, deadline=None)
@given(rate_=st.floats(0.0, 1e6), p=st.integers(1, 64), per_task=st.floats(1.0, 1e5),
       exponent=st.floats(0.3, 1.2), hi=st.integers(1, 64), budget=st.integers(2, 80))
def test_never_beyond_max_parallelism_or_the_core_budget(rate_, p, per_task, exponent, hi,
                                                         budget):
    def cap(q: int) -> float:
        return per_task * q ** exponent

    config = RateConfig(default_limits=Limits(max_parallelism=hi), core_budget=budget)
    memory = RateMemory()
    for step in range(3):
        out = rate.decide(snapshot(rate_, p, cap, time_s=float(step)), config, memory)
        memory = out.memory
        work = out.of(WORK)
        assert 1 <= work.target_parallelism <= hi
        assert work.target_parallelism + 1 <= max(budget, 2)  # the source holds one core
        assert work.action == "rescale" or work.target_parallelism == p
        p = work.target_parallelism
