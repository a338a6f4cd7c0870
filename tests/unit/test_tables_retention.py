"""The metrics table keeps the last hour (or what it is told) and a bounded number of rows."""

from __future__ import annotations

import pytest

from rheostat.control.tables import JobTables
from rheostat.protocol import TaskMetrics


def rows(tables: JobTables) -> list[dict]:
    return tables.query("select task_id, at, rows_in from metrics order by at, task_id").to_pylist()


def test_rows_older_than_the_retention_go():
    tables = JobTables(metrics_keep_s=10.0, metrics_keep_rows=None)
    for t in range(101):
        tables.metrics({"a#0": TaskMetrics(rows_in=t), "b#0": TaskMetrics(rows_in=t)}, at=float(t))
    kept = rows(tables)
    # pruned every tenth of the retention: nothing older than 10 s plus that tenth
    assert min(r["at"] for r in kept) >= 100 - 10 - 1
    assert max(r["at"] for r in kept) == 100
    assert {r["task_id"] for r in kept} == {"a#0", "b#0"}


def test_the_table_keeps_at_most_about_its_row_limit_newest_first():
    tables = JobTables(metrics_keep_s=None, metrics_keep_rows=50)
    for t in range(200):
        tables.metrics({f"s#{i}": TaskMetrics(rows_in=t) for i in range(3)}, at=float(t))
        assert len(rows(tables)) <= 50 + 5 + 3
    kept = rows(tables)
    assert max(r["at"] for r in kept) == 199  # the newest stay
    assert all(r["rows_in"] == r["at"] for r in kept)


def test_the_new_gauges_are_recorded_and_retention_can_be_off():
    tables = JobTables(metrics_keep_s=None, metrics_keep_rows=None)
    for t in range(300):
        tables.metrics({"s#0": TaskMetrics(queued_rows=3, backlog_rows=t)}, at=float(t))
    got = tables.query("select count(*) as n, max(backlog_rows) as b, max(queued_rows) as q "
                       "from metrics").to_pylist()
    assert got == [{"n": 300, "b": 299, "q": 3}]
    with pytest.raises(ValueError):
        JobTables(metrics_keep_s=0)
    with pytest.raises(ValueError):
        JobTables(metrics_keep_rows=0)
