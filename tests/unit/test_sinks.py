"""Sinks: part files committed in two phases, stdout, the discarding and the collecting sink."""

from __future__ import annotations

import json
import pickle
import re
import uuid

import fsspec
import pyarrow as pa
import pyarrow.dataset as ds
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


PART = re.compile(r"part-(\d{5})-(c\d{8}|final)-(\d{4})-[0-9a-f]{12}\.(parquet|jsonl)")


def parts(root) -> list[str]:
    """Committed part files of directory ``root``, sorted; fails on anything else but folders."""
    names = sorted(p.name for p in root.iterdir() if p.is_file())
    assert all(PART.fullmatch(n) for n in names), names
    return names


def staged(root) -> list[str]:
    return sorted(p.name for p in root.glob("_staging/*/*"))


def read_back(root, fmt: str) -> pa.Table:
    """The directory as a reader sees it (pyarrow.dataset skips ``_staging``)."""
    dataset = ds.dataset(str(root), format="json" if fmt == "jsonl" else fmt)
    return dataset.to_table()


def ids(root, fmt: str) -> list[int]:
    return sorted(read_back(root, fmt)["id"].to_pylist())


def test_parquet_sink_one_part_file_per_task_reads_back(tmp_path):
    out = tmp_path / "out" / "deeper"
    run(sinks.parquet(str(out), row_group_rows=1000), [batches(2500, 100), batches(30, 7, 5000)])
    names = parts(out)
    assert [PART.fullmatch(n).group(1, 2, 3) for n in names] == [
        ("00000", "final", "0000"), ("00001", "final", "0000")]
    assert sorted(p.name for p in out.iterdir()) == names  # no _staging folder left behind
    table = pq.read_table(out / names[0])
    assert table.equals(pa.Table.from_batches(batches(2500, 100)))
    meta = pq.ParquetFile(out / names[0]).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1000, 1000, 500]
    back = sources.parquet(str(out)).splits(1)
    assert len(back) == 2
    assert pq.read_table(out).num_rows == 2530


def test_parquet_sink_dictionary_only_for_low_cardinality_columns(tmp_path):
    run(sinks.parquet(str(tmp_path)), [batches(5000, 1000)])
    [name] = parts(tmp_path)
    columns = pq.ParquetFile(tmp_path / name).metadata.row_group(0)
    encodings = {columns.column(i).path_in_schema: columns.column(i).encodings
                 for i in range(columns.num_columns)}
    assert any("DICTIONARY" in e for e in encodings["city"])
    assert not any("DICTIONARY" in e for e in encodings["url"])
    assert not any("DICTIONARY" in e for e in encodings["id"])


def test_parquet_sink_rolls_files_and_never_overwrites(tmp_path):
    sink = sinks.parquet(str(tmp_path), rows_per_file=200, row_group_rows=100)
    run(sink, [batches(450, 50)])
    first = parts(tmp_path)
    assert [pq.read_metadata(tmp_path / n).num_rows for n in first] == [200, 200, 50]
    run(sink, [batches(10, 10, 1000)])  # a second job into the same folder adds files
    assert set(first) < set(parts(tmp_path)) and len(parts(tmp_path)) == 4
    assert pq.read_table(tmp_path).num_rows == 460
    run(sinks.jsonl(str(tmp_path / "j"), rows_per_file=40), [batches(100, 100)])
    lines = [len((tmp_path / "j" / n).read_text().splitlines()) for n in parts(tmp_path / "j")]
    assert lines == [40, 40, 20]  # a batch larger than rows_per_file is split


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
    [name] = [p for p in fs.find(root) if "/_staging/" not in p]
    assert PART.fullmatch(name.rsplit("/", 1)[-1])
    with fs.open(name, "rb") as f:
        assert pq.read_table(f).num_rows == 100
    assert fs.find(f"{root}/_staging") == []


def test_jsonl_sink_reads_back(tmp_path):
    run(sinks.jsonl(str(tmp_path)), [batches(120, 50), batches(5, 5, 500)])
    first = parts(tmp_path)[0]
    lines = (tmp_path / first).read_text().splitlines()
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


# ---------------------------------------------------------------- two phases, by hand


def file_sink(fmt: str, root, **kw):
    return getattr(sinks, fmt)(str(root), **kw)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_file_sink_commits_in_order_and_nothing_shows_before(tmp_path, fmt):
    sink = file_sink(fmt, tmp_path, rows_per_file=25)
    assert sink.exactly_once
    writer = sink.open(ctx())
    for batch in batches(60, 20):
        writer.write(batch)
    t1 = writer.prepare(1)
    assert parts(tmp_path) == [] and len(staged(tmp_path)) == 3  # 25 + 25 + 10 rows
    assert pickle.loads(pickle.dumps(t1)) == t1  # it goes into the checkpoint
    writer.write(batches(10, 10, 100)[0])
    t2 = writer.prepare(2)
    assert writer.prepare(3) == ()  # no rows, no files
    writer.commit(1, t1)
    assert ids(tmp_path, fmt) == list(range(60))
    writer.commit(1, t1)  # idempotent
    writer.commit(2, t2)
    writer.commit(2, t2)
    assert ids(tmp_path, fmt) == [*range(60), *range(100, 110)]
    writer.close()
    assert staged(tmp_path) == [] and not (tmp_path / "_staging").exists()
    names = parts(tmp_path)
    assert [PART.fullmatch(n).group(2, 3) for n in names] == [
        ("c00000001", "0000"), ("c00000001", "0001"), ("c00000001", "0002"),
        ("c00000002", "0000")]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_recover_commits_the_restored_checkpoint_and_discards_later_data(tmp_path, fmt):
    sink = file_sink(fmt, tmp_path)
    data = batches(90, 30)
    # Attempt 1: checkpoint 1 completes and commits; 2 is prepared; then rows of 3; crash.
    first = sink.open(ctx())
    first.write(data[0])
    t1 = first.prepare(1)
    first.commit(1, t1)
    first.write(data[1])
    first.prepare(2)  # its checkpoint never completes
    first.write(data[2])
    first.prepare(3)
    assert len(staged(tmp_path)) == 2
    # Attempt 2 restores checkpoint 1 (its state holds t1) and replays from there.
    second = sink.open(ctx())
    second.recover([(1, t1)])
    assert staged(tmp_path) == [] and ids(tmp_path, fmt) == list(range(30))
    for batch in data[1:]:
        second.write(batch)
    t4 = second.prepare(4)
    second.commit(4, t4)
    final = second.prepare(FINAL_CHECKPOINT)
    second.commit(FINAL_CHECKPOINT, final)
    second.close()
    assert ids(tmp_path, fmt) == list(range(90))  # each row exactly once
    assert staged(tmp_path) == []


def test_recover_commits_a_completed_checkpoint_whose_commit_was_lost(tmp_path):
    sink = sinks.parquet(str(tmp_path))
    first = sink.open(ctx())
    first.write(batches(10, 10)[0])
    t1 = first.prepare(1)  # the checkpoint completes, the task dies before committing
    second = sink.open(ctx())
    second.recover([(1, t1)])
    assert ids(tmp_path, "parquet") == list(range(10))
    third = sink.open(ctx())
    third.recover([(1, t1)])  # restored again: committed once
    assert ids(tmp_path, "parquet") == list(range(10)) and staged(tmp_path) == []


def test_recover_at_another_parallelism_touches_only_its_own_old_tasks(tmp_path):
    sink = sinks.parquet(str(tmp_path))
    restored: dict[int, list] = {0: [], 1: []}
    for task in range(3):  # old job: parallelism 3; checkpoint 1 complete, 2 prepared
        writer = sink.open(ctx(task, 3))
        writer.write(batches(5, 5, 100 * task)[0])
        restored[task % 2].append((1, writer.prepare(1)))
        writer.write(batches(5, 5, 100 * task + 50)[0])
        writer.prepare(2)
    assert len(staged(tmp_path)) == 6
    new1 = sink.open(ctx(1, 2))
    new1.recover(restored[1])  # old task 1
    assert len(staged(tmp_path)) == 4  # old tasks 0 and 2 belong to new task 0
    new1.write(batches(5, 5, 1000)[0])
    t5 = new1.prepare(5)
    new0 = sink.open(ctx(0, 2))
    new0.recover(restored[0])  # old tasks 0 and 2; new task 1's staged file stays
    assert len(staged(tmp_path)) == 1
    new1.commit(5, t5)
    assert ids(tmp_path, "parquet") == [*range(5), *range(100, 105), *range(200, 205),
                                        *range(1000, 1005)]
    assert {PART.fullmatch(n).group(1) for n in parts(tmp_path)} == {"00000", "00001", "00002"}


def test_steps_sharing_a_folder_keep_their_staged_files_apart(tmp_path):
    sink = sinks.jsonl(str(tmp_path))

    def step(name: str):
        return sink.open(SinkContext(name, 0, 1, lambda batch, key=None: None))

    old_a, b = step("out a/b"), step("other")
    old_a.write(batches(3, 3)[0])
    old_a.prepare(1)
    b.write(batches(2, 2, 10)[0])
    tb = b.prepare(1)
    assert len(staged(tmp_path)) == 2
    step("out a/b").recover([])  # a restarted "out a/b" discards only its own step's files
    assert len(staged(tmp_path)) == 1
    assert [p.parent.name for p in (tmp_path / "_staging").glob("*/*")] == ["other"]
    assert {p.name[:8] for p in (tmp_path / "_staging").iterdir()} == {"other", "out_a_b-"}
    b.commit(1, tb)
    assert ids(tmp_path, "jsonl") == [10, 11]


def test_a_commit_whose_files_are_gone_warns_and_goes_on(tmp_path, caplog):
    writer = sinks.parquet(str(tmp_path)).open(ctx())
    writer.write(batches(3, 3)[0])
    t1 = writer.prepare(1)
    for path in (tmp_path / "_staging").rglob("*.inprogress"):
        path.unlink()
    writer.commit(1, t1)
    assert "rows are lost" in caplog.text and parts(tmp_path) == []


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
