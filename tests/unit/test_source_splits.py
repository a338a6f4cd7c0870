"""Fixed source splits: which task reads which split (balanced, deterministic, few moves),
what the sources make, the source driver's hand-over of splits, and a restore gathering
split states from every old task's part (pure: fake checkpoint parts, no processes)."""

from __future__ import annotations

import pickle

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

import rheostat as rs
from rheostat.plan.logical import Input, KeyedProcessStep, Port, Routing, SinkStep, SourceStep
from rheostat.plan.physical import lower
from rheostat.plan.reconfig import Place, ReconfigError, Rescale, plan_reconfiguration
from rheostat.plan.splits import split_moves, split_owners, splits_of
from rheostat.runtime.io import Source, SourceReader
from rheostat.runtime.messages import MAX_WATERMARK, Batch, EndOfStream, Watermark
from rheostat.runtime.snapshots import encode_snapshot, restore_for_task
from rheostat.runtime.source import SourceDriver, SplitState, match_splits
from rheostat.runtime.task import TaskSnapshot
from rheostat.testing import rows

# --- which task reads which split -----------------------------------------------------


@given(st.integers(0, 60), st.integers(1, 12))
def test_owners_are_balanced_deterministic_and_the_identity_up_to_one_split_each(n, p):
    owners = split_owners(n, p)
    assert owners == split_owners(n, p) and len(owners) == n
    counts = [owners.count(t) for t in range(p)]
    if n >= p:
        assert max(counts) - min(counts) <= 1
    else:
        assert owners == tuple(range(n))  # task i reads split i, as splits[i::p] did
    assert sorted(s for t in range(p) for s in splits_of(n, p, t)) == list(range(n))


@given(st.integers(1, 60), st.integers(1, 12), st.integers(1, 12))
def test_a_rescale_moves_only_the_splits_it_must(n, p, q):
    before, after = split_owners(n, p), split_owners(n, q)
    moves = split_moves(n, p, q)
    assert moves == {s: (a, b) for s, (a, b) in enumerate(zip(before, after)) if a != b}
    for old, new in moves.values():
        if q > p:  # growing: only new tasks take splits; old ones keep the rest
            assert new >= p
        else:  # shrinking: only the retired tasks' splits move
            assert old >= q
    # and no fewer: each task that stays keeps all it can (its new share of what it had)
    kept = n - len(moves)
    assert kept == sum(min(before.count(t), after.count(t)) for t in range(min(p, q)))


def test_owners_refuse_nonsense():
    with pytest.raises(ValueError, match="parallelism >= 1"):
        split_owners(4, 0)


# --- what sources make ------------------------------------------------------------------


def read_all(source, split, position=None, batch_size=100):
    reader = source.open(split, position, batch_size)
    out = []
    while (batch := reader.read()) is not None:
        out.append(batch)
    return out


def test_rows_with_splits_make_the_same_splits_at_any_parallelism_and_cover_the_rows():
    data = [{"x": i} for i in range(103)]
    src = rows(data, batch_size=10, splits=4)
    assert src.splits(1) == src.splits(3) == src.splits(7)
    per_split = [read_all(src, s) for s in src.splits(1)]
    assert [b["x"][0].as_py() for b in per_split[1]] == [10, 50, 90]  # batches 1, 5, 9
    got = sorted(x for part in per_split for b in part for x in b["x"].to_pylist())
    assert got == list(range(103))
    # without splits=N: one contiguous range per task, as before
    assert rows(data).splits(2) == [(0, 51), (51, 103)]
    with pytest.raises(ValueError, match="splits must be an integer >= 1"):
        rows(data, splits=0)


@pytest.mark.parametrize("make", [
    lambda **kw: rs.sources.synthetic(5_000, seed=2, **kw),
    lambda **kw: rs.sources.nexmark(5_000, "bid", **kw),
], ids=["synthetic", "nexmark"])
def test_generators_with_splits_cover_the_stream_whatever_the_parallelism(make):
    src = make(splits=6)
    assert src.splits(2) == src.splits(5) == [(i, 6) for i in range(6)]
    whole = make().to_table(batch_size=100)
    chunks = {}
    for i, split in enumerate(src.splits(2)):
        for j, batch in enumerate(read_all(src, split)):
            chunks[i + 6 * j] = batch  # split i makes chunks i, i+6, ...
    assert pa.Table.from_batches([chunks[c] for c in sorted(chunks)]).equals(whole)
    assert make().splits(3) == [(0, 3), (1, 3), (2, 3)]  # no splits=N: one per task
    with pytest.raises(ValueError, match="splits must be >= 1"):
        make(splits=0)


def test_a_file_source_keeps_the_files_it_listed(tmp_path):
    pq.write_table(pa.table({"x": [1]}), tmp_path / "a.parquet")
    src = rs.sources.parquet(str(tmp_path))
    pq.write_table(pa.table({"x": [2]}), tmp_path / "b.parquet")  # after the source was made
    assert [s.rsplit("/", 1)[-1] for s in pickle.loads(pickle.dumps(src)).splits(4)] == \
        ["a.parquet"]
    assert len(rs.sources.parquet(str(tmp_path)).splits(1)) == 2


# --- the driver: splits handed over -----------------------------------------------------


def step(source, **kw):
    return SourceStep("ev", (), source=source, timestamp="t", **kw)


def ts_rows(n):
    return [{"t": 1000 + i} for i in range(n)]


def drain(driver, polls=200):
    out = []
    for _ in range(polls):
        out += driver.poll()
    return out


def rows_of(messages):
    return sorted(t for m in messages if isinstance(m, Batch) for t in m.data["t"].to_pylist())


def test_released_splits_resume_at_their_new_task_where_they_were_left():
    src = rows(ts_rows(40), batch_size=2, splits=4)
    old = SourceDriver(step(src), 0, 1)
    first = drain(old, 6)  # a few batches of every split
    assert old.owned == [0, 1, 2, 3]
    moved = old.release([1, 2])
    assert old.owned == [0, 3] and moved[1].position == 2 and moved[1].split == (1, 4, 2)
    new = SourceDriver(step(src), 1, 2)  # task 1 of 2 reads splits 1 and 2
    new.expect([1, 2])
    assert new.poll() == []  # nothing to read and no watermark before the splits arrive
    new.adopt(moved)
    rest = drain(old) + drain(new)
    assert rows_of(first + rest) == [1000 + i for i in range(40)]


def test_a_task_promises_no_watermark_while_a_split_is_on_its_way():
    src = rows(ts_rows(40), batch_size=2, splits=2)
    driver = SourceDriver(step(src), 0, 2)  # reads split 0; split 1 comes from elsewhere
    driver.expect([1])
    assert rows_of(polled := drain(driver, 5)) == [1000 + i for i in range(20) if i // 2 % 2 == 0]
    assert not [m for m in polled if isinstance(m, Watermark)]
    driver.adopt({1: SplitState((1, 2, 2), position=3, max_ts=1013)})
    assert driver.poll() == [Watermark(1013 - 1)]  # split 1's state speaks at once


def test_after_a_switch_the_watermark_is_stated_again_but_never_lowered():
    src = rows(ts_rows(40), batch_size=2, splits=2)
    driver = SourceDriver(step(src), 0, 2)
    wms = [m.value for m in drain(driver, 4) if isinstance(m, Watermark)]
    driver.restate()
    assert driver.poll() == [Watermark(wms[-1])]  # the same value once more
    driver.expect([1])
    driver.adopt({1: SplitState((1, 2, 2), position=0, max_ts=900)})  # a split far behind
    polled = drain(driver, 3)
    assert not [m for m in polled if isinstance(m, Watermark)]  # silent until it catches up


class Quiet(Source):
    """One endless split: a batch at t=1000, then nothing."""

    bounded = False

    def splits(self, parallelism):
        return [0]

    def open(self, split, position=None, batch_size=0):
        return _QuietReader(position or 0)


class _QuietReader(SourceReader):
    def __init__(self, position):
        self.pos = position

    def read(self):
        self.pos += 1
        return pa.record_batch({"t": pa.array([1000] if self.pos == 1 else [], pa.int64())})

    def position(self):
        return self.pos


def test_an_idle_task_restates_its_watermark_and_goes_idle_again():
    clock = type("Clock", (), {"now": 0.0, "__call__": lambda self: self.now})()
    driver = SourceDriver(step(Quiet(), idle_timeout_ms=1000), 0, 1, clock=clock)
    assert isinstance(driver.poll()[0], Batch)
    clock.now = 2.0
    assert driver.poll() == [Watermark(999, idle=True)]
    driver.restate()  # a reconfiguration: its consumers forgot its watermark and idleness
    assert driver.poll() == [Watermark(999)]
    assert driver.poll() == [Watermark(999, idle=True)]


def test_a_snapshot_has_every_owned_split_ended_or_not_and_nothing_in_flight():
    src = rows(ts_rows(4), batch_size=2, splits=3)  # split 2 is empty
    driver = SourceDriver(step(src), 0, 1)
    messages = drain(driver, 10)
    assert messages[-2:] == [Watermark(MAX_WATERMARK), EndOfStream()]
    snap = driver.snapshot()
    assert sorted(snap) == [0, 1, 2] and all(s.ended for s in snap.values())
    assert snap[0].position == 1 and snap[0].max_ts == 1001
    driver = SourceDriver(step(src), 0, 1)
    driver.expect([2])
    with pytest.raises(RuntimeError, match="on their way"):
        driver.snapshot()


def test_each_split_gets_an_equal_share_of_the_rate():
    clock = type("Clock", (), {"now": 0.0, "__call__": lambda self: self.now})()
    src = rows(ts_rows(100), batch_size=1, splits=4)
    driver = SourceDriver(step(src, rate=8.0), 0, 2, clock=clock)  # two of four splits
    assert driver.rate_per_task == 4.0 and driver.batch_size == 1
    clock.now = 5.0  # the task waited to start: no burst, the rate counts from its first poll
    assert driver.poll() == []
    clock.now = 6.0
    assert len(rows_of(drain(driver))) == 4


def test_splits_are_matched_by_descriptor_on_restore():
    saved = {0: SplitState("a", 3), 1: SplitState("c", 9)}
    assert match_splits("ev", saved, ["a", "c"]) == saved
    assert {i: s.position for i, s in match_splits("ev", saved, ["a", "b", "c"]).items()} == \
        {0: 3, 2: 9}
    with pytest.raises(ValueError, match="split 'c', which this source does not make"):
        match_splits("ev", saved, ["a", "b"])
    with pytest.raises(ValueError, match="more than once"):
        match_splits("ev", saved, ["c", "c", "a"])


# --- restores at another parallelism (fake parts) ---------------------------------------

SRC = rows(ts_rows(120), batch_size=5, splits=8)


def source_plan(parallelism, source=SRC):
    steps = (SourceStep("ev", (), source=source, timestamp="t"),
             KeyedProcessStep("p", (Input(Port("ev"), Routing("hash", ("t",))),), keys=("t",)),
             SinkStep("out", (Input(Port("p")),)))
    return lower(steps, parallelism=parallelism, max_parallelism=16)


def checkpoint_parts(parallelism, source=SRC):
    """The ``_task`` parts a job at ``parallelism`` would write: each task's driver read a
    few batches of each of its splits."""
    parts = {}
    for i in range(parallelism):
        driver = SourceDriver(step(source), i, parallelism)
        drain(driver, 3)
        parts.update(encode_snapshot(TaskSnapshot(f"ev#{i}", 1, {}, driver.snapshot(), None)))
    return parts


def restores(plan, parts, old_parallelism):
    return {t: restore_for_task(plan, t, parts, {"ev": old_parallelism}, parts.__getitem__)
            for t in plan.task_ids if t.startswith("ev#")}


@pytest.mark.parametrize("new_p", [1, 2, 3, 8])
def test_every_new_source_task_finds_its_splits_in_any_old_task_part(new_p):
    parts = checkpoint_parts(2)
    saved = {}
    for i in range(2):
        saved.update(pickle.loads(parts[f"ev#{i}/_task"])["sources"])
    plan = source_plan(new_p)
    read = set()
    for t, restore in restores(plan, parts, 2).items():
        assert restore.sources == saved  # every split's state, whoever had it
        driver = SourceDriver(step(SRC), int(t[-1]), new_p, restore.sources)
        snap = driver.snapshot()
        assert all(snap[s] == saved[s] for s in snap)
        read |= set(snap)
    assert read == set(range(8))


def test_a_split_in_two_parts_or_a_bare_position_at_another_parallelism_is_refused():
    parts = checkpoint_parts(2)
    twice = dict(parts)
    twice["ev#3/_task"] = parts["ev#0/_task"]  # a retired task's part claiming splits too
    with pytest.raises(ValueError, match="in the checkpoint twice"):
        restores(source_plan(2), twice, 2)
    bare = {"ev#0/_task": pickle.dumps({"sources": {0: 3}, "watermark": None}),
            "ev#1/_task": pickle.dumps({"sources": {1: 4}, "watermark": None})}
    assert restores(source_plan(2), bare, 2)["ev#1"].sources[1].position == 4
    with pytest.raises(ValueError, match="bare read positions"):
        restores(source_plan(3), bare, 2)


def test_a_source_that_splits_by_the_parallelism_resumes_only_at_its_own():
    legacy = rows(ts_rows(120), batch_size=5)  # one split per task
    parts = checkpoint_parts(2, legacy)
    restore = restores(source_plan(3, legacy), parts, 2)["ev#0"]
    with pytest.raises(ValueError, match="resumes only at the parallelism it had"):
        SourceDriver(step(legacy), 0, 3, restore.sources)
    same = restores(source_plan(2, legacy), parts, 2)["ev#1"]
    assert SourceDriver(step(legacy), 1, 2, same.sources).snapshot()[1].position == 3


# --- planning ---------------------------------------------------------------------------


def replan(plan, *ops):
    return plan_reconfiguration(plan, {t: int(t[-1]) % 2 for t in plan.task_ids}, 2,
                                list(ops), 1)


def test_a_source_rescale_moves_splits_and_makes_its_readers_restart_its_watermarks():
    plan = source_plan(2)
    r = replan(plan, Rescale("ev", 3))
    assert r.spec.added == ("ev#2",) and r.spec.split_moves["ev"] == split_moves(8, 2, 3)
    assert r.spec.affected_chains == {"ev", "p"}  # "p" reads the source: markers, restart
    gained = r.spec.gaining_splits("ev", 2)  # old task -> the splits it hands to ev#2
    assert sorted(s for ss in gained.values() for s in ss) == splits_of(8, 3, 2)
    assert all(r.spec.losing_splits("ev", old) == {2: ss} for old, ss in gained.items())
    down = replan(r.plan, Rescale("ev", 1))
    assert down.spec.removed == ("ev#1", "ev#2") and set(down.spec.split_moves["ev"]) == \
        {s for s, t in enumerate(split_owners(8, 3)) if t > 0}


def test_a_placed_source_task_takes_its_splits_along():
    plan = source_plan(2)
    r = replan(plan, Place("ev#1", 0))
    assert r.spec.relocated == ("ev#1",) and r.spec.affected_chains == {"ev", "p"}
    assert r.spec.split_moves["ev"] == {s: (1, 1) for s in splits_of(8, 2, 1)}


@pytest.mark.parametrize("source, parallelism, message", [
    (rows(ts_rows(10)), 3, "makes its splits from the parallelism"),
    (SRC, 9, "at most 8 task"),
    (None, 3, "could not list its splits"),
])
def test_source_rescales_that_cannot_be_done_are_refused(source, parallelism, message):
    with pytest.raises(ReconfigError, match=message):
        replan(source_plan(2, source), Rescale("ev", parallelism))
