"""MetricsHistory and its snapshot, on hand-made reports (no processes, no clock)."""

from __future__ import annotations

import pytest

import rheostat as rs
from rheostat.control.sensing import MetricsHistory
from rheostat.plan.physical import lower
from rheostat.protocol import TaskMetrics


def keyed_plan(parallelism: int = 2):
    flow = rs.Flow("sensing")
    (flow.source("src", rs.testing.rows([{"k": i} for i in range(10)]))
         .key_by("k").process(rs.stateful_map(lambda s, r: ((s or 0) + 1, r)), name="count")
         .sink("out", rs.sinks.null()))
    return lower(flow.steps, parallelism)


def m(rows_in: int = 0, rows_out: int = 0, busy: float = 0.0, blocked: float = 0.0,
      **kw) -> TaskMetrics:
    return TaskMetrics(rows_in=rows_in, rows_out=rows_out, busy_s=busy, backpressure_s=blocked,
                       **kw)


def test_rates_from_cumulative_counters_per_chain():
    plan = keyed_plan()
    h = MetricsHistory()
    for t in range(11):  # one report a second: sources read 100 rows/s each
        h.add({"src#0": m(100 * t, 100 * t, 0.1 * t, 0.2 * t, backlog_rows=1000 - 100 * t),
               "src#1": m(100 * t, 100 * t, 0.1 * t, backlog_rows=500),
               "count#0": m(150 * t, 150 * t, 0.5 * t, queued_rows=7),
               "count#1": m(50 * t, 50 * t, 0.1 * t)}, at=float(t))
    snap = h.snapshot(plan, now=10.0, window_s=4.0)
    assert snap.topological() == ("src", "count")  # one sample per chain, under its head
    src, count = snap.steps["src"], snap.steps["count"]
    assert src.is_source and src.inputs == () and count.inputs == ("src",)
    assert src.input_rate == pytest.approx(200.0)
    assert src.tasks[0].useful_fraction == pytest.approx(0.1)
    assert src.tasks[0].blocked_fraction == pytest.approx(0.2)
    assert src.backlog_rows == 0 + 500  # the gauges of the last report
    assert count.input_rate == pytest.approx(200.0)
    assert count.tasks[0].true_rate == pytest.approx(300.0)  # 150 rows/s at half busy
    assert count.capacity == pytest.approx(2 * (300.0 + 500.0) / 2)
    assert count.lag_rows == 7 and count.backlog_rows is None
    assert count.key_group_owner == plan.key_group_owners["count"]
    assert count.max_parallelism == 4096
    assert count.tasks[0].key_group_rows is None  # nobody counted key groups


def test_window_shorter_than_the_history_uses_only_the_window():
    plan = keyed_plan(1)
    h = MetricsHistory()
    rows = 0
    for t in range(21):  # 10 rows/s for ten seconds, then 100 rows/s
        rows += 10 if t <= 10 else 100
        h.add({"src#0": m(rows, rows, 0.01 * t), "count#0": m(rows, rows, 0.01 * t)},
              at=float(t))
    assert h.snapshot(plan, 20.0, 5.0).steps["src"].input_rate == pytest.approx(100.0)
    assert h.snapshot(plan, 20.0, 20.0).steps["src"].input_rate == pytest.approx(
        (rows - 10) / 20)
    # a window ending earlier sees what came in then
    assert h.snapshot(plan, 10.0, 5.0).steps["src"].input_rate == pytest.approx(10.0)


def test_a_task_that_restarted_counts_from_zero():
    plan = keyed_plan(1)
    h = MetricsHistory()
    reports = [(0, 0), (1, 100), (2, 200), (3, 30), (4, 130)]  # restarted before t=3
    for t, rows in reports:
        h.add({"src#0": m(rows, rows, 0.1 * rows / 100), "count#0": m(rows, rows)}, at=float(t))
    step = h.snapshot(plan, 4.0, 10.0).steps["src"]
    assert step.input_rate == pytest.approx((200 + 130) / 4)  # never negative
    assert step.tasks[0].useful_fraction == pytest.approx((0.2 + 0.13) / 4)


def test_missing_tasks_leave_their_step_out_unless_partial():
    plan = keyed_plan(2)
    h = MetricsHistory()
    for t in range(3):
        h.add({"src#0": m(10 * t), "src#1": m(10 * t), "count#0": m(10 * t)}, at=float(t))
    h.add({"count#1": m(5)}, at=2.0)  # one report only: no rates yet
    snap = h.snapshot(plan, 2.0, 5.0)
    assert set(snap.steps) == {"src"}
    part = h.snapshot(plan, 2.0, 5.0, partial=True).steps["count"]
    assert part.tasks[1].rows_in_per_s == 0.0 and part.tasks[1].true_rate is None
    assert part.tasks[0].rows_in_per_s == pytest.approx(10.0)
    assert MetricsHistory().snapshot(plan, 0.0, 1.0).steps == {}


def test_key_group_loads_go_to_the_owner_of_each_group():
    plan = keyed_plan(2)
    owners = plan.key_group_owners["count"]
    g0 = owners.index(0)
    g1 = owners.index(1)
    h = MetricsHistory()
    for t in range(5):
        routed = {"count": {g0: 30 * t, g1: 10 * t}} if t else {"count": {}}
        h.add({"src#0": m(40 * t, 40 * t, key_group_rows=routed),
               "src#1": m(10 * t, 10 * t, key_group_rows={"count": {g0: 10 * t} if t else {}}),
               "count#0": m(40 * t), "count#1": m(10 * t)}, at=float(t))
    step = h.snapshot(plan, 4.0, 4.0).steps["count"]
    assert dict(step.tasks[0].key_group_rows) == {g0: pytest.approx(40.0)}
    assert dict(step.tasks[1].key_group_rows) == {g1: pytest.approx(10.0)}
    assert step.skew_index == pytest.approx(40 / 25)
    assert step.group_loads[g0] == pytest.approx(40.0)


def test_the_history_is_bounded_by_count_and_age():
    h = MetricsHistory(keep_s=10.0, max_reports=5)
    for t in range(20):
        h.add({"a#0": m(t)}, at=float(t))
    assert len(h.reports("a#0")) == 5
    h = MetricsHistory(keep_s=10.0, max_reports=100)
    for t in range(30):
        h.add({"a#0": m(t)}, at=float(t))
        if t < 5:
            h.add({"gone#0": m(t)}, at=float(t))
    assert h.reports("a#0")[0].at == 19.0  # one at the horizon: a baseline
    assert h.task_ids == ("a#0",)  # stopped reporting long ago: forgotten
    h.add({"a#0": m(0)}, at=3.0)  # out of order: ignored
    assert h.reports("a#0")[-1].at == 29.0
    with pytest.raises(ValueError):
        MetricsHistory(max_reports=1)
    with pytest.raises(ValueError):
        h.snapshot(keyed_plan(), 1.0, 0.0)
