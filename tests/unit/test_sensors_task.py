"""What a task reports: rows per key group, queued rows, useful and blocked time, and a
source's backlog (tasks and drivers driven by hand, no processes)."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import rheostat as rs
from rheostat.plan.logical import SourceStep
from rheostat.plan.physical import lower
from rheostat.runtime.channels import LocalChannel
from rheostat.runtime.keys import key_groups
from rheostat.runtime.routing import HashRouter
from rheostat.runtime.source import SourceDriver
from rheostat.runtime.task import Task

DATA = [{"k": i % 37, "x": i} for i in range(3000)]


def keyed_plan(parallelism: int = 2, data=DATA):
    flow = rs.Flow("sensors")
    (flow.source("src", rs.testing.rows(data, batch_size=100))
         .key_by("k").process(rs.stateful_map(lambda s, r: ((s or 0) + 1, r)), name="count")
         .sink("out", rs.sinks.null()))
    return lower(flow.steps, parallelism)


def test_the_router_counts_rows_per_key_group():
    batch = pa.record_batch({"k": [1, 2, 1, 5, 1]})
    r = HashRouter(("k",), owners=[0] * 4096, max_parallelism=4096)
    r.route(batch)
    r.route(batch)
    groups = key_groups(batch, ("k",), 4096)
    expected = np.bincount(groups, minlength=4096) * 2
    assert (r.group_rows == expected).all() and r.group_rows.sum() == 10


def test_a_source_task_reports_the_rows_it_routed_per_key_group_of_the_keyed_step():
    plan = keyed_plan()
    channels = {c.channel_id: LocalChannel(capacity_bytes=1 << 30) for c in plan.channels}
    src = Task(plan, "src#0", channels, channels)
    while src.step(budget=100):
        pass
    m = src.snapshot_metrics()
    routed = m.key_group_rows["count"]
    mine = DATA[:1500]  # task 0 of 2 reads the first half
    want = Counter(key_groups(pa.Table.from_pylist(mine), ("k",), 4096).tolist())
    assert routed == dict(want) and 0 not in routed.values()
    assert sum(routed.values()) == m.rows_in == 1500
    assert m.backlog_rows == 0  # read to the end
    # The keyed tasks have not run: what was routed to each waits at its inputs.
    owners = plan.key_group_owners["count"]
    for i in range(2):
        count = Task(plan, f"count#{i}", channels, channels)
        queued = count.snapshot_metrics().queued_rows
        assert queued == sum(n for g, n in routed.items() if owners[g] == i)
        assert count.snapshot_metrics().key_group_rows == {}  # routes forward only


def test_blocked_time_is_wall_time_on_credit_and_never_busy():
    plan = keyed_plan(1)
    channels = {c.channel_id: LocalChannel(capacity_bytes=1) for c in plan.channels}
    src = Task(plan, "src#0", channels, channels)
    assert src.step(budget=100)  # one batch goes out, the next waits for credit
    assert any(box.pending for box in src.outboxes)
    time.sleep(0.05)
    assert not src.step()  # still blocked: nothing moved
    m = src.snapshot_metrics()
    assert m.backpressure_s >= 0.05
    assert m.busy_s < 0.05  # the wait is not useful time
    assert src.snapshot_metrics().backpressure_s >= m.backpressure_s  # counted up to now


def drain(driver: SourceDriver) -> int:
    rows = 0
    for _ in range(10_000):
        if driver.done:
            break
        rows += sum(m.data.num_rows for m in driver.poll() if hasattr(m, "data"))
    return rows


def test_a_rows_source_backlog_is_what_it_has_not_read():
    src = rs.testing.rows([{"x": i} for i in range(1000)], batch_size=100, splits=4)
    driver = SourceDriver(SourceStep("s", (), source=src), index=0, parallelism=2)
    assert driver.backlog() is None  # its readers are not open yet: unknown
    read = sum(m.data.num_rows for _ in range(2) for m in driver.poll())
    assert driver.backlog() == 500 - read  # splits 0 and 1 (of 4) hold 500 rows
    drain(driver)
    assert driver.backlog() == 0


def test_a_paced_source_backlog_is_what_is_due_and_not_read():
    now = [0.0]
    src = rs.testing.rows([{"x": i} for i in range(10_000)], batch_size=100)
    step = SourceStep("s", (), source=src, rate=1000.0)
    driver = SourceDriver(step, index=0, parallelism=1, clock=lambda: now[0])
    driver.poll()  # the pace starts at the first poll
    assert driver.backlog() == 0
    now[0] = 2.0  # 2000 rows due by now; it was not asked to read them (backpressure)
    assert driver.backlog() == 2000
    while driver.poll():
        pass
    assert driver.backlog() == 0  # caught up


def test_synthetic_and_parquet_readers_know_what_is_left(tmp_path):
    for events, size, splits in [(1000, 64, 3), (1000, 100, 5), (7, 3, 2), (10, 1000, 2)]:
        source = rs.sources.synthetic(events=events, splits=splits)
        for split in source.splits(1):
            reader = source.open(split, batch_size=size)
            left = reader.remaining()
            total = 0
            while (batch := reader.read()) is not None:
                total += batch.num_rows
                assert reader.remaining() == left - total
            assert left == total and reader.remaining() == 0
    assert rs.sources.synthetic(events=None).open((0, 1)).remaining() is None
    pq.write_table(pa.table({"x": list(range(250))}), tmp_path / "a.parquet", row_group_size=100)
    source = rs.sources.parquet(str(tmp_path))
    reader = source.open(source.splits(1)[0], position=30, batch_size=100)
    assert reader.remaining() == 220
    first = reader.read()
    assert reader.remaining() == 220 - first.num_rows
