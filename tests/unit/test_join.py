"""Window and interval join operators against DuckDB over the same rows."""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from key_group_split import feed_split_by_parity

from rheostat.plan.logical import JoinStep, Sliding, Tumbling, WindowSpec
from rheostat.runtime.messages import MAX_WATERMARK
from rheostat.runtime.operator import OPERATORS, OperatorContext
from rheostat.runtime.operators.join import IntervalJoin, Join, WindowJoin

MAXP = 16
JITTER = 60  # how far out of order the generated input is (ms)
Event = tuple[str, Any]  # ("L" | "R", batch) or ("W", watermark)


def make(step: JoinStep) -> tuple[Join, list[pa.RecordBatch], OperatorContext]:
    out: list[pa.RecordBatch] = []
    op = Join(step)
    ctx = OperatorContext.for_test(step, out.append, max_parallelism=MAXP)
    op.open(ctx)
    return op, out, ctx


def window_step(window: WindowSpec, **kw: Any) -> JoinStep:
    return JoinStep("j", (), left_keys=("k",), right_keys=("k",), window=window, **kw)


def interval_step(lower: int, upper: int) -> JoinStep:
    return JoinStep("j", (), left_keys=("k",), right_keys=("k",), lower_ms=lower, upper_ms=upper)


def tables(seed: int, n: int = 400) -> tuple[pa.Table, pa.Table]:
    rng = np.random.default_rng(seed)

    def side(col: str) -> pa.Table:
        return pa.table({
            "k": rng.integers(0, 6, n),
            "v": np.arange(n),
            col: rng.choice(["a", "b", "c"], n),
            "_ts": rng.integers(0, 3000, n),
        })

    return side("name"), side("w")


def events(left: pa.Table, right: pa.Table, seed: int) -> list[Event]:
    """Both sides interleaved, up to JITTER ms out of order, in random batches, each
    followed by a bounded-out-of-orderness watermark (so no row is late)."""
    rng = np.random.default_rng(seed)
    rows = [("L", i, t) for i, t in enumerate(left["_ts"].to_pylist())]
    rows += [("R", i, t) for i, t in enumerate(right["_ts"].to_pylist())]
    noise = rng.integers(0, JITTER, len(rows))
    order = np.argsort([t + d for (_, _, t), d in zip(rows, noise)], kind="stable")
    out: list[Event] = []
    seen = -(2**62)
    pos = 0
    while pos < len(order):
        chunk = [rows[i] for i in order[pos : pos + int(rng.integers(1, 30))]]
        pos += len(chunk)
        sides = [("L", left), ("R", right)]
        for side, table in (sides[j] for j in rng.permutation(2)):
            idx = [i for s, i, _ in chunk if s == side]
            if idx:
                out.append((side, table.take(idx).to_batches()[0]))
        seen = max(seen, *(t for _, _, t in chunk))
        if rng.random() < 0.7:
            out.append(("W", seen - JITTER - 1))
    return out


def run(op: Join, evs: Iterable[Event], end: bool = True) -> None:
    for kind, item in evs:
        if kind == "W":
            op.on_watermark(item)
        else:
            op.on_batch(item, 0 if kind == "L" else 1)
    if end:
        op.on_watermark(MAX_WATERMARK)
        op.on_end()


def rows_of(out: list[pa.RecordBatch]) -> list[tuple[Any, ...]]:
    if not out:
        return []
    table = pa.Table.from_batches(out)
    for name in ("window_start", "window_end"):
        if name in table.column_names:
            i = table.column_names.index(name)
            table = table.set_column(i, name, table[name].cast(pa.int64()))
    return sorted(zip(*(c.to_pylist() for c in table.columns)))


def window_reference(
    lt: pa.Table, rt: pa.Table, size: int, slide: int, offset: int
) -> list[tuple[Any, ...]]:
    first = offset - slide * (size // slide + 2)
    return sorted(duckdb.sql(f"""
        WITH w AS (SELECT ws FROM generate_series({first}, 4000, {slide}) t(ws))
        SELECT l.k, l.v, l.name, r.v, r.w, w.ws, w.ws + {size}, w.ws + {size} - 1
        FROM lt l JOIN rt r ON l.k = r.k
        JOIN w ON l._ts >= w.ws AND l._ts < w.ws + {size}
              AND r._ts >= w.ws AND r._ts < w.ws + {size}
    """).fetchall())


@pytest.mark.parametrize(
    ("window", "seed"),
    [(Tumbling(100), 1), (Tumbling(250, offset_ms=30), 2), (Sliding(200, 50), 3),
     (Sliding(150, 100, offset_ms=7), 4), (Sliding(50, 80), 5)],
)
def test_window_join_matches_duckdb(window: WindowSpec, seed: int) -> None:
    left, right = tables(seed)
    op, out, ctx = make(window_step(window))
    run(op, events(left, right, seed))
    slide = window.slide_ms if isinstance(window, Sliding) else window.size_ms
    expected = window_reference(left, right, window.size_ms, slide, window.offset_ms)
    assert len(expected) > 100
    assert rows_of(out) == expected
    assert out[0].schema.names == [
        "k", "v", "name", "v_right", "w", "window_start", "window_end", "_ts"
    ]
    assert out[0].schema.field("window_start").type == pa.timestamp("ms")
    assert ctx.counters["late_dropped"] == 0
    assert op.buffered_rows == (0, 0)


def test_window_join_fires_only_when_watermark_reaches_window_end() -> None:
    op, out, _ = make(window_step(Tumbling(10)))
    op.on_batch(pa.record_batch({"k": [1, 1], "a": [1, 2], "_ts": [3, 12]}), 0)
    op.on_batch(pa.record_batch({"k": [1, 1], "b": [5, 6], "_ts": [9, 15]}), 1)
    op.on_watermark(8)
    assert out == []
    op.on_watermark(9)
    assert rows_of(out) == [(1, 1, 5, 0, 10, 9)]
    assert op.buffered_rows == (1, 1)


def test_window_join_late_rows_are_counted() -> None:
    op, out, ctx = make(window_step(Sliding(20, 10)))
    op.on_watermark(19)  # windows ending at 10 and 20 have fired
    op.on_batch(pa.record_batch({"k": [1, 1], "a": [1, 2], "_ts": [5, 15]}), 0)
    op.on_batch(pa.record_batch({"k": [1], "b": [7], "_ts": [25]}), 1)
    assert ctx.counters["late_dropped"] == 1  # ts 5: every window fired; 15 still in [10, 30)
    op.on_end()
    assert rows_of(out) == [(1, 2, 7, 10, 30, 29)]


def test_interval_join_late_rows_are_counted() -> None:
    op, out, ctx = make(interval_step(-10, 20))
    op.on_watermark(100)  # on-time rows are > 100; kept: left ts >= 80, right ts >= 90
    # Left 60 could join right rows <= 80 only: none kept, none to come -> late.
    # Left 75 could still join kept right rows in [90, 95] (there are none yet); it is
    # not kept itself. Left 85 is kept.
    op.on_batch(pa.record_batch({"k": [1, 1, 1], "a": [60, 75, 85], "_ts": [60, 75, 85]}), 0)
    # Right 60 could join left rows in [40, 70] only -> late. Right 80 joins left 85
    # (left 75 was not kept); right 95 joins left 85 and is kept.
    op.on_batch(pa.record_batch({"k": [1, 1, 1], "b": [60, 80, 95], "_ts": [60, 80, 95]}), 1)
    assert ctx.counters["late_dropped"] == 2
    assert op.buffered_rows == (1, 1)
    op.on_batch(pa.record_batch({"k": [1], "a": [101], "_ts": [101]}), 0)
    assert rows_of(out) == [(1, 85, 80, 85), (1, 85, 95, 95), (1, 101, 95, 101)]


@pytest.mark.parametrize(
    ("lower", "upper", "seed"), [(-50, 30, 1), (-80, -20, 2), (0, 0, 3), (10, 60, 4)]
)
def test_interval_join_matches_duckdb_and_evicts(lower: int, upper: int, seed: int) -> None:
    lt, rt = tables(seed)
    op, out, ctx = make(interval_step(lower, upper))
    seen: dict[str, list[int]] = {"L": [], "R": []}
    for kind, item in events(lt, rt, seed):
        run(op, [(kind, item)], end=False)
        if kind == "W":
            kept_l = sum(t + upper >= item for t in seen["L"])
            kept_r = sum(t - lower >= item for t in seen["R"])
            assert op.buffered_rows == (kept_l, kept_r)
        else:
            seen[kind] += item["_ts"].to_pylist()
    run(op, [])
    expected = sorted(duckdb.sql(f"""
        SELECT l.k, l.v, l.name, r.v, r.w, greatest(l._ts, r._ts)
        FROM lt l JOIN rt r ON l.k = r.k
         AND r._ts BETWEEN l._ts + {lower} AND l._ts + {upper}
    """).fetchall())
    assert len(expected) > 5
    assert rows_of(out) == expected
    assert out[0].schema.names == ["k", "v", "name", "v_right", "w", "_ts"]
    assert ctx.counters["late_dropped"] == 0
    assert op.buffered_rows == (0, 0)


def test_interval_join_state_shrinks_with_the_watermark() -> None:
    op, _, _ = make(interval_step(-5, 5))
    ts = list(range(0, 1000, 10))
    op.on_batch(pa.record_batch({"k": [1] * len(ts), "_ts": ts}), 0)
    op.on_batch(pa.record_batch({"k": [2] * len(ts), "_ts": ts}), 1)
    assert op.buffered_rows == (100, 100)
    op.on_watermark(500)  # left kept while ts + 5 >= 500, right while ts + 5 >= 500
    assert op.buffered_rows == (50, 50)
    op.on_watermark(MAX_WATERMARK)
    assert op.buffered_rows == (0, 0)


def test_keys_with_other_names_are_kept_and_clashes_suffixed() -> None:
    step = JoinStep("j", (), left_keys=("a", "b"), right_keys=("a", "rb"), lower_ms=0,
                    upper_ms=0, suffixes=("_l", "_r"))
    op, out, _ = make(step)
    op.on_batch(pa.record_batch({"a": [1], "b": ["x"], "x": [1], "_ts": [5]}), 0)
    op.on_batch(pa.record_batch({"a": [1], "rb": ["x"], "x": [2], "_ts": [5]}), 1)
    assert out[0].to_pylist() == [{"a": 1, "b": "x", "x_l": 1, "rb": "x", "x_r": 2, "_ts": 5}]


def test_output_name_clash_is_a_clear_error() -> None:
    op, _, _ = make(window_step(Tumbling(10)))
    op.on_batch(pa.record_batch({"k": [1], "window_end": [1], "_ts": [1]}), 0)
    op.on_batch(pa.record_batch({"k": [1], "_ts": [1]}), 1)
    with pytest.raises(ValueError, match=r"'window_end'.*twice"):
        op.on_watermark(9)


def test_construction_picks_the_join_and_checks_the_step() -> None:
    assert OPERATORS["join"] is Join
    assert isinstance(Join(window_step(Tumbling(10))), WindowJoin)
    assert isinstance(Join(interval_step(-1, 1)), IntervalJoin)
    with pytest.raises(ValueError, match="lower bound"):
        Join(interval_step(5, 1))
    with pytest.raises(ValueError, match="equal length"):
        Join(JoinStep("j", (), left_keys=("a",), right_keys=()))


@pytest.mark.parametrize(
    "step", [window_step(Sliding(200, 50)), interval_step(-60, 40)], ids=["window", "interval"]
)
def test_snapshot_restore_split_by_key_group_gives_the_same_output(step: JoinStep) -> None:
    left, right = tables(7)
    evs = events(left, right, 7)
    straight, straight_out, _ = make(step)
    run(straight, evs)

    half = len(evs) // 2
    first, first_out, _ = make(step)
    run(first, evs[:half], end=False)
    snapshot = pickle.loads(pickle.dumps(first.snapshot_state()))
    assert snapshot and all(0 <= g < MAXP for g in snapshot)
    even = [g for g in range(MAXP) if g % 2 == 0]
    a, a_out, _ = make(step)
    b, b_out, _ = make(step)
    a.restore_state(first.snapshot_state(even))
    b.restore_state({g: part for g, part in snapshot.items() if g % 2})
    assert sum(a.buffered_rows) + sum(b.buffered_rows) == sum(first.buffered_rows)
    first.drop_state(even)
    assert first.buffered_rows == b.buffered_rows
    first.drop_state(range(1, MAXP, 2))
    assert first.buffered_rows == (0, 0)

    feed_split_by_parity(evs[half:], a, b, run, MAXP)
    run(a, [])
    run(b, [])
    assert rows_of(first_out + a_out + b_out) == rows_of(straight_out)


def test_restored_join_judges_lateness_by_the_snapshot_watermark() -> None:
    op, _, _ = make(interval_step(0, 10))
    op.on_batch(pa.record_batch({"k": [1], "_ts": [100]}), 0)
    op.on_watermark(105)
    restored, out, ctx = make(interval_step(0, 10))
    restored.restore_state(pickle.loads(pickle.dumps(op.snapshot_state())))
    restored.on_batch(pa.record_batch({"k": [1, 1], "_ts": [50, 104]}), 1)
    assert ctx.counters["late_dropped"] == 1  # right 50 could only join left rows <= 50
    assert rows_of(out) == [(1, 104)]
