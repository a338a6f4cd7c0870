"""The two-phase sink contract (docs/sinks.md), one suite that every exactly-once sink runs.

Writers are driven as the runtime drives them, without processes: each task opens a
writer from its own pickled copy of the sink; ``prepare`` at a barrier; ``commit`` when the
checkpoint completes; ``recover`` after a restore; ``close`` at the end. What the driver
would see goes through :class:`Driver`, which keeps each transaction key once, as the
controller does. A new exactly-once sink joins by adding a :class:`SinkUnderTest`.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from rheostat import sinks
from rheostat.runtime.io import Sink, SinkContext, SinkWriter
from rheostat.runtime.messages import FINAL_CHECKPOINT

STEP = "out"


@dataclass
class Driver:
    """The driver's side: committed transactions reach the driver's sink once per key."""

    sink: Sink
    keys: set[Any] = field(default_factory=set)

    def deliver(self, batch: pa.RecordBatch, key: Any = None) -> None:
        if key is not None:
            if key in self.keys:
                return
            self.keys.add(key)
        self.sink.on_driver_data(batch)


@dataclass
class SinkUnderTest:
    name: str
    make: Callable[[Path], Sink]
    #: (sink in the driver, its folder) -> committed ids, or only their count (``None``
    #: ids) for sinks that keep no rows.
    committed: Callable[[Sink, Path], tuple[list[int] | None, int]]


def _files(fmt: str) -> Callable[[Sink, Path], tuple[list[int] | None, int]]:
    def committed(sink: Sink, root: Path) -> tuple[list[int] | None, int]:
        if not root.exists():
            return [], 0
        table = ds.dataset(str(root), format="json" if fmt == "jsonl" else fmt).to_table()
        found = sorted(table["id"].to_pylist()) if table.num_rows else []
        return found, len(found)
    return committed


def _collected(sink: Sink, root: Path) -> tuple[list[int] | None, int]:
    table = sink.table()  # type: ignore[attr-defined]
    found = sorted(table["id"].to_pylist()) if table.num_rows else []
    return found, len(found)


def _counted(sink: Sink, root: Path) -> tuple[list[int] | None, int]:
    return None, sink.rows  # type: ignore[attr-defined]


SINKS = [
    SinkUnderTest("parquet", lambda root: sinks.parquet(str(root)), _files("parquet")),
    SinkUnderTest("jsonl", lambda root: sinks.jsonl(str(root)), _files("jsonl")),
    SinkUnderTest("collect", lambda root: sinks.collect(), _collected),
    SinkUnderTest("null", lambda root: sinks.null(), _counted),
]


class Job:
    """One sink step of a job: writers opened as on workers, a driver, the output."""

    def __init__(self, under_test: SinkUnderTest, root: Path) -> None:
        self.under_test = under_test
        self.root = root
        self.sink = under_test.make(root)
        assert self.sink.exactly_once
        self.driver = Driver(self.sink)

    def writer(self, task: int, parallelism: int) -> SinkWriter:
        """A writer of task ``task`` at ``parallelism``, from a copy of the sink (a worker's)."""
        copy: Sink = pickle.loads(pickle.dumps(self.sink))
        return copy.open(SinkContext(STEP, task, parallelism, self.driver.deliver))

    def committed(self) -> tuple[list[int] | None, int]:
        return self.under_test.committed(self.sink, self.root)

    def assert_committed(self, expected: list[int]) -> None:
        found, rows = self.committed()
        assert rows == len(expected), (rows, len(expected))
        if found is not None:
            assert found == sorted(expected)


def rows(lo: int, hi: int) -> pa.RecordBatch:
    return pa.record_batch({"id": pa.array(range(lo, hi), pa.int64()),
                            "name": [f"r{i}" for i in range(lo, hi)]})


def through_checkpoint(transaction: Any) -> Any:
    """A transaction as a restore reads it back: it went through a checkpoint (pickle)."""
    return pickle.loads(pickle.dumps(transaction))


@pytest.fixture(params=SINKS, ids=lambda s: s.name)
def job(request: pytest.FixtureRequest, tmp_path: Path) -> Job:
    return Job(request.param, tmp_path / "out")


def test_rows_are_visible_only_once_their_transaction_commits(job):
    w = job.writer(0, 1)
    w.write(rows(0, 10))
    t1 = w.prepare(1)
    w.write(rows(10, 15))
    job.assert_committed([])
    w.commit(1, t1)
    job.assert_committed(list(range(10)))
    w.commit(FINAL_CHECKPOINT, w.prepare(FINAL_CHECKPOINT))
    w.close()
    job.assert_committed(list(range(15)))


def test_a_commit_repeated_commits_once(job):
    w = job.writer(0, 1)
    w.write(rows(0, 10))
    t1 = w.prepare(1)
    w.commit(1, t1)
    w.commit(1, t1)
    w.commit(1, through_checkpoint(t1))
    job.assert_committed(list(range(10)))


def test_any_writer_of_the_step_commits_a_transaction_another_prepared(job):
    """Identity does not depend on the task index or the parallelism: a transaction
    handed over (a moved or retired task) commits through whichever writer holds it."""
    old = job.writer(1, 2)
    old.write(rows(0, 7))
    handed = through_checkpoint(old.prepare(-3))  # never closed: its task moved away
    heir = job.writer(0, 4)
    heir.write(rows(7, 9))
    t5 = heir.prepare(5)
    heir.commit(-3, handed)
    heir.commit(5, t5)
    heir.commit(FINAL_CHECKPOINT, heir.prepare(FINAL_CHECKPOINT))
    heir.close()
    job.assert_committed(list(range(9)))


def test_writers_at_different_parallelism_never_touch_each_others_transactions(job):
    """A live rescale 2 -> 4: old writers (p=2) and new ones (p=4) run side by side; one
    that finishes first cleans up only after itself."""
    old = [job.writer(i, 2) for i in range(2)]
    new = [job.writer(i, 4) for i in (2, 3)]
    for n, w in enumerate(old + new):
        w.write(rows(100 * n, 100 * n + 10))
    finals = [w.prepare(FINAL_CHECKPOINT) for w in old + new]
    for w, t in zip(old, finals[:2]):  # the old tasks commit and close first
        w.commit(FINAL_CHECKPOINT, t)
        w.close()
    for w, t in zip(new, finals[2:]):
        w.commit(FINAL_CHECKPOINT, t)
        w.close()
    job.assert_committed([i for n in range(4) for i in range(100 * n, 100 * n + 10)])


def test_an_index_retired_and_added_back_keeps_both_transactions(job):
    """2 -> 1 -> 2: the retired task 1's last transaction is not committed yet when a new
    task 1 starts writing and ends."""
    retired = job.writer(1, 2)
    retired.write(rows(0, 5))
    last = retired.prepare(FINAL_CHECKPOINT)  # its final snapshot, committed later
    again = job.writer(1, 2)
    again.write(rows(5, 8))
    again.commit(FINAL_CHECKPOINT, again.prepare(FINAL_CHECKPOINT))
    again.close()
    retired.commit(FINAL_CHECKPOINT, last)
    retired.close()
    job.assert_committed(list(range(8)))


def test_recover_commits_exactly_the_restored_transactions(job):
    first = job.writer(0, 1)
    first.write(rows(0, 10))
    t1 = first.prepare(1)  # checkpoint 1 completes, the task dies before committing it
    first.write(rows(10, 20))
    first.prepare(2)  # checkpoint 2 never completes
    first.write(rows(20, 25))  # never prepared
    second = job.writer(0, 1)
    second.recover([(1, through_checkpoint(t1))])
    job.assert_committed(list(range(10)))
    second.write(rows(10, 25))  # the replay
    second.commit(FINAL_CHECKPOINT, second.prepare(FINAL_CHECKPOINT))
    second.close()
    job.assert_committed(list(range(25)))


def test_recover_at_another_parallelism_commits_every_old_tasks_transactions(job):
    """Restored at 2 from a checkpoint taken at 4: new task i gets old tasks j % 2 == i."""
    restored: dict[int, list[tuple[int, Any]]] = {0: [], 1: []}
    for j in range(4):
        w = job.writer(j, 4)
        w.write(rows(100 * j, 100 * j + 5))
        restored[j % 2].append((1, through_checkpoint(w.prepare(1))))
        w.write(rows(100 * j + 50, 100 * j + 55))
        w.prepare(2)  # lost with the crash
    new = [job.writer(i, 2) for i in range(2)]
    new[1].recover(restored[1])
    new[1].write(rows(1000, 1003))
    t3 = new[1].prepare(3)
    new[0].recover(restored[0])  # runs after new task 1 staged checkpoint 3's rows
    new[1].commit(3, t3)
    job.assert_committed([i for j in range(4) for i in range(100 * j, 100 * j + 5)]
                         + [1000, 1001, 1002])


def test_rows_never_prepared_are_not_committed(job):
    w = job.writer(0, 1)
    w.write(rows(0, 4))
    w.commit(1, w.prepare(1))
    w.write(rows(4, 9))  # the job is cancelled: no barrier follows
    w.close()
    job.assert_committed(list(range(4)))


def test_an_empty_transaction_commits_nothing(job):
    w = job.writer(0, 1)
    t1 = w.prepare(1)
    w.commit(1, through_checkpoint(t1))
    job.assert_committed([])
