"""File sources read back what was written and resume exactly; file sinks are exactly-once."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import uuid
from collections.abc import Callable
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import rheostat as rs
from rheostat import sources


def sample(rows: int, start: int = 0) -> pa.Table:
    ids = list(range(start, start + rows))
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "name": [f"n{i}" for i in ids],
        "score": [i / 4 for i in ids],
    })


def read_split(source, split, position=None, batch_size=65_536) -> tuple[list, object]:
    reader = source.open(split, position=position, batch_size=batch_size)
    batches = []
    while (batch := reader.read()) is not None:
        batches.append(batch)
    return batches, reader.position()


def read_source(source, batch_size=65_536) -> pa.Table:
    batches = [b for s in source.splits(1) for b in read_split(source, s, batch_size=batch_size)[0]]
    return pa.Table.from_batches(batches)


@pytest.fixture
def parquet_dir(tmp_path):
    d = tmp_path / "pq"
    d.mkdir()
    pq.write_table(sample(250, 0), d / "b.parquet", row_group_size=100)
    pq.write_table(sample(50, 250), d / "c.parquet")
    pq.write_table(sample(10, 900), d / "a.parquet")
    (d / "_SUCCESS").write_text("")
    (d / ".hidden.parquet").write_text("junk")
    (d / "notes.txt").write_text("not data")
    return d


def test_parquet_directory_files_sorted_one_split_each(parquet_dir):
    src = sources.parquet(str(parquet_dir))
    names = [s.rsplit("/", 1)[-1] for s in src.splits(4)]
    assert names == ["a.parquet", "b.parquet", "c.parquet"]
    expected = pa.concat_tables([sample(10, 900), sample(250), sample(50, 250)])
    assert read_source(src, batch_size=64).equals(expected)
    assert src.schema() == expected.schema
    assert pickle.loads(pickle.dumps(src)).splits(1) == src.splits(1)


def test_parquet_batches_respect_batch_size_and_columns(parquet_dir):
    src = sources.parquet(str(parquet_dir / "b.parquet"), columns=["score", "id"])
    batches, position = read_split(src, src.splits(1)[0], batch_size=64)
    assert max(b.num_rows for b in batches) <= 64
    assert position == 250
    assert batches[0].schema.names == ["score", "id"] == src.schema().names
    with pytest.raises(KeyError, match="no column"):
        sources.parquet(str(parquet_dir), columns=["nope"]).schema()


@pytest.mark.parametrize("batch_size", [1, 7, 64, 1000])
def test_parquet_resumes_exactly_at_every_position(parquet_dir, batch_size):
    src = sources.parquet(str(parquet_dir / "b.parquet"))
    split = src.splits(1)[0]
    whole = pa.Table.from_batches(read_split(src, split, batch_size=batch_size)[0])
    reader = src.open(split, batch_size=batch_size)
    taken = []
    while True:
        position = reader.position()
        rest, _ = read_split(src, split, position=position, batch_size=batch_size)
        assert pa.Table.from_batches(taken + rest, schema=whole.schema).equals(whole)
        batch = reader.read()
        if batch is None:
            break
        taken.append(batch)
        if batch_size == 1 and len(taken) > 120:
            break  # every row group boundary has been crossed


def test_parquet_through_an_fsspec_url():
    root = f"memory://rheostat-test-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    with fs.open(f"{root}/x/part-0.parquet", "wb") as f:
        pq.write_table(sample(30), f)
    src = sources.parquet(f"{root}/x")
    assert src.splits(1)[0].startswith("memory://")
    assert read_source(src, batch_size=8).equals(sample(30))
    rest, _ = read_split(src, src.splits(1)[0], position=20)
    assert pa.Table.from_batches(rest).equals(sample(30).slice(20))


def test_csv_round_trip_and_resume(tmp_path):
    pacsv.write_csv(sample(300), tmp_path / "a.csv")
    with gzip.open(tmp_path / "b.csv.gz", "wb") as f:
        pacsv.write_csv(sample(20, 300), f)
    (tmp_path / "empty.csv").write_text("")
    src = sources.csv(str(tmp_path))
    assert [s.rsplit("/", 1)[-1] for s in src.splits(1)] == ["a.csv", "b.csv.gz", "empty.csv"]
    assert read_source(src, batch_size=50).equals(sample(320))
    split = src.splits(1)[0]
    head, _ = read_split(src, split, batch_size=1000)
    reader = src.open(split, batch_size=70)
    first = [reader.read(), reader.read()]
    rest, end = read_split(src, split, position=reader.position(), batch_size=70)
    assert reader.position() == 140 and end == 300
    assert pa.Table.from_batches(first + rest).equals(pa.Table.from_batches(head))


def test_csv_schema_delimiter_and_columns(tmp_path):
    (tmp_path / "t.tsv").write_text("a\tb\n1\tx\n2\ty\n")
    schema = pa.schema([("a", pa.float64()), ("b", pa.string())])
    src = sources.csv(str(tmp_path / "t.tsv"), delimiter="\t", schema=schema, columns=["b"])
    assert src.schema() == pa.schema([("b", pa.string())])
    assert read_source(src).to_pylist() == [{"b": "x"}, {"b": "y"}]
    typed = read_source(sources.csv(str(tmp_path / "t.tsv"), delimiter="\t", schema=schema))
    assert typed.schema == schema


def test_jsonl_round_trip_and_resume(tmp_path):
    rows = sample(200).to_pylist()
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    src = sources.jsonl(str(tmp_path))
    assert read_source(src, batch_size=33).equals(sample(200))
    split = src.splits(1)[0]
    reader = src.open(split, batch_size=33)
    first = reader.read()
    rest, end = read_split(src, split, position=reader.position(), batch_size=33)
    assert pa.Table.from_batches([first, *rest]).equals(sample(200)) and end == 200
    schema = pa.schema([("id", pa.int32()), ("name", pa.string()), ("score", pa.float64())])
    assert read_source(sources.jsonl(str(tmp_path), schema=schema)).schema == schema


def test_missing_paths_and_bad_arguments_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sources.parquet(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match=r"no file .* matches \*\.parquet"):
        sources.parquet(str(tmp_path))
    with pytest.raises(TypeError, match="path must be"):
        sources.csv(42)
    with pytest.raises(ValueError, match="delimiter"):
        sources.csv(str(tmp_path), delimiter=";;")
    with pytest.raises(TypeError, match="columns"):
        sources.jsonl(str(tmp_path), columns="id")
    pq.write_table(sample(3), tmp_path / "x.parquet")
    src = sources.parquet(str(tmp_path))
    with pytest.raises(ValueError, match="position must be >= 0"):
        src.open(src.splits(1)[0], position=-1)
    with pytest.raises(FileNotFoundError, match="no file in"):
        sources.parquet(str(tmp_path / "*.nothing"))
    assert read_source(sources.parquet(str(tmp_path / "*.parquet"))).equals(sample(3))


# ---------------------------------------------------------------- exactly-once file sinks


BatchFn = Callable[[pa.RecordBatch], pa.RecordBatch]


def crash_once(flag: Path, out: Path) -> BatchFn:
    """Identity on batches; raises once, on the first batch after some output was committed."""

    def fn(batch: pa.RecordBatch) -> pa.RecordBatch:
        if flag.exists() or not any(out.glob("part-*")):
            return batch
        try:  # only the task that creates the flag raises
            os.close(os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return batch
        raise RuntimeError("injected crash")

    return fn


def file_flow(
    data: pa.Table, out: Path, fn: BatchFn, rate: float | None, sink_parallelism: int | None = None
) -> rs.Flow:
    """rows -> map_batches(fn) -> Parquet (rebalanced when the sink has its own parallelism)."""
    flow = rs.Flow("files-exactly-once")
    stream = flow.source("rows", rs.testing.rows(data, batch_size=100), rate=rate)
    stream = stream.map_batches(fn, name="maybe_crash")
    if sink_parallelism is not None:
        stream = stream.rebalance()
    stream.sink("out", rs.sinks.parquet(str(out), row_group_rows=50),
                parallelism=sink_parallelism)
    return flow


def committed(out: Path) -> pa.Table:
    """The output as a reader sees it, files in name order (a task's files in commit order)."""
    assert not list(out.glob("_staging/*/*")), "staged files left behind"
    return read_source(sources.parquet(str(out)))


@pytest.mark.parametrize(("backend", "parallelism"), [("inline", 1), ("local", 2)])
def test_parquet_sink_is_exactly_once_across_a_crash(tmp_path, backend, parallelism):
    data = sample(3000)
    policy = rs.RestartPolicy(attempts=2, backoff_s=0.05)

    def run(name: str, fn: BatchFn) -> tuple[rs.JobResult, pa.Table]:
        out = tmp_path / name
        result = rs.run(file_flow(data, out, fn, rate=3000), backend=backend,
                        parallelism=parallelism, checkpoint_interval="50ms",
                        checkpoint_dir=str(tmp_path / f"ckpt-{name}"), restart=policy)
        return result, committed(out)

    straight, expected = run("straight", lambda batch: batch)
    crashed, got = run("crashed", crash_once(tmp_path / "flag", tmp_path / "crashed"))
    assert straight.restarts == 0 and crashed.restarts == 1
    assert crashed.checkpoints and (tmp_path / "flag").exists()
    if parallelism == 1:
        assert got.equals(expected) and expected.equals(data)  # the same rows, in order
    else:
        assert got.sort_by("id").equals(expected.sort_by("id"))
        assert expected.sort_by("id").equals(data)


def test_parquet_sink_resumes_at_another_parallelism(tmp_path):
    data, out = sample(3000), tmp_path / "out"
    kw = {"backend": "inline", "checkpoint_interval": "50ms",
          "checkpoint_dir": str(tmp_path / "ckpt")}
    flow = file_flow(data, out, crash_once(tmp_path / "flag", out), rate=3000, sink_parallelism=3)
    with pytest.raises(rs.JobFailed, match="injected crash"):
        rs.run(flow, restart=rs.RestartPolicy(attempts=0), **kw)
    before = {p.name[:10] for p in out.glob("part-*")}
    assert before and before <= {"part-00000", "part-00001", "part-00002"}
    # Old sink task j's transactions are recovered by new task j % 2.
    result = rs.run(file_flow(data, out, lambda b: b, rate=None, sink_parallelism=2),
                    resume=True, **kw)
    assert result.state == "finished"
    assert committed(out).sort_by("id").equals(data)
