"""Queries of the job's tables are read-only in SQLite itself, however they are spelled,
and stop at their time limit."""

import pytest

from rheostat.control.tables import JobTables, QueryTimeout, query_file

WRITES = [
    "with x as (select 1) delete from checkpoints",
    "with x as (select 1) update jobs set state = 'hacked'",
    "with x as (select 1) insert into jobs (job) values ('hacked')",
    "insert into jobs (job) values ('hacked') returning job",
    "update jobs set state = 'hacked' returning job",
    "delete from checkpoints returning checkpoint_id",
    "replace into jobs (job) values ('hacked')",
    "  DELETE FROM checkpoints",
    "attach database '{dir}/other.sqlite' as other",
    "pragma journal_mode = delete",
    "pragma user_version = 7",
    "pragma writable_schema = 1",
    "vacuum into '{dir}/copy.sqlite'",
    "vacuum",
    "create table hacked (a)",
    "create temp table hacked (a)",
    "create view hacked as select 1",
    "drop table checkpoints",
    "alter table jobs add column hacked",
    "begin immediate",
    "select 1; delete from checkpoints",
    "select load_extension('x')",
]


@pytest.fixture(params=["memory", "file"])
def tables(request, tmp_path):
    tables = JobTables(None if request.param == "memory" else tmp_path / "t.sqlite", job="j")
    tables.checkpoint_triggered(1)
    tables.checkpoint_done(1, "completed", parts=2, size=10)
    yield tables
    tables.close()


def state(tables):
    return (tables.query("select job, state from jobs").to_pylist(),
            tables.query("select checkpoint_id from checkpoints").to_pylist(),
            tables.query("select name from sqlite_master order by name").to_pylist())


@pytest.mark.parametrize("sql", WRITES)
def test_every_write_is_refused(tables, tmp_path, sql):
    before = state(tables)
    with pytest.raises(ValueError, match="read-only"):
        tables.query(sql.format(dir=tmp_path))
    assert state(tables) == before
    assert not (tmp_path / "copy.sqlite").exists() and not (tmp_path / "other.sqlite").exists()


@pytest.mark.parametrize("sql", [*WRITES[:8], "create table hacked (a)", "drop table jobs"])
def test_every_write_is_refused_from_another_process_too(tmp_path, sql):
    tables = JobTables(tmp_path / "t.sqlite", job="j")
    tables.checkpoint_triggered(1)
    with pytest.raises(ValueError, match="read-only"):
        query_file(tmp_path / "t.sqlite", sql)
    assert tables.query("select count(*) as n from checkpoints").to_pylist() == [{"n": 1}]


def test_reads_still_work(tables):
    assert tables.query("select checkpoint_id, parts from checkpoints").to_pylist() == [
        {"checkpoint_id": 1, "parts": 2}]
    assert tables.query("with recursive c(n) as (select 1 union all select n + 1 from c "
                        "where n < 5) select sum(n) as s from c").to_pylist() == [{"s": 15}]
    columns = tables.query("pragma table_info(checkpoints)")["name"].to_pylist()
    assert columns[:2] == ["job", "checkpoint_id"]
    assert tables.query("select upper(state) as s from checkpoints")["s"].to_pylist() == [
        "COMPLETED"]


def test_a_long_query_stops_at_its_time_limit_and_says_so(tables):
    endless = "with recursive c(n) as (select 1 union all select n + 1 from c) select max(n) from c"
    with pytest.raises(QueryTimeout, match=r"time limit of 0\.2 s"):
        tables.query(endless, timeout_s=0.2)
    with pytest.raises(ValueError, match="more than 3 rows"):
        tables.query("select 1 from metrics union all select 1 from (values (1), (2), (3), "
                     "(4))", max_rows=3)
    tables.checkpoint_triggered(2)  # the writer was never held up
    assert len(tables.query("select * from checkpoints")) == 2
