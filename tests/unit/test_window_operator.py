"""The window operator against an independent reference: a per-row Python model of the
documented (Flink) semantics decides which rows each emitted window holds, and DuckDB
computes the aggregates over those rows."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rheostat.plan.logical import (
    LATE,
    Agg,
    Session,
    Sliding,
    Tumbling,
    WindowAggregateStep,
    WindowSpec,
)
from rheostat.runtime import window_state
from rheostat.runtime.keys import key_groups
from rheostat.runtime.messages import MAX_WATERMARK, MIN_WATERMARK
from rheostat.runtime.operator import OperatorContext, build_operator
from rheostat.runtime.operators.windows import WindowAggregate

KEYS = ("k", "j")
SCHEMA = pa.schema([("k", pa.string()), ("j", pa.int64()), ("x", pa.int64()),
                    ("y", pa.string()), ("_ts", pa.int64()), ("seq", pa.int64())])
AGGS = (
    ("rows", Agg("count")), ("valid", Agg("count", "x")), ("total", Agg("sum", "x")),
    ("avg", Agg("mean", "x")), ("lo", Agg("min", "x")), ("hi", Agg("max", "x")),
    ("fx", Agg("first", "x")), ("lx", Agg("last", "x")), ("fy", Agg("first", "y")),
    ("ly", Agg("last", "y")), ("miny", Agg("min", "y")), ("red", Agg("reduce", "x", operator.add)),
)
REFERENCE_SQL = """
SELECT eid, k, j, ws, we, count(*) AS rows, count(x) AS valid, sum(x)::BIGINT AS total,
       avg(x) AS avg, min(x) AS lo, max(x) AS hi,
       arg_min(x, _ts * 1000000 + seq) FILTER (WHERE x IS NOT NULL) AS fx,
       arg_max(x, _ts * 1000000 + seq) FILTER (WHERE x IS NOT NULL) AS lx,
       arg_min(y, _ts * 1000000 + seq) FILTER (WHERE y IS NOT NULL) AS fy,
       arg_max(y, _ts * 1000000 + seq) FILTER (WHERE y IS NOT NULL) AS ly,
       min(y) AS miny, sum(x)::BIGINT AS red
FROM contributions GROUP BY ALL
"""


# --- the reference model ----------------------------------------------------------


def windows_of(ts: int, w: WindowSpec) -> list[tuple[int, int]]:
    size = w.size_ms
    slide = w.slide_ms if isinstance(w, Sliding) else size
    k, out = (ts - w.offset_ms) // slide, []
    while w.offset_ms + k * slide + size > ts:
        start = w.offset_ms + k * slide
        if start <= ts:
            out.append((start, start + size))
        k -= 1
    return out


@dataclass
class Pane:
    rows: list[dict] = field(default_factory=list)
    dirty: bool = True


@dataclass
class Reference:
    window: WindowSpec
    lateness: int
    watermark: int = MIN_WATERMARK
    state: dict[tuple, Pane] = field(default_factory=dict)  # (key, start, end) -> rows
    late: list[int] = field(default_factory=list)
    outside: int = 0

    def batch(self, rows: list[dict]) -> None:
        if isinstance(self.window, Session):
            return self._session_batch(rows)
        for r in rows:
            wins = windows_of(r["_ts"], self.window)
            live = [w for w in wins if w[1] - 1 + self.lateness > self.watermark]
            if live:
                for w in live:
                    self.state.setdefault((key(r), *w), Pane(dirty=False)).rows.append(r)
                    self.state[(key(r), *w)].dirty = True
            elif wins or r["_ts"] + self.lateness <= self.watermark:
                self.late.append(r["seq"])
            else:
                self.outside += 1

    def _session_batch(self, rows: list[dict]) -> None:
        gap = self.window.gap_ms
        for k in dict.fromkeys(key(r) for r in rows):
            old = [(s, e, p, p.rows) for (kk, s, e), p in self.state.items() if kk == k]
            new = [(r["_ts"], r["_ts"] + gap, False, [r]) for r in rows if key(r) == k]
            for s, e, _, _ in old:
                del self.state[(k, s, e)]
            groups: list[list] = []
            for iv in sorted(old + new, key=lambda iv: iv[0]):
                if groups and iv[0] <= max(g[1] for g in groups[-1]):
                    groups[-1].append(iv)
                else:
                    groups.append([iv])
            for g in groups:
                start, end = min(iv[0] for iv in g), max(iv[1] for iv in g)
                members = sorted((r for iv in g for r in iv[3]), key=lambda r: r["seq"])
                if len(g) == 1 and g[0][2]:  # an untouched stored session
                    self.state[(k, start, end)] = g[0][2]
                elif not any(iv[2] for iv in g) and end - 1 + self.lateness <= self.watermark:
                    self.late.extend(r["seq"] for r in members)
                else:
                    self.state[(k, start, end)] = Pane(members, dirty=True)

    def advance(self, watermark: int) -> list[tuple]:
        """Fire, then expire; returns (key, start, end, rows) of every emitted window."""
        new = max(watermark, self.watermark)
        out = []
        for (k, s, e), pane in self.state.items():
            if pane.dirty and e - 1 <= new:
                out.append((k, s, e, list(pane.rows)))
                pane.dirty = False
        self.state = {w: p for w, p in self.state.items() if w[2] - 1 + self.lateness > new}
        self.watermark = new
        return out


def key(r: dict) -> tuple:
    return tuple(r[k] for k in KEYS)


def reference_results(emitted: list[tuple[int, tuple]]) -> list[tuple]:
    rows = [{"eid": eid, "k": k[0], "j": k[1], "ws": s, "we": e, **{c: r[c] for c in
             ("x", "y", "_ts", "seq")}} for eid, (k, s, e, members) in emitted for r in members]
    contributions = pa.Table.from_pylist(rows, pa.schema(
        [("eid", pa.int64()), ("k", pa.string()), ("j", pa.int64()), ("ws", pa.int64()),
         ("we", pa.int64()), ("x", pa.int64()), ("y", pa.string()), ("_ts", pa.int64()),
         ("seq", pa.int64())]))
    con = duckdb.connect()
    con.register("contributions", contributions)
    cur = con.execute(REFERENCE_SQL)
    names = [d[0] for d in cur.description]
    return normalise([dict(zip(names, r)) for r in cur.fetchall()])


def normalise(rows: list[dict]) -> list[tuple]:
    out = []
    for r in rows:
        r = dict(r)
        r["avg"] = None if r["avg"] is None else round(r["avg"], 9)
        out.append(tuple((c, r[c]) for c in sorted(r)))
    return sorted(out, key=repr)


# --- running the operator ---------------------------------------------------------


@dataclass
class Run:
    op: WindowAggregate
    ctx: OperatorContext
    main: list[pa.RecordBatch]
    ports: dict[str, list[pa.RecordBatch]]
    results: list[dict] = field(default_factory=list)
    eid: int = 0

    def collect(self) -> None:
        for b in self.main:
            t = pa.Table.from_batches([b])
            assert t.column_names == [*KEYS, "window_start", "window_end", *(n for n, _ in
                                                                         self.op.step.aggs), "_ts"]
            assert t.schema.field("window_end").type == pa.timestamp("ms")
            ws = t["window_start"].cast(pa.int64()).to_pylist()
            we = t["window_end"].cast(pa.int64()).to_pylist()
            assert t["_ts"].to_pylist() == [e - 1 for e in we]
            for i, r in enumerate(t.drop_columns(["window_start", "window_end", "_ts"])
                                  .to_pylist()):
                self.results.append({"eid": self.eid, "ws": ws[i], "we": we[i], **r})
        self.main.clear()
        self.eid += 1


def start(step: WindowAggregateStep, max_parallelism: int = 4096,
          ports: dict[str, list[pa.RecordBatch]] | None = None) -> Run:
    op = build_operator(step)
    assert isinstance(op, WindowAggregate)
    main: list[pa.RecordBatch] = []
    ports = {} if ports is None else ports
    ctx = OperatorContext.for_test(step, main.append, max_parallelism=max_parallelism,
                                   ports=ports)
    op.open(ctx)
    return Run(op, ctx, main, ports)


def make_step(window: WindowSpec, lateness: int = 0, aggs: tuple = AGGS) -> WindowAggregateStep:
    return WindowAggregateStep("w", (), keys=KEYS, window=window, aggs=aggs,
                               allowed_lateness_ms=lateness)


def to_batch(rows: list[dict]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(rows, SCHEMA)


def late_seqs(run: Run) -> list[int]:
    return sorted(s for b in run.ports.get(LATE, []) for s in b.column("seq").to_pylist())


# --- property tests ---------------------------------------------------------------

windows = st.one_of(
    st.builds(Tumbling, st.integers(1, 20), st.integers(0, 9)),
    st.integers(1, 12).flatmap(lambda slide: st.builds(
        Sliding, st.integers(1, 30), st.just(slide), st.integers(0, slide - 1))),
    st.builds(Session, st.integers(1, 15)),
)
rows = st.fixed_dictionaries({
    "k": st.sampled_from(["a", "b", None]), "j": st.integers(0, 1),
    "x": st.none() | st.integers(-100, 100), "y": st.none() | st.sampled_from(["p", "q", "r"]),
    "_ts": st.integers(-10, 60),
})
events = st.lists(st.one_of(st.lists(rows, min_size=1, max_size=12),
                            st.integers(-20, 70)), max_size=14)


def run_both(window: WindowSpec, lateness: int, script: list, cut: int | None = None):
    """Feed ``script`` to the operator and the reference; optionally snapshot at ``cut``."""
    ref = Reference(window, lateness)
    run = start(make_step(window, lateness))
    emitted: list[tuple[int, tuple]] = []
    seq = 0
    for i, ev in enumerate([*script, MAX_WATERMARK]):
        if i == cut:
            run = restored(run, make_step(window, lateness))
        if isinstance(ev, list):
            batch = [{**r, "seq": seq + n} for n, r in enumerate(ev)]
            seq += len(batch)
            ref.batch(batch)
            run.op.on_batch(to_batch(batch), 0)
        else:
            emitted += [(run.eid, w) for w in ref.advance(ev)]
            run.op.on_watermark(ev)
            run.collect()
    run.op.on_end()
    run.collect()
    return run, ref, emitted


def restored(run: Run, step: WindowAggregateStep) -> Run:
    """A fresh operator restored from ``run``'s snapshot through Arrow IPC."""
    sink = pa.BufferOutputStream()
    snap = run.op.snapshot_state()
    with pa.ipc.new_stream(sink, snap.schema) as w:
        w.write_table(snap)
    table = pa.ipc.open_stream(sink.getvalue()).read_all()
    fresh = start(step, ports=run.ports)
    fresh.op.restore_state(table)
    fresh.results, fresh.eid = run.results, run.eid
    fresh.ctx.counters = run.ctx.counters
    return fresh


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(window=windows, lateness=st.sampled_from([0, 0, 4, 25]), script=events,
       chunks=st.sampled_from([1, 4]))
def test_matches_reference(window: WindowSpec, lateness: int, script: list, chunks: int) -> None:
    with mock.patch.object(window_state, "MAX_CHUNKS", chunks):  # 1: compact all the time
        run, ref, emitted = run_both(window, lateness, script)
    assert normalise(run.results) == reference_results(emitted)
    assert late_seqs(run) == sorted(ref.late)
    assert run.ctx.counters["late"] == len(ref.late)
    assert run.ctx.counters["outside_windows"] == ref.outside


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(window=windows, lateness=st.sampled_from([0, 10]), script=events, data=st.data())
def test_snapshot_restore_midway_changes_nothing(
    window: WindowSpec, lateness: int, script: list, data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(script)))
    straight, _, _ = run_both(window, lateness, script)
    resumed, _, _ = run_both(window, lateness, script, cut=cut)
    assert normalise(resumed.results) == normalise(straight.results)
    assert late_seqs(resumed) == late_seqs(straight)


# --- focused cases ----------------------------------------------------------------


def rows_of(run: Run, *cols: str) -> list[tuple]:
    return [tuple(r[c] for c in cols) for r in run.results]


def feed(run: Run, *events: Any) -> None:
    for ev in events:
        if isinstance(ev, list):
            run.op.on_batch(to_batch([{"k": "a", "j": 0, "x": 1, "y": None, "seq": 0, **r}
                                      for r in ev]), 0)
        else:
            run.op.on_watermark(ev)
            run.collect()


def test_tumbling_fires_at_end_minus_one_and_sends_late_rows_aside() -> None:
    run = start(make_step(Tumbling(10)))
    feed(run, [{"_ts": 3}, {"_ts": 9}, {"_ts": 10}], 8)
    assert run.results == []
    feed(run, 9)
    assert rows_of(run, "ws", "we", "rows") == [(0, 10, 2)]
    feed(run, [{"_ts": 5, "seq": 7}, {"_ts": 12}], 19)
    assert rows_of(run, "ws", "we", "rows") == [(0, 10, 2), (10, 20, 2)]
    assert late_seqs(run) == [7] and run.ctx.counters["late"] == 1
    late = run.ports[LATE][0]
    assert late.schema == SCHEMA  # late rows go out unchanged, every column


def test_allowed_lateness_updates_a_fired_window_and_re_emits_it() -> None:
    run = start(make_step(Tumbling(10), lateness=5))
    feed(run, [{"_ts": 3}, {"_ts": 4, "k": "b"}], 9)
    assert sorted(rows_of(run, "k", "rows")) == [("a", 1), ("b", 1)]
    feed(run, [{"_ts": 5}], 12)  # window [0, 10) kept until watermark 14
    assert rows_of(run, "eid", "k", "rows")[-1] == (1, "a", 2)  # only the updated key
    assert len(run.results) == 3
    feed(run, [{"_ts": 6, "seq": 9}], 13, 14, [{"_ts": 7, "seq": 11}], 20)
    assert rows_of(run, "eid", "k", "rows")[-1] == (2, "a", 3)
    assert late_seqs(run) == [11]


def test_sliding_window_partly_expired_row_is_not_late() -> None:
    run = start(make_step(Sliding(10, 5)))
    feed(run, [{"_ts": 12}], 14)  # [5, 15) fires
    feed(run, [{"_ts": 8, "seq": 1}], MAX_WATERMARK)  # [5, 15) is gone; [0, 10) was too
    assert late_seqs(run) == [1]
    run = start(make_step(Sliding(10, 5)))
    feed(run, [{"_ts": 12}], 10, [{"_ts": 13, "seq": 1}], MAX_WATERMARK)
    assert rows_of(run, "ws", "rows") == [(5, 2), (10, 2)]  # [5, 15) still open at wm 10


def test_sessions_merge_across_batches_and_bridge() -> None:
    run = start(make_step(Session(10)))
    feed(run, [{"_ts": 0}], [{"_ts": 30}], 5, [{"_ts": 10}])  # 10 touches [0, 10)
    feed(run, [{"_ts": 20}])  # bridges [0, 20) and [30, 40)
    feed(run, 100)
    assert rows_of(run, "ws", "we", "rows") == [(0, 40, 4)]


def test_session_touching_after_firing_starts_a_new_session() -> None:
    run = start(make_step(Session(10)))
    feed(run, [{"_ts": 0}], 9, [{"_ts": 10}], MAX_WATERMARK)
    assert rows_of(run, "ws", "we") == [(0, 10), (10, 20)]


def test_nothing_is_dropped_when_slide_exceeds_size() -> None:
    run = start(make_step(Sliding(2, 5)))
    feed(run, [{"_ts": 0}, {"_ts": 3}], 1, [{"_ts": 1}], MAX_WATERMARK)
    assert rows_of(run, "ws", "rows") == [(0, 1)]
    assert run.ctx.counters["outside_windows"] == 1 and late_seqs(run) == [0]


def test_snapshot_has_key_group_layout_and_moves_key_groups() -> None:
    step = make_step(Tumbling(10), lateness=5, aggs=(("n", Agg("count")), ("s", Agg("sum", "x"))))
    whole = start(step, max_parallelism=8)
    rows = [{"k": f"k{i % 13}", "j": i % 2, "x": i, "y": None, "_ts": i % 25, "seq": i}
            for i in range(200)]
    whole.op.on_batch(to_batch(rows[:100]), 0)
    whole.op.on_watermark(12)
    whole.collect()
    whole.results.clear()
    snap = whole.op.snapshot_state()
    assert snap.num_rows and "_kg" in snap.column_names
    assert snap["_kg"].to_pylist() == key_groups(snap, KEYS, 8).tolist()
    assert int(snap.schema.metadata[b"rheostat.watermark"]) == 12
    # rescale to two tasks: each takes the key groups it now owns, then its share of rows
    groups = {0: [0, 1, 2], 1: [3, 4, 5, 6, 7]}
    parts = [start(step, max_parallelism=8) for _ in groups]
    later = to_batch(rows[100:])
    owner = np.isin(key_groups(later, KEYS, 8), groups[1])
    for t, part in enumerate(parts):
        piece = whole.op.snapshot_state(groups[t])
        assert set(piece["_kg"].to_pylist()) <= set(groups[t])
        part.op.restore_state(piece)
        part.op.on_batch(later.filter(pa.array(owner == bool(t))), 0)
        part.op.on_watermark(MAX_WATERMARK)
        part.collect()
    whole.op.on_batch(later, 0)
    whole.op.on_watermark(MAX_WATERMARK)
    whole.collect()
    key = ("k", "j", "ws", "n", "s")
    assert sorted(rows_of(parts[0], *key) + rows_of(parts[1], *key)) == sorted(rows_of(whole, *key))


def test_empty_state_snapshot_round_trip() -> None:
    run = start(make_step(Session(5)))
    run.op.on_watermark(40)
    snap = run.op.snapshot_state()
    fresh = start(make_step(Session(5)))
    fresh.op.restore_state(snap)
    assert fresh.op.watermark == 40


@pytest.mark.parametrize(("window", "ends"), [
    (Tumbling(10), [10, 20]), (Sliding(10, 10), [10, 20]), (Session(5), [7, 20])])
def test_global_window_without_keys_and_timestamp_event_times(
    window: WindowSpec, ends: list[int]
) -> None:
    step = WindowAggregateStep("w", (), keys=(), window=window, aggs=(("n", Agg("count")),))
    out: list[pa.RecordBatch] = []
    op = build_operator(step)
    op.open(OperatorContext.for_test(step, out.append))
    ts = pa.array([1, 2, 15], pa.timestamp("ms"))
    op.on_batch(pa.record_batch({"x": [3, 9, 4], "_ts": ts}), 0)
    op.on_end()
    result = pa.Table.from_batches(out)
    assert result.column_names == ["window_start", "window_end", "n", "_ts"]
    assert result["n"].to_pylist() == [2, 1]
    assert result["_ts"].to_pylist() == [e - 1 for e in ends]


def test_windows_chain_on_output_event_time() -> None:
    """q5's shape: count per key in sliding windows, then the max count per window."""
    counts = start(make_step(Sliding(10, 5), aggs=(("n", Agg("count")),)))
    top_step = WindowAggregateStep("top", (), keys=(), window=Tumbling(5),
                                   aggs=(("best", Agg("max", "n")),))
    top: list[pa.RecordBatch] = []
    op = build_operator(top_step)
    op.open(OperatorContext.for_test(top_step, top.append))
    rows = [{"k": "abc"[i % 3 if i < 12 else 0], "j": 0, "x": 1, "y": None, "_ts": i, "seq": i}
            for i in range(20)]
    counts.op.on_batch(to_batch(rows), 0)
    for wm in (9, 14, MAX_WATERMARK):
        counts.op.on_watermark(wm)
        for b in counts.main:
            op.on_batch(b, 0)
        counts.collect()
        op.on_watermark(wm)
    best = pa.Table.from_batches(top).select(["window_end", "best"])
    expected: dict[int, int] = {}
    for r in counts.results:  # the max count over keys, per sliding window
        expected[r["we"]] = max(expected.get(r["we"], 0), r["n"])
    got = zip(best["window_end"].cast(pa.int64()).to_pylist(), best["best"].to_pylist())
    assert list(got) == sorted(expected.items())
    assert len(expected) == 5


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"keys": ("window_end",)}, "clashes"),
    ({"aggs": (("k", Agg("count")),)}, "clashes"),
    ({"aggs": (("n", Agg("sum")),)}, "needs a column"),
    ({"window": Tumbling(0)}, "must be > 0"),
    ({"window": Session(0)}, "gap must be > 0"),
    ({"window": None}, "needs a Tumbling"),
    ({"allowed_lateness_ms": -1}, ">= 0"),
])
def test_bad_configuration_names_the_step(kwargs: dict, message: str) -> None:
    base = {"keys": ("k",), "window": Tumbling(10), "aggs": (("n", Agg("count")),)}
    with pytest.raises(ValueError, match=f"step 'w'.*{message}"):
        WindowAggregate(WindowAggregateStep("w", (), **{**base, **kwargs}))


def test_bad_batches_name_the_step() -> None:
    run = start(make_step(Tumbling(10)))
    with pytest.raises(ValueError, match=r"step 'w'.*lacks column"):
        run.op.on_batch(pa.record_batch({"k": ["a"], "_ts": [1]}), 0)
    batch = to_batch([{"k": "a", "j": 0, "x": 1, "y": None, "_ts": None, "seq": 0}])
    with pytest.raises(ValueError, match="null _ts"):
        run.op.on_batch(batch, 0)
