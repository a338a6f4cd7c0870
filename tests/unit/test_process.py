"""The keyed-process operator: per-key state, timers, snapshots; checked against pandas."""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from key_group_split import feed_split_by_parity

from rheostat.api.process import KeyedProcess, ProcessContext, as_keyed_process, stateful_map
from rheostat.plan.logical import KeyedProcessStep
from rheostat.runtime.messages import MAX_WATERMARK
from rheostat.runtime.operator import OPERATORS, OperatorContext
from rheostat.runtime.operators.process import KeyedProcessOperator

MAXP = 16
GAP = 50
Event = tuple[str, Any]  # ("B", batch) or ("W", watermark)


class RunningCount(KeyedProcess):
    def process(self, key: Any, rows: list[dict], ctx: ProcessContext) -> Iterable[dict]:
        n = ctx.state.get(0)
        for row in rows:
            n += 1
            yield {"count": n, "v": row["v"]}
        ctx.state.set(n)


class SessionTimeout(KeyedProcess):
    """Emits a key's session once it has been quiet for GAP ms of event time."""

    def process(self, key: Any, rows: list[dict], ctx: ProcessContext) -> Iterable[dict]:
        session = ctx.state.get()
        if session is None:
            session = {"start": min(ctx.timestamps), "end": ctx.timestamp, "count": 0}
        else:
            ctx.delete_timer(session["end"] + GAP)
        session["start"] = min(session["start"], *ctx.timestamps)
        session["end"] = max(session["end"], ctx.timestamp)
        session["count"] += len(rows)
        ctx.state.set(session)
        ctx.register_timer(session["end"] + GAP)
        assert ctx.timers() == [session["end"] + GAP]
        return ()

    def on_timer(self, key: Any, timestamp: int, ctx: ProcessContext) -> Iterable[dict]:
        session = ctx.state.get()
        ctx.state.clear()
        return [session]


def make(fn: Any, keys: tuple[str, ...] = ("k",)) -> tuple[KeyedProcessOperator, list]:
    out: list[pa.RecordBatch] = []
    op = KeyedProcessOperator(KeyedProcessStep("p", (), keys=keys, fn=fn))
    op.open(OperatorContext.for_test(op.step, out.append, max_parallelism=MAXP))
    return op, out


def run(op: KeyedProcessOperator, evs: Iterable[Event], end: bool = True) -> None:
    for kind, item in evs:
        if kind == "W":
            op.on_watermark(item)
        else:
            op.on_batch(item, 0)
    if end:
        op.on_watermark(MAX_WATERMARK)
        op.on_end()


def frame(out: list[pa.RecordBatch]) -> pd.DataFrame:
    return pa.Table.from_batches(out).to_pandas() if out else pd.DataFrame()


def random_batches(seed: int, n: int = 600) -> list[pa.RecordBatch]:
    rng = np.random.default_rng(seed)
    table = pa.table({
        "k": rng.choice(["a", "b", "c", "d", "e"], n),
        "v": np.arange(n),
        "_ts": np.sort(rng.integers(0, 5000, n)) + rng.integers(0, 40, n),
    })
    cuts = np.sort(rng.choice(np.arange(1, n), 40, replace=False))
    return [table.slice(a, b - a).to_batches()[0] for a, b in zip([0, *cuts], [*cuts, n])]


def test_running_count_per_key_matches_pandas() -> None:
    batches = random_batches(1)
    op, out = make(RunningCount())
    run(op, [("B", b) for b in batches])
    got = frame(out)
    assert list(got.columns) == ["k", "count", "v", "_ts"]

    rows = pa.Table.from_batches(batches).to_pandas()
    rows["batch"] = np.repeat(np.arange(len(batches)), [b.num_rows for b in batches])
    rows["count"] = rows.groupby("k").cumcount() + 1
    rows["_ts"] = rows.groupby(["batch", "k"])["_ts"].transform("max")
    expected = rows[["k", "count", "v", "_ts"]].sort_values("v").reset_index(drop=True)
    assert got.sort_values("v").reset_index(drop=True).equals(expected)
    parts = [pickle.loads(blob)["state"] for blob in op.snapshot_state().values()]
    assert {k: n for part in parts for k, n in part.items()} == rows["k"].value_counts().to_dict()


def test_stateful_map_with_two_key_columns() -> None:
    def running_sum(total: int | None, row: dict) -> tuple[int, dict | None]:
        total = (total or 0) + row["x"]
        return total, ({"total": total} if row["x"] else None)

    op, out = make(stateful_map(running_sum), keys=("a", "b"))
    op.on_batch(pa.record_batch({"a": [1, 1, 2, 1], "b": ["x", "y", "x", "x"],
                                 "x": [1, 2, 3, 0], "_ts": [5, 6, 7, 8]}), 0)
    op.on_batch(pa.record_batch({"a": [1], "b": ["x"], "x": [10], "_ts": [9]}), 0)
    assert [r for b in out for r in b.to_pylist()] == [
        {"a": 1, "b": "x", "total": 1, "_ts": 8},
        {"a": 1, "b": "y", "total": 2, "_ts": 6},
        {"a": 2, "b": "x", "total": 3, "_ts": 7},
        {"a": 1, "b": "x", "total": 11, "_ts": 9},
    ]
    assert out[0].schema.field("a").type == pa.int64()


def session_events(seed: int) -> tuple[pa.Table, list[Event]]:
    """Bursts per key (spread < 10 ms, GAP * 4 apart), in 20 ms batches shuffled inside,
    each followed by the watermark that closes its 20 ms."""
    rng = np.random.default_rng(seed)
    keys, times = [], []
    for key in ["a", "b", "c", "d"]:
        t = int(rng.integers(0, 100))
        for _ in range(12):
            burst = t + rng.integers(0, 10, int(rng.integers(1, 6)))
            keys += [key] * len(burst)
            times += burst.tolist()
            t += int(burst.max()) - t + 4 * GAP + int(rng.integers(0, 300))
    table = pa.table({"k": keys, "v": np.arange(len(keys)), "_ts": times})
    evs: list[Event] = []
    for start in range(0, max(times) + 20, 20):
        ts = table["_ts"].to_numpy()
        idx = np.flatnonzero((ts >= start) & (ts < start + 20))
        if len(idx):
            evs.append(("B", table.take(rng.permutation(idx)).to_batches()[0]))
        evs.append(("W", start + 19))
    return table, evs


def test_session_timeout_timers_match_pandas() -> None:
    table, evs = session_events(3)
    op, out = make(SessionTimeout())
    for kind, item in evs:
        before = len(out)
        run(op, [(kind, item)], end=False)
        if kind == "W":
            for batch in out[before:]:
                ts = batch["_ts"].to_pylist()
                assert ts == sorted(ts) and ts[-1] <= item  # fired in order, when due
        else:
            assert len(out) == before  # process emits nothing
    run(op, [])

    df = table.to_pandas().sort_values(["k", "_ts"])
    df["session"] = df.groupby("k")["_ts"].diff().gt(GAP).groupby(df["k"]).cumsum()
    expected = (
        df.groupby(["k", "session"])
        .agg(start=("_ts", "min"), end=("_ts", "max"), count=("_ts", "size"))
        .reset_index()
    )
    expected["_ts"] = expected["end"] + GAP
    expected = expected[["k", "start", "end", "count", "_ts"]]
    got = frame(out)[["k", "start", "end", "count", "_ts"]]
    assert len(expected) == 48
    assert (
        got.sort_values(["k", "start"]).reset_index(drop=True)
        .equals(expected.sort_values(["k", "start"]).reset_index(drop=True))
    )
    assert op.snapshot_state() == {}  # every session closed: no state, no timers left


def test_timers_fire_in_order_and_can_be_deleted() -> None:
    class Timers(KeyedProcess):
        def process(self, key: Any, rows: list[dict], ctx: ProcessContext) -> None:
            for row in rows:
                ctx.register_timer(row["at"])
            if key == "b":
                ctx.delete_timer(30)

        def on_timer(self, key: Any, timestamp: int, ctx: ProcessContext) -> list[dict]:
            if timestamp == 10:
                ctx.register_timer(15)  # due at this same watermark: fires in this pass
            return [{"at": timestamp, "wm": ctx.watermark}]

    op, out = make(Timers())
    op.on_batch(pa.record_batch({"k": ["a", "b", "b", "a"], "at": [40, 30, 10, 40],
                                 "_ts": [1, 1, 1, 1]}), 0)
    op.on_watermark(35)
    assert out[0].to_pylist() == [
        {"k": "b", "at": 10, "wm": 35, "_ts": 10},
        {"k": "b", "at": 15, "wm": 35, "_ts": 15},
    ]
    op.on_end()
    assert out[1].to_pylist() == [{"k": "a", "at": 40, "wm": MAX_WATERMARK, "_ts": 40}]


def test_snapshot_restore_split_by_key_group_gives_the_same_output() -> None:
    _, evs = session_events(5)
    straight, straight_out = make(SessionTimeout)  # a class is instantiated
    run(straight, evs)

    half = len(evs) // 2
    first, first_out = make(SessionTimeout())
    run(first, evs[:half], end=False)
    snapshot = pickle.loads(pickle.dumps(first.snapshot_state()))
    assert snapshot and all(0 <= g < MAXP for g in snapshot)
    even = [g for g in range(MAXP) if g % 2 == 0]
    a, a_out = make(SessionTimeout())
    b, b_out = make(SessionTimeout())
    a.restore_state(first.snapshot_state(even))
    b.restore_state({g: part for g, part in snapshot.items() if g % 2})
    first.drop_state(even)
    assert first.snapshot_state() == b.snapshot_state()
    first.drop_state(range(1, MAXP, 2))
    assert first.snapshot_state() == {}

    feed_split_by_parity(evs[half:], a, b, run, MAXP)
    run(a, [])
    run(b, [])
    n_first = len(first_out)
    run(first, [])  # every key group moved away: no timer may fire here
    assert len(first_out) == n_first
    cols = ["k", "start", "end", "count", "_ts"]
    got = frame(first_out + a_out + b_out)[cols].sort_values(["k", "start"])
    want = frame(straight_out)[cols].sort_values(["k", "start"])
    assert got.reset_index(drop=True).equals(want.reset_index(drop=True))


def test_snapshot_is_detached_from_live_state() -> None:
    op, _ = make(RunningCount())
    op.on_batch(pa.record_batch({"k": ["a"], "v": [1], "_ts": [1]}), 0)
    snap = op.snapshot_state()
    op.on_batch(pa.record_batch({"k": ["a"], "v": [2], "_ts": [2]}), 0)
    other, out = make(RunningCount())
    other.restore_state(snap)
    other.on_batch(pa.record_batch({"k": ["a"], "v": [3], "_ts": [3]}), 0)
    assert out[0].to_pylist() == [{"k": "a", "count": 2, "v": 3, "_ts": 3}]


def test_schema_fixes_output_types() -> None:
    class Typed(KeyedProcess):
        schema = pa.schema([("x", pa.float32()), ("note", pa.string())])

        def process(self, key: Any, rows: list[dict], ctx: ProcessContext) -> list[dict]:
            return [{"x": 1}]

    op, out = make(Typed())
    op.on_batch(pa.record_batch({"k": [1], "_ts": [1]}), 0)
    assert out[0].schema == pa.schema(
        [("k", pa.int64()), ("x", pa.float32()), ("note", pa.string()), ("_ts", pa.int64())]
    )


def test_user_errors_propagate_and_bad_output_is_named() -> None:
    class Boom(KeyedProcess):
        def process(self, key: Any, rows: list[dict], ctx: ProcessContext) -> list[Any]:
            if key == "bad":
                raise ValueError("boom")
            return [42]

    op, _ = make(Boom())
    with pytest.raises(ValueError, match="boom"):
        op.on_batch(pa.record_batch({"k": ["bad"], "_ts": [1]}), 0)
    with pytest.raises(TypeError, match=r"step 'p'.*must return dicts.*42"):
        op.on_batch(pa.record_batch({"k": ["ok"], "_ts": [1]}), 0)


def test_registration_and_protocol_checks() -> None:
    assert OPERATORS["keyed_process"] is KeyedProcessOperator
    assert isinstance(as_keyed_process(RunningCount), RunningCount)
    with pytest.raises(TypeError, match="stateful_map"):
        as_keyed_process(lambda state, row: (state, row))
    with pytest.raises(TypeError, match="KeyedProcess"):
        make(lambda key, rows, ctx: rows)


def test_stream_without_event_time() -> None:
    def count(n: int | None, row: dict) -> tuple[int, dict]:
        return (n or 0) + 1, {"n": (n or 0) + 1, "_ts": 99}  # a returned _ts is ignored

    op, out = make(stateful_map(count))
    op.on_batch(pa.record_batch({"k": ["a", "b", "a"]}), 0)
    assert out[0].to_pylist() == [{"k": "a", "n": 1}, {"k": "a", "n": 2}, {"k": "b", "n": 1}]
