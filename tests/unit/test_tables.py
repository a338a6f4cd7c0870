"""The controller's tables: written by the controller, readable from another process."""

import subprocess
import sys

import pytest

import rheostat as rs
from rheostat.control.tables import JobTables, query_file
from rheostat.plan.logical import Input, Port, Routing, SinkStep, SourceStep, UnionStep
from rheostat.plan.physical import lower
from rheostat.protocol import TaskMetrics


def plan():
    steps = (SourceStep("s", ()), UnionStep("u", (Input(Port("s"), Routing("hash", ("k",))),)),
             SinkStep("o", (Input(Port("u")),)))
    return lower(steps, parallelism=2, max_parallelism=8)


def test_plan_checkpoints_restarts_and_metrics_become_rows(tmp_path):
    tables = JobTables(tmp_path / "job.sqlite", job="j")
    tables.record_plan(plan(), {"s#0": 0, "s#1": 1, "u#0": 0, "u#1": 1})
    owners = tables.query("select task_index, count(*) as n from key_groups group by 1")
    assert owners.to_pylist() == [{"task_index": 0, "n": 4}, {"task_index": 1, "n": 4}]
    tables.checkpoint_triggered(1)
    tables.checkpoint_done(1, "completed", parts=4, size=100)
    tables.checkpoint_triggered(2)
    tables.checkpoint_done(2, "failed", reason="disk full")
    tables.restarted(1, "worker 1 died", restored=1)
    tables.metrics({"u#0": TaskMetrics(rows_in=5, watermark=9)})
    tables.job_state("finished")
    assert tables.query("select checkpoint_id, state, reason from checkpoints").to_pylist() == [
        {"checkpoint_id": 1, "state": "completed", "reason": None},
        {"checkpoint_id": 2, "state": "failed", "reason": "disk full"},
    ]
    job = tables.query("select state, restarts, ended_at is not null as ended from jobs")
    assert job.to_pylist() == [{"state": "finished", "restarts": 1, "ended": 1}]
    # Another process reads the same file.
    code = ("from rheostat.control.tables import query_file; import sys; "
            "print(query_file(sys.argv[1], 'select sum(rows_in) as n from metrics')['n'][0])")
    out = subprocess.check_output([sys.executable, "-c", code, str(tmp_path / "job.sqlite")])
    assert out.strip() == b"5"


def test_tables_are_read_only_to_queries(tmp_path):
    tables = JobTables(tmp_path / "job.sqlite")
    with pytest.raises(ValueError, match="read-only"):
        tables.query("delete from jobs")
    with pytest.raises(ValueError, match="read-only"):
        query_file(tmp_path / "job.sqlite", "drop table jobs")


def test_a_run_records_its_checkpoints_and_restarts(tmp_path):
    flag = tmp_path / "failed"

    def fail_once(batch):
        if not flag.exists():
            flag.touch()
            raise RuntimeError("once")
        return batch

    flow = rs.Flow("tables")
    rows = rs.testing.rows([{"k": i % 7, "t": i} for i in range(20_000)], batch_size=200)
    (flow.source("s", rows, timestamp="t", rate=40_000).map_batches(fail_once, name="f")
        .key_by("k").window(rs.windows.tumbling("1s")).aggregate(n=rs.agg.count())
        .sink("o", rs.sinks.null()))
    result = rs.run(flow, backend="inline", checkpoint_interval="100ms",
                    checkpoint_dir=str(tmp_path / "chk"), tables=str(tmp_path / "t.sqlite"))
    done = result.sql("select checkpoint_id from checkpoints where state = 'completed'")
    assert set(done["checkpoint_id"].to_pylist()) >= set(result.checkpoints)
    (restart,) = result.sql("select attempt, reason from restarts").to_pylist()
    assert restart["attempt"] == 1 and "once" in restart["reason"]
    state = query_file(tmp_path / "t.sqlite", "select state, restarts from jobs").to_pylist()
    assert state == [{"state": "finished", "restarts": 1}]
