"""Keyed windows on real workers, checked against the same query in DuckDB."""

import random

import duckdb
import pyarrow as pa
import pytest

import rheostat as rs

DISORDER_MS = 500


def events(n=20_000, keys=50, seed=7):
    """Rows with bounded disorder (< DISORDER_MS), so no row is late."""
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        ts = 1_000_000 + i * 3 + rnd.randint(0, DISORDER_MS - 1) - DISORDER_MS // 2
        rows.append({"k": f"key-{rnd.randint(0, keys) ** 2 % keys}", "v": rnd.randint(-50, 500),
                     "ts": ts})
    return rows


def run_window(mode, data, window, **aggs):
    flow = rs.Flow("windows")
    out = rs.sinks.collect()
    result = (flow.source("ev", rs.testing.rows(data, batch_size=700), timestamp="ts",
                          out_of_order=f"{DISORDER_MS}ms")
              .key_by("k").window(window).aggregate(**aggs))
    result.sink("out", out)
    job = mode.run(flow)
    assert job.counters().get("late", 0) == 0
    return out.table()


def rows_of(table: pa.Table, cols):
    return sorted(tuple(r[c] for c in cols) for r in table.select(cols).to_pylist())


def epoch_ms(table, col):
    return table.set_column(table.schema.get_field_index(col), col,
                            table[col].cast(pa.int64()))


AGGS = dict(n=rs.agg.count(), total=rs.agg.sum("v"), lo=rs.agg.min("v"), hi=rs.agg.max("v"))
COLS = ["k", "window_start", "window_end", "n", "total", "lo", "hi"]


def test_tumbling_matches_duckdb(mode):
    data = events()
    got = run_window(mode, data, rs.windows.tumbling("1s"), **AGGS)
    got = epoch_ms(epoch_ms(got, "window_start"), "window_end")
    ev = pa.Table.from_pylist(data)  # noqa: F841 - read by DuckDB
    ref = duckdb.sql("""
        select k, ts // 1000 * 1000 as window_start, ts // 1000 * 1000 + 1000 as window_end,
               count(*) as n, sum(v) as total, min(v) as lo, max(v) as hi
        from ev group by all""").to_arrow_table()
    assert rows_of(got, COLS) == rows_of(ref, COLS)


def test_sliding_matches_duckdb(mode):
    data = events(8000)
    got = run_window(mode, data, rs.windows.sliding(size="2s", slide="500ms"), **AGGS)
    got = epoch_ms(epoch_ms(got, "window_start"), "window_end")
    ev = pa.Table.from_pylist(data)  # noqa: F841
    ref = duckdb.sql("""
        with w as (
          select k, v, unnest(range(ts // 500 * 500 - 1500, ts // 500 * 500 + 1, 500)) as ws
          from ev)
        select k, ws as window_start, ws + 2000 as window_end, count(*) as n, sum(v) as total,
               min(v) as lo, max(v) as hi
        from w group by all""").to_arrow_table()
    assert rows_of(got, COLS) == rows_of(ref, COLS)


def test_session_matches_duckdb(mode):
    rnd = random.Random(3)
    data, ts = [], 0
    for _ in range(3000):
        ts += rnd.choice([1, 5, 20, 400, 2500])
        data.append({"k": rnd.choice("abc"), "v": rnd.randint(0, 9), "ts": ts})
    got = run_window(mode, data, rs.windows.session("1s"), n=rs.agg.count(),
                     total=rs.agg.sum("v"))
    got = epoch_ms(epoch_ms(got, "window_start"), "window_end")
    ev = pa.Table.from_pylist(data)  # noqa: F841
    ref = duckdb.sql("""
        with g as (
          select *, case when ts - lag(ts) over (partition by k order by ts) < 1000
                         then 0 else 1 end as fresh from ev),
        s as (select *, sum(fresh) over (partition by k order by ts) as sid from g)
        select k, min(ts) as window_start, max(ts) + 1000 as window_end, count(*) as n,
               sum(v) as total
        from s group by k, sid""").to_arrow_table()
    cols = ["k", "window_start", "window_end", "n", "total"]
    assert rows_of(got, cols) == rows_of(ref, cols)


def test_late_rows_go_to_the_late_output_and_are_counted():
    data = [{"k": "a", "v": 1, "ts": t} for t in (1000, 1500, 5000, 1200, 9000, 5100)]
    flow = rs.Flow("late")
    out, late = rs.sinks.collect(), rs.sinks.collect()
    agg = (flow.source("ev", rs.testing.rows(data, batch_size=1), timestamp="ts")
           .key_by("k").window(rs.windows.tumbling("1s")).aggregate(n=rs.agg.count()))
    agg.sink("out", out)
    agg.late.sink("late", late)
    job = rs.run(flow, backend="inline")
    # 1200 arrives after the watermark passed 4999, 5100 after it passed 8999.
    assert [r["ts"] for r in late.to_pylist()] == [1200, 5100]
    assert job.counters()["late"] == 2
    counts = {r["window_start"].timestamp() * 1000: r["n"] for r in out.to_pylist()}
    assert counts == {1000: 2, 5000: 1, 9000: 1}


@pytest.mark.parametrize("lateness", ["0ms", "10s"])
def test_allowed_lateness_updates_a_fired_window(lateness):
    data = [{"k": "a", "v": 1, "ts": t} for t in (1000, 5000, 1200)]
    flow = rs.Flow("lateness")
    out = rs.sinks.collect()
    (flow.source("ev", rs.testing.rows(data, batch_size=1), timestamp="ts")
        .key_by("k").window(rs.windows.tumbling("1s"), allowed_lateness=lateness)
        .aggregate(n=rs.agg.count()).sink("out", out))
    rs.run(flow, backend="inline")
    first_window = [r["n"] for r in out.to_pylist() if r["window_start"].timestamp() == 1]
    assert first_window == ([1] if lateness == "0ms" else [1, 2])
