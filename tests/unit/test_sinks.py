"""Sinks: part files that read back, stdout, the discarding and the collecting sink."""

from __future__ import annotations

import json
import pickle
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rheostat import sinks, sources
from rheostat.runtime.io import SinkContext
from rheostat.runtime.messages import FINAL_CHECKPOINT


def ctx(task: int = 0, parallelism: int = 1, sent: list | None = None) -> SinkContext:
    out = sent if sent is not None else []
    return SinkContext("out", task, parallelism, lambda batch, key=None: out.append(batch))


def batches(rows: int, size: int, start: int = 0) -> list[pa.RecordBatch]:
    out = []
    for lo in range(start, start + rows, size):
        ids = list(range(lo, min(lo + size, start + rows)))
        out.append(pa.record_batch({
            "id": pa.array(ids, pa.int64()),
            "city": [f"c{i % 3}" for i in ids],
            "url": [f"https://x/{i}" for i in ids],
            "ts": pa.array(ids, pa.timestamp("ms")),
        }))
    return out


def run(sink, parts: list[list[pa.RecordBatch]]) -> list:
    """Writes ``parts[i]`` through sink task ``i`` as the runtime would; returns driver data."""
    sent: list = []
    for task, part in enumerate(parts):
        writer = pickle.loads(pickle.dumps(sink)).open(ctx(task, len(parts), sent))
        for batch in part:
            writer.write(batch)
        writer.commit(FINAL_CHECKPOINT, writer.prepare(FINAL_CHECKPOINT))
        writer.close()
    for batch in sent:
        sink.on_driver_data(batch)
    return sent


def test_parquet_sink_one_part_file_per_task_reads_back(tmp_path):
    out = tmp_path / "out" / "deeper"
    run(sinks.parquet(str(out), row_group_rows=1000), [batches(2500, 100), batches(30, 7, 5000)])
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    table = pq.read_table(out / "part-00000.parquet")
    assert table.equals(pa.Table.from_batches(batches(2500, 100)))
    meta = pq.ParquetFile(out / "part-00000.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1000, 1000, 500]
    back = sources.parquet(str(out)).splits(1)
    assert len(back) == 2
    assert pq.read_table(out).num_rows == 2530


def test_parquet_sink_dictionary_only_for_low_cardinality_columns(tmp_path):
    run(sinks.parquet(str(tmp_path)), [batches(5000, 1000)])
    columns = pq.ParquetFile(tmp_path / "part-00000.parquet").metadata.row_group(0)
    encodings = {columns.column(i).path_in_schema: columns.column(i).encodings
                 for i in range(columns.num_columns)}
    assert any("DICTIONARY" in e for e in encodings["city"])
    assert not any("DICTIONARY" in e for e in encodings["url"])
    assert not any("DICTIONARY" in e for e in encodings["id"])


def test_parquet_sink_rolls_files_and_never_overwrites(tmp_path):
    sink = sinks.parquet(str(tmp_path), rows_per_file=200, row_group_rows=100)
    run(sink, [batches(450, 50)])
    run(sink, [batches(10, 10, 1000)])  # a restarted task 0 writes new files
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["part-00000-1.parquet", "part-00000-2.parquet", "part-00000-3.parquet",
                     "part-00000.parquet"]
    assert pq.read_table(tmp_path).num_rows == 460


def test_parquet_sink_empty_task_leaves_schema_and_mismatch_is_explained(tmp_path):
    schema_only = batches(1, 1)[0].slice(0, 0)
    run(sinks.parquet(str(tmp_path / "a")), [[schema_only]])
    assert pq.read_table(tmp_path / "a").schema == schema_only.schema
    run(sinks.parquet(str(tmp_path / "b")), [[]])
    assert not list((tmp_path / "b").iterdir())
    writer = sinks.parquet(str(tmp_path / "c")).open(ctx())
    writer.write(batches(3, 3)[0])
    with pytest.raises(TypeError, match="does not match the first batch"):
        writer.write(pa.record_batch({"other": [1]}))


def test_parquet_sink_to_an_fsspec_url():
    root = f"memory://rheostat-sink-{uuid.uuid4().hex}/out"
    run(sinks.parquet(root), [batches(100, 30)])
    fs = fsspec.filesystem("memory")
    with fs.open(f"{root}/part-00000.parquet", "rb") as f:
        assert pq.read_table(f).num_rows == 100


def test_jsonl_sink_reads_back(tmp_path):
    run(sinks.jsonl(str(tmp_path)), [batches(120, 50), batches(5, 5, 500)])
    lines = (tmp_path / "part-00000.jsonl").read_text().splitlines()
    assert len(lines) == 120
    assert json.loads(lines[1]) == {"id": 1, "city": "c1", "url": "https://x/1",
                                    "ts": "1970-01-01 00:00:00.001"}
    src = sources.jsonl(str(tmp_path))
    back = pa.Table.from_batches([b for s in src.splits(1) for b in _read(src, s)])
    assert back.num_rows == 125 and back["id"].to_pylist()[:3] == [0, 1, 2]


def _read(src, split):
    reader = src.open(split)
    while (batch := reader.read()) is not None:
        yield batch


def test_stdout_prints_json_lines_up_to_the_limit(capsys):
    run(sinks.stdout(limit=3), [batches(5, 2)])
    out = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["id"] for line in out[:3]] == [0, 1, 2]
    assert out[3] == "... 2 more rows not printed (limit reached)"
    run(sinks.stdout(), [batches(1, 1), batches(1, 1, 7)])
    assert capsys.readouterr().out.splitlines()[1].startswith('[1] {"id":7')
    with pytest.raises(ValueError, match="limit"):
        sinks.stdout(limit=-1)


def test_null_sink_discards_and_counts_in_the_driver():
    sink = sinks.null()
    run(sink, [batches(100, 10), batches(5, 5)])
    assert (sink.rows, sink.batches) == (105, 11)


def test_collect_sink_gathers_in_the_driver_and_pickles_without_data():
    sink = sinks.collect()
    assert sink.table().num_rows == 0 and sink.to_pylist() == []
    sent = run(sink, [batches(30, 10), batches(4, 4, 100)])
    assert sum(b.num_rows for b in sent) == 34
    table = sink.table()
    assert sorted(table["id"].to_pylist()) == list(range(30)) + list(range(100, 104))
    assert len(sink) == 34 and sink.to_pandas().shape == (34, 4)
    clone = pickle.loads(pickle.dumps(sink))
    assert clone.table().num_rows == 0 and len(pickle.dumps(sink)) < 500
    assert sink.rows == 34  # pickling left the driver's rows alone
    sink.clear()
    assert sink.rows == 0


def test_collect_sink_keeps_the_schema_of_an_empty_stream():
    sink = sinks.collect()
    run(sink, [[batches(1, 1)[0].slice(0, 0)] * 3])
    assert sink.table().num_rows == 0 and sink.table().column_names == ["id", "city", "url", "ts"]


def test_sink_arguments_are_checked(tmp_path):
    with pytest.raises(TypeError, match="path must be"):
        sinks.parquet(None)
    with pytest.raises(ValueError, match="rows_per_file"):
        sinks.jsonl(str(tmp_path), rows_per_file=0)
    with pytest.raises(ValueError, match="row_group_rows"):
        sinks.parquet(str(tmp_path), row_group_rows=0)
