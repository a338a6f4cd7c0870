"""A file a source cannot read fails with the file, the line or row group, and what to do."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import rheostat as rs
from rheostat.connectors.files import BadInputFile


def _read_all(src):
    for split in src.splits(1):
        reader = src.open(split, batch_size=1000)
        while reader.read() is not None:
            pass


def test_csv_value_of_another_type_names_file_line_column_and_schema(tmp_path):
    path = tmp_path / "a.csv"  # past Arrow's first 1 MiB block, where types were inferred
    path.write_text("x,y\n" + "".join(f"{i},{i}\n" for i in range(200_000)) + "oops,1\n")
    with pytest.raises(BadInputFile) as info:
        _read_all(rs.sources.csv(str(tmp_path)))
    message = str(info.value)
    assert f"file {path}, line 200002, column 'x'" in message
    assert "invalid value 'oops'" in message and "schema=" in message


def test_csv_line_with_extra_fields_names_file_and_line(tmp_path):
    (tmp_path / "a.csv").write_text("x,y\n1,2\n3,4,5\n")
    with pytest.raises(BadInputFile, match=r"a\.csv, line 3: Expected 2 columns, got 3"):
        _read_all(rs.sources.csv(str(tmp_path)))


def test_jsonl_syntax_error_is_called_a_syntax_error_on_its_line(tmp_path):
    lines = [f'{{"x": {i}}}' for i in range(100_000)] + ['{"x": "a",', '{"x": 5}']
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(BadInputFile) as info:
        _read_all(rs.sources.jsonl(str(tmp_path)))
    message = str(info.value)
    assert "a.jsonl, line 100001: not valid JSON" in message
    assert "changed from" not in message


def test_jsonl_type_change_names_line_column_and_schema(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"x": 1}\n\n{"x": "a"}\n')
    with pytest.raises(BadInputFile) as info:
        _read_all(rs.sources.jsonl(str(tmp_path)))
    message = str(info.value)
    assert "a.jsonl, line 3: Column(/x) changed from number to string" in message
    assert "schema=" in message


@pytest.fixture
def parquet_bytes(tmp_path):
    pq.write_table(pa.table({"x": list(range(100_000))}), tmp_path / "whole.parquet",
                   row_group_size=10_000, compression="snappy")
    return (tmp_path / "whole.parquet").read_bytes()


def test_truncated_parquet_names_the_file_not_a_worker(tmp_path, parquet_bytes):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.parquet").write_bytes(parquet_bytes)
    (tmp_path / "in" / "b.parquet").write_bytes(parquet_bytes[: len(parquet_bytes) // 2])
    flow = rs.Flow("truncated")
    flow.source("files", rs.sources.parquet(str(tmp_path / "in"))).sink("out", rs.sinks.null())
    with pytest.raises(rs.JobFailed) as info:
        rs.run(flow, backend="inline")
    message = str(info.value)
    assert f"file {tmp_path / 'in' / 'b.parquet'}: not a readable Parquet file" in message
    assert "remove the file" in message


def test_damaged_parquet_row_group_is_named(tmp_path, parquet_bytes):
    damaged = bytearray(parquet_bytes)
    middle = len(damaged) // 3
    damaged[middle:middle + 2000] = bytes(2000)
    (tmp_path / "a.parquet").write_bytes(bytes(damaged))
    with pytest.raises(BadInputFile, match=r"a\.parquet, row group \d+ \(of 10, from 0\)"):
        _read_all(rs.sources.parquet(str(tmp_path)))
