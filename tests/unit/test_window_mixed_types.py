"""A windowed aggregation over files whose column types differ: int and float mix as
float64; any other change fails at the first batch that has it, with the user's names."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import rheostat as rs


def _run(tmp_path, second_v, second_k=(1, 2, 1)):
    pq.write_table(pa.table({"k": [1, 2, 1], "t": [1000, 2000, 3000], "v": [1, 2, 3]}),
                   tmp_path / "a.parquet")
    pq.write_table(pa.table({"k": list(second_k), "t": [4000, 5000, 6000], "v": second_v}),
                   tmp_path / "b.parquet")
    flow = rs.Flow("mixed")
    out = rs.sinks.collect()
    (flow.source("files", rs.sources.parquet(str(tmp_path))).with_timestamp("t")
        .key_by("k").window(rs.windows.tumbling("10s"))
        .aggregate(s=rs.agg.sum_("v"), m=rs.agg.max_("v"), name="win").sink("out", out))
    rs.run(flow, backend="inline")
    return sorted((r["k"], r["s"], r["m"]) for r in out.table().to_pylist())


def test_int_and_float_files_aggregate_as_float(tmp_path):
    assert _run(tmp_path, [1.5, 2.5, 3.5]) == [(1, 9.0, 3.5), (2, 4.5, 2.5)]


def test_another_type_fails_at_its_first_batch_naming_the_column(tmp_path):
    with pytest.raises(rs.JobFailed) as info:
        _run(tmp_path, ["x", "y", "z"])
    message = str(info.value)
    assert "step 'win': column 'v' is string in this batch but was int64" in message
    assert "failed in on_batch" in message and "_a0_" not in message


def test_a_key_that_changes_type_fails_naming_the_key(tmp_path):
    with pytest.raises(rs.JobFailed, match="key column 'k' is double in this batch"):
        _run(tmp_path, [4, 5, 6], second_k=(1.0, 2.0, 1.0))
