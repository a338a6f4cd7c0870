"""Live rescales of source steps, stepped deterministically in one thread
(``rs.testing.SteppedJob``): up, down and back, with checkpoints and crashes right after,
the committed Parquet output always equals DuckDB's windows of the input, and no row turns
late. A source whose splits lag in event time shows why the readers of a rescaled source
restart its watermarks at the reconfiguration."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rheostat as rs
from rheostat.runtime.io import ListReader, Source
from rheostat.testing import SteppedJob

sys.path.insert(0, str(Path(__file__).parent.parent / "faults"))
from windowed_job import STEP, WINDOW_MS, committed, compare, events, reference

DATA = events(n=24_000, keys=60, seed=8)
EXPECTED = reference(DATA)
SPLITS = 12


def windowed(source: Source, out: Path) -> rs.Flow:
    """``source`` -> key_by(k) -> tumbling 500 ms count and sum -> Parquet."""
    f = rs.Flow("source-rescale")
    (f.source("ev", source, timestamp="ts", out_of_order="10ms")
     .key_by("k").window(rs.windows.tumbling(f"{WINDOW_MS}ms"))
     .aggregate(name=STEP, n=rs.agg.count(), total=rs.agg.sum("v"))
     .sink("out", rs.sinks.parquet(str(out))))
    return f


def stepped(flow: rs.Flow, root: Path, parallelism: int = 2) -> SteppedJob:
    # Small channels: markers do not wait behind megabytes of queued batches.
    return SteppedJob(flow, parallelism=parallelism, checkpoint_interval=0.02,
                      checkpoint_dir=str(root / "chk"), restart_attempts=20,
                      channel_capacity_bytes=1 << 11)


def play(schedule: list[tuple], root: Path, data=DATA, splits=SPLITS) -> rs.JobResult:
    job = stepped(windowed(rs.testing.rows(data, batch_size=40, splits=splits), root / "out"),
                  root)
    for action in schedule:
        if job.done:
            break
        kind, *args = action
        if kind == "turns":
            job.step(args[0])
        elif kind == "rescale":  # of the source, or of another step
            step = args[1] if len(args) > 1 else "ev"
            assert job.settle(job.rescale(step, args[0]))["status"] == "done"
        elif kind == "rescale_async":
            job.rescale("ev", args[0])
        elif kind == "checkpoint":
            job.checkpoint()
        elif kind == "crash":
            job.fail(args[0] if isinstance(args[0], str) else job.task_ids[args[0]])
    return job.finish()


def assert_exact(result: rs.JobResult, out: Path, expected=EXPECTED) -> None:
    assert result.state == "finished"
    assert result.counters().get("late", 0) == 0
    diff = compare(expected, committed(out))
    assert diff.exact, diff


@pytest.mark.parametrize("schedule", [
    [("turns", 5), ("rescale", 3)],
    [("turns", 5), ("rescale", 1)],
    [("turns", 5), ("rescale", 3), ("turns", 5), ("rescale", 2)],
    [("turns", 3), ("rescale", 4), ("rescale", 1), ("checkpoint",), ("checkpoint",),
     ("rescale", 3)],  # a retired index comes back after two checkpoints
    [("turns", 5), ("checkpoint",), ("rescale", 3), ("crash", "ev#2")],
    [("turns", 5), ("rescale", 3), ("checkpoint",), ("crash", "ev#0")],
    [("turns", 5), ("rescale", 1), ("checkpoint",), ("checkpoint",), ("rescale", 2),
     ("crash", "ev#1")],
    [("turns", 3), ("checkpoint",), ("rescale_async", 4), ("turns", 2), ("crash", 0)],
    [("turns", 5), ("rescale", SPLITS), ("turns", 5), ("rescale", 1)],
], ids=["up", "down", "up-back", "4-1-3", "checkpoint-up-crash-new-task",
        "up-checkpoint-crash", "down-up-crash-reused-index", "crash-during-rescale",
        "one-task-per-split-and-back"])
def test_a_rescaled_source_reads_every_row_once(schedule, tmp_path):
    assert_exact(play(schedule, tmp_path), tmp_path / "out")


def test_a_source_and_its_consumer_rescaled_in_one_request(tmp_path):
    job = stepped(windowed(rs.testing.rows(DATA, batch_size=10, splits=SPLITS),
                           tmp_path / "out"), tmp_path, parallelism=3)
    job.step(5)
    job.checkpoint()
    reply = job.reconfigure(rs.Rescale("ev", 1), rs.Rescale(STEP, 4))
    assert job.settle(reply)["status"] == "done"
    job.step(5)
    job.checkpoint()
    job.checkpoint()  # the retired indexes may come back now
    assert job.settle(job.reconfigure(rs.Rescale("ev", 4), rs.Rescale(STEP, 2)))["status"] == \
        "done"
    job.fail("ev#3")
    assert_exact(job.finish(), tmp_path / "out")


class Uneven(Source):
    """Eight splits of windowed-job rows; split ``i`` has ``(i + 1) * rows`` of them, so
    the short ones end long before the others."""

    def __init__(self, rows: int, batch: int = 10) -> None:
        self.rows, self.batch = rows, batch

    def split_table(self, i: int) -> pa.Table:
        n = (i + 1) * self.rows
        return pa.table({"k": [f"k{(r * 7 + i) % 50}" for r in range(n)],
                         "v": [(r + i) % 100 for r in range(n)],
                         "ts": [1_000_000 + 2 * r for r in range(n)]})

    def splits(self, parallelism: int) -> list[int]:
        return list(range(8))

    def open(self, split: int, position: Any = None, batch_size: int = 0) -> ListReader:
        return ListReader(self.split_table(split).to_batches(max_chunksize=self.batch), position)


@pytest.mark.parametrize("parallelism", [1, 3])
def test_splits_that_ended_move_too(tmp_path, parallelism):
    src = Uneven(rows=300)
    data = pa.concat_tables([src.split_table(i) for i in range(8)]).to_pylist()
    job = stepped(windowed(src, tmp_path / "out"), tmp_path)

    def ended() -> int:
        return sum(s.ended for t in job.backend._host.tasks if t.source is not None
                   and not t.finished for s in t.source.snapshot().values())

    job.run_until(lambda: ended() >= 3, "three splits ended")
    assert job.settle(job.rescale("ev", parallelism))["status"] == "done"
    assert_exact(job.finish(), tmp_path / "out", reference(data))


def test_rescales_that_cannot_be_done_leave_the_source_as_it_was(tmp_path):
    job = stepped(windowed(rs.testing.rows(DATA, batch_size=40), tmp_path / "out"), tmp_path)
    job.step(3)
    with pytest.raises(rs.ReconfigError, match="makes its splits from the parallelism"):
        job.settle(job.rescale("ev", 3))
    job2 = stepped(windowed(rs.testing.rows(DATA, batch_size=40, splits=3),
                            tmp_path / "out2"), tmp_path / "two")
    with pytest.raises(rs.ReconfigError, match="at most 3 task"):
        job2.settle(job2.rescale("ev", 4))
    assert_exact(job.finish(), tmp_path / "out")
    assert_exact(job2.finish(), tmp_path / "out2")


# --- watermarks: a split that moves to a task whose watermark is ahead of it -------------


class Lagging(Source):
    """Four splits of ``rows`` rows, 2 ms apart; splits 2 and 3 run ``lag_ms`` behind
    splits 0 and 1 in event time (as a slow partition of a broker would)."""

    def __init__(self, rows: int, lag_ms: int, batch: int = 10) -> None:
        self.rows, self.lag_ms, self.batch = rows, lag_ms, batch

    def table(self) -> pa.Table:
        parts = [self.split_table(i) for i in range(4)]
        return pa.concat_tables(parts)

    def split_table(self, i: int) -> pa.Table:
        lag = self.lag_ms if i >= 2 else 0
        ts = [2_000_000 - lag + 2 * r for r in range(self.rows)]
        return pa.table({"k": [f"k{(r * 7 + i) % 50}" for r in range(self.rows)],
                         "v": [(r + i) % 100 for r in range(self.rows)], "ts": ts})

    def splits(self, parallelism: int) -> list[int]:
        return [0, 1, 2, 3]

    def open(self, split: int, position: Any = None, batch_size: int = 0) -> ListReader:
        return ListReader(self.split_table(split).to_batches(max_chunksize=self.batch), position)


def test_a_split_far_behind_does_not_turn_late_at_a_task_that_is_ahead(tmp_path):
    # Tasks 2 and 3 read the lagging splits; at 4 -> 2 they go to tasks 0 and 1, whose
    # watermarks are 10 windows ahead of them. Were the consumers to keep those tasks'
    # watermarks, the retired tasks' end would let theirs jump and the moved rows be late.
    src = Lagging(rows=3000, lag_ms=10 * WINDOW_MS)
    data = src.table().to_pylist()
    job = stepped(windowed(src, tmp_path / "out"), tmp_path, parallelism=4)
    job.step(20)
    assert job.settle(job.rescale("ev", 2))["status"] == "done"
    job.checkpoint()
    job.checkpoint()
    assert job.settle(job.rescale("ev", 3))["status"] == "done"
    assert_exact(job.finish(), tmp_path / "out", reference(data))


# --- a source fused with its sink -------------------------------------------------------


def test_a_source_chained_to_a_sink_commits_every_row_once(tmp_path):
    rows = [{"i": i} for i in range(20_000)]
    f = rs.Flow("source-to-sink")
    (f.source("ev", rs.testing.rows(rows, batch_size=50, splits=8))
     .map_batches(lambda b: b, name="same").sink("out", rs.sinks.parquet(str(tmp_path / "out"))))
    job = stepped(f, tmp_path)
    job.step(10)
    job.checkpoint()
    assert job.settle(job.rescale("ev", 3))["status"] == "done"
    job.step(5)
    job.checkpoint()
    assert job.settle(job.rescale("ev", 1))["status"] == "done"
    job.step(5)
    job.fail("ev#0")
    assert job.finish().state == "finished"
    got = ds.dataset(str(tmp_path / "out"), format="parquet").to_table()["i"].to_pylist()
    assert sorted(got) == list(range(20_000))


# --- random schedules ------------------------------------------------------------------

actions = st.lists(st.one_of(
    st.tuples(st.just("turns"), st.integers(1, 30)),
    st.tuples(st.just("rescale"), st.integers(1, 5)),
    st.tuples(st.just("rescale"), st.integers(1, 4), st.just(STEP)),
    st.tuples(st.just("rescale_async"), st.integers(1, 5)),
    st.tuples(st.just("checkpoint")),
    st.tuples(st.just("crash"), st.integers(0, 8)),
), min_size=1, max_size=6)


def play_loosely(schedule: list[tuple], root: Path) -> rs.JobResult:
    """:func:`play`, where a refused or unfinished reconfiguration is part of the game."""
    job = stepped(windowed(rs.testing.rows(DATA[:8000], batch_size=40, splits=6),
                           root / "out"), root)
    for kind, *args in schedule:
        if job.done:
            break
        try:
            if kind == "turns":
                job.step(args[0])
            elif kind == "rescale":
                job.settle(job.rescale(args[1] if len(args) > 1 else "ev", args[0]))
            elif kind == "rescale_async":
                job.rescale("ev", args[0])
            elif kind == "checkpoint":
                job.checkpoint()
            elif kind == "crash":
                job.fail(job.task_ids[args[0] % len(job.task_ids)])
        except rs.ReconfigError:
            pass  # refused (more tasks than splits, the job ended) or failed by a crash
        except AssertionError:
            if not job.done:
                raise
    return job.finish()


@settings(max_examples=int(os.environ.get("RHEOSTAT_PROPERTY_EXAMPLES", "10")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(actions)
def test_any_schedule_of_source_rescales_commits_exactly_the_windows(schedule):
    with tempfile.TemporaryDirectory() as root:
        result = play_loosely(schedule, Path(root))
        assert result.state == "finished"
        assert result.counters().get("late", 0) == 0, schedule
        diff = compare(reference(DATA[:8000]), committed(Path(root) / "out"))
        assert diff.exact, f"{schedule}: {diff}"


# --- a bounded source whose tasks finish at different times ------------------------------


class ShortFirst(Uneven):
    """Splits 0, 2, 3 and 7 (task 0's of 2) are short: task 0 finishes long before task 1."""

    def split_table(self, i: int) -> pa.Table:
        n = 20 if i in (0, 2, 3, 7) else self.rows
        return pa.table({"k": [f"k{(r * 7 + i) % 50}" for r in range(n)],
                         "v": [(r + i) % 100 for r in range(n)],
                         "ts": [1_000_000 + 2 * r for r in range(n)]})


def test_a_finished_source_task_takes_no_splits_but_gives_its_ended_ones(tmp_path):
    src = ShortFirst(rows=2000)
    data = pa.concat_tables([src.split_table(i) for i in range(8)]).to_pylist()
    job = stepped(windowed(src, tmp_path / "out"), tmp_path)
    job.run_until(lambda: "ev#0" in job.controller.job.finished_tasks, "ev#0 finished")
    with pytest.raises(rs.ReconfigError, match="ev#0 have read all their splits"):
        job.settle(job.rescale("ev", 1))
    # Growing moves split 2, ended, from ev#0 to ev#2: ev#0's final part keeps it too.
    assert job.settle(job.rescale("ev", 3))["status"] == "done"
    job.checkpoint()
    job.fail("ev#1")  # restores from parts that hold split 2 twice, both ended
    result = job.finish()
    assert result.restarts == 1
    assert_exact(result, tmp_path / "out", reference(data))


def test_a_source_task_that_finished_before_its_reconfiguration_arrived_fails_it():
    from rheostat.plan.physical import lower
    from rheostat.plan.reconfig import plan_reconfiguration
    from rheostat.runtime.channels import LocalChannel
    from rheostat.runtime.task import Task

    flow = windowed(ShortFirst(rows=2000), Path("unused"))
    plan = lower(flow.steps, 2, 64)
    channels = {c.channel_id: LocalChannel(1 << 20) for c in plan.channels}
    task = Task(plan, "ev#0", channels, channels)  # type: ignore[arg-type]
    while not task.finished:
        task.step()
    # Planned while ev#0 still ran: it gains ev#1's splits on the way down to one task.
    r = plan_reconfiguration(plan, {t: 0 for t in plan.task_ids}, 1, [rs.Rescale("ev", 1)], 1)
    new = {c: LocalChannel(1 << 20) for c in r.spec.new_channels}
    with pytest.raises(RuntimeError, match="had finished reading its splits"):
        task.reconfigure(r.plan, r.spec, new, new)  # type: ignore[arg-type]


def test_a_shrinking_step_feeding_a_step_rescaled_with_it_keeps_every_row(tmp_path):
    """Not a source: the retiring tasks of "u" still have rows of the old plan on their
    inputs when the request arrives; they send them under the old plan, then the marker
    and their end (the retiring source tasks above end the same way, at once)."""
    f = rs.Flow("two-steps")
    (f.source("ev", rs.testing.rows(DATA, batch_size=10), timestamp="ts", out_of_order="10ms",
              parallelism=1)
     .rebalance().map_batches(lambda b: b, name="u", parallelism=3)
     .key_by("k").window(rs.windows.tumbling(f"{WINDOW_MS}ms"))
     .aggregate(name=STEP, n=rs.agg.count(), total=rs.agg.sum("v"))
     .sink("out", rs.sinks.parquet(str(tmp_path / "out"))))
    job = stepped(f, tmp_path)
    job.step(10)
    assert job.settle(job.reconfigure(rs.Rescale("u", 1), rs.Rescale(STEP, 3)))["status"] == \
        "done"
    assert_exact(job.finish(), tmp_path / "out")
