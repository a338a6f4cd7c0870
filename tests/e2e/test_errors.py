"""Bad records: fail with the step, the record and the traceback, or follow the policy."""

import pyarrow as pa
import pytest

import rheostat as rs

DATA = [{"id": i, "x": 0 if i == 7 else i + 1} for i in range(20)]


def divide(row):
    return {"id": row["id"], "y": 100 // row["x"]}


def test_failure_names_step_record_and_traceback(mode):
    flow = rs.Flow("fails")
    flow.source("rows", rs.testing.rows(DATA, batch_size=4)).map(divide, name="divide").sink(
        "out", rs.sinks.collect())
    with pytest.raises(rs.JobFailed) as info:
        mode.run(flow)
    text = str(info.value)
    assert "step 'divide'" in text
    assert '"id": 7' in text and "ZeroDivisionError" in text
    assert "in divide" in text  # the user function's traceback


def test_skip_counts_and_dead_letter_routes_the_bad_record_once(mode):
    flow = rs.Flow("policies")
    out, dead = rs.sinks.collect(), rs.sinks.collect()
    rows = flow.source("rows", rs.testing.rows(DATA, batch_size=4))
    skipped = rows.map(divide, name="skip", on_error="skip")
    skipped.sink("out", out)
    lettered = rows.map(divide, name="dl", on_error="dead_letter")
    lettered.sink("out2", rs.sinks.null())
    lettered.errors.sink("dead", dead)
    result = mode.run(flow)
    assert sorted(r["id"] for r in out.to_pylist()) == [i for i in range(20) if i != 7]
    assert result.counters()["skipped"] == 1
    (letter,) = dead.to_pylist()
    assert letter["step"] == "dl" and "ZeroDivisionError" in letter["error"]
    assert '"id": 7' in letter["record"]


def test_map_batches_dead_letter_isolates_the_bad_rows(mode):
    def strict(batch: pa.RecordBatch) -> pa.RecordBatch:
        xs = batch.column("x").to_pylist()
        return pa.record_batch({"id": batch.column("id"), "y": [100 // x for x in xs]})

    flow = rs.Flow("batch-policy")
    out, dead = rs.sinks.collect(), rs.sinks.collect()
    s = flow.source("rows", rs.testing.rows(DATA, batch_size=5)).map_batches(
        strict, name="strict", on_error="dead_letter")
    s.sink("out", out)
    s.errors.sink("dead", dead)
    mode.run(flow)
    assert sorted(r["id"] for r in out.to_pylist()) == [i for i in range(20) if i != 7]
    assert [r["record"] for r in dead.to_pylist()] == ['{"id": 7, "x": 0}']


def test_non_dict_result_is_a_clear_error():
    flow = rs.Flow("bad-return")
    flow.source("rows", rs.testing.rows(DATA)).map(lambda r: 1, name="oops").sink(
        "out", rs.sinks.null())
    with pytest.raises(rs.JobFailed, match="map must return a dict"):
        rs.run(flow, backend="inline")
