"""A per-row map whose dicts change shape keeps every key; a bad value names its record."""

import pytest

import rheostat as rs


def _run(fn, batch_size, on_error="fail", n=10):
    flow = rs.Flow("shapes")
    out = rs.sinks.collect()
    flow.source("rows", rs.testing.rows([{"i": i} for i in range(n)], batch_size=batch_size)) \
        .map(fn, name="shape", on_error=on_error).sink("out", out)
    rs.run(flow, backend="inline")
    return out.table().to_pylist()


def _grows_at_3(row):
    return {"i": row["i"], **({"extra": row["i"] * 10} if row["i"] >= 3 else {})}


@pytest.mark.parametrize("batch_size", [10, 2], ids=["later-row", "later-batch"])
def test_keys_that_appear_later_are_kept_as_columns(batch_size):
    rows = _run(_grows_at_3, batch_size)
    assert [r["extra"] for r in rows] == [None, None, None, 30, 40, 50, 60, 70, 80, 90]


def _bad_at_5(row):
    return {"v": "oops" if row["i"] == 5 else row["i"]}


@pytest.mark.parametrize("batch_size", [10, 4], ids=["same-batch", "later-batch"])
def test_a_bad_value_is_reported_on_the_record_that_returned_it(batch_size):
    with pytest.raises(rs.JobFailed) as info:
        _run(_bad_at_5, batch_size)
    message = str(info.value)
    assert "step 'shape' failed on record {\"i\": 5}" in message
    assert '"oops"' in message


def test_a_bad_value_is_skipped_alone_under_on_error_skip():
    assert [r["v"] for r in _run(_bad_at_5, 10, on_error="skip")] == [0, 1, 2, 3, 4, 6, 7, 8, 9]
