"""A paced source following a rate schedule (``rate=[(from_s, rows_per_s), ...]``):
the driver reads the schedule's integral, reports its asked rate, and the sensors hand
the controller the rate asked now."""

import pytest

import rheostat as rs
from rheostat.control.sensing import MetricsHistory
from rheostat.plan.errors import FlowError
from rheostat.plan.logical import SourceStep
from rheostat.plan.physical import lower
from rheostat.plan.rates import RateSchedule
from rheostat.protocol import TaskMetrics
from rheostat.runtime.messages import Batch
from rheostat.runtime.source import SourceDriver
from rheostat.testing import FakeClock


def read(driver: SourceDriver) -> int:
    rows = 0
    while msgs := driver.poll():
        rows += sum(m.data.num_rows for m in msgs if isinstance(m, Batch))
        if driver.done:
            break
    return rows


def test_a_schedule_paces_the_source_by_its_integral():
    clock = FakeClock()
    sched = RateSchedule.of([(0, 10), (2, 20), (4, 5)])
    step = SourceStep("s", (), source=rs.testing.rows([{"x": i} for i in range(1000)],
                                                      batch_size=1), rate=sched)
    driver = SourceDriver(step, 0, 1, clock=clock)
    assert driver.batch_size == 1  # sized for the least rate
    assert read(driver) == 0  # the first poll starts the schedule's clock
    seen = []
    for _ in range(6):
        clock.advance(1.0)
        seen.append(read(driver))
        seen.append(driver.rate_per_task)
    assert seen == [10, 10.0, 10, 20.0, 20, 20.0, 20, 5.0, 5, 5.0, 5, 5.0]
    clock.advance(1.0)
    assert driver.backlog() == 5  # due at 5 rows/s, not read yet


def test_a_constant_rate_is_unchanged():
    assert RateSchedule.of(2.5) == RateSchedule(((0.0, 2.5),))
    assert RateSchedule.of(2.5).rows_by(4) == 10.0


@pytest.mark.parametrize("bad", [[(1, 10)], [(0, 10), (0, 20)], [(0, 0)], [(0, -1)], "fast"])
def test_a_bad_schedule_is_refused_when_the_flow_is_built(bad):
    flow = rs.Flow("f")
    with pytest.raises(FlowError, match="rate"):
        flow.source("s", rs.testing.rows([{"x": 1}]), rate=bad)


def test_the_snapshot_carries_the_rate_the_source_is_asked_now():
    flow = rs.Flow("f")
    flow.source("s", rs.testing.rows([{"x": 1}]), rate=[(0, 100), (10, 200)]).sink(
        "o", rs.sinks.collect())
    plan = lower(flow.steps, parallelism=2)
    h = MetricsHistory()
    for t, asked in ((0.0, 50.0), (1.0, 100.0)):  # each task reports its share
        h.add({f"s#{i}": TaskMetrics(rows_in=int(t * 50), paced_rate_per_s=asked)
               for i in range(2)}, at=t)
    assert h.snapshot(plan, now=1.0, window_s=1.0).steps["s"].source_rate_per_s == 200.0
