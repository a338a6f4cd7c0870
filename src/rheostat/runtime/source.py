"""Driving a source inside a source task: splits, event time, watermarks, rate limit
(a constant rate or a schedule, :mod:`rheostat.plan.rates`).

A source makes a list of splits; task ``i`` of ``p`` reads the splits that
``split_owners(len(splits), p)`` gives it (``rheostat.plan.splits``), round-robin, and
opens each on its first read. Each split has its own bounded-out-of-orderness generator
and the task's watermark is the minimum over its live splits, so one slow split holds the
watermark back instead of making its rows late. A task with no splits of a bounded source
ends at once; of an unbounded source it declares itself idle so it does not stall the
watermark downstream.

A split's :class:`SplitState` (its descriptor, the reader's position, the largest event
time seen, whether it ended) is what checkpoints keep and what a live rescale hands from
the split's old task to its new one (:meth:`SourceDriver.release`, :meth:`~SourceDriver.adopt`).

>>> import pyarrow as pa
>>> from rheostat.plan.logical import SourceStep
>>> from rheostat.testing import rows
>>> step = SourceStep("ev", (), source=rows([{"t": i} for i in range(8)], batch_size=2,
...                                         splits=4), timestamp="t")
>>> driver = SourceDriver(step, index=0, parallelism=2)
>>> driver.owned
[0, 3]
>>> [type(m).__name__ for m in driver.poll() + driver.poll()]
['Batch', 'Batch', 'Watermark']
>>> moved = driver.release([3])
>>> moved[3].position, moved[3].max_ts
(1, 7)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from rheostat.plan.logical import SourceStep
from rheostat.plan.rates import RateSchedule
from rheostat.plan.splits import splits_of
from rheostat.runtime.io import SourceReader
from rheostat.runtime.messages import (
    MAX_WATERMARK,
    MIN_WATERMARK,
    Batch,
    EndOfStream,
    Message,
    Watermark,
)
from rheostat.runtime.timestamps import max_event_time, with_event_time
from rheostat.runtime.watermarks import BoundedOutOfOrderness


@dataclass(frozen=True)
class SplitState:
    """Where one split stands: its descriptor (``split``), the position its reader
    resumes from (``None``: the start), the largest event time read from it (its
    watermark generator's state) and whether it has ended."""

    split: Any
    position: Any = None
    max_ts: int = MIN_WATERMARK
    ended: bool = False


class UNRECORDED:
    """The ``split`` of a state whose descriptor was not recorded: it is the split with
    the same id (checkpoints written before splits could move between tasks)."""


def match_splits(
    step_id: str, saved: Mapping[int, SplitState], splits: Sequence[Any]
) -> dict[int, SplitState]:
    """``saved`` (split id -> state, from a checkpoint) under the ids of ``splits``, the
    splits the source makes now: each saved split is found by its descriptor, so a
    directory that gained a file resumes the old files where they were.

    >>> s = {0: SplitState("a.parquet", 5), 1: SplitState("c.parquet", 7)}
    >>> {i: st.position for i, st in match_splits("ev", s, ["a.parquet", "b.parquet",
    ...                                                      "c.parquet"]).items()}
    {0: 5, 2: 7}
    """
    if all(i < len(splits) and (st.split is UNRECORDED or _same(splits[i], st.split))
           for i, st in saved.items()):
        return {i: replace(st, split=splits[i]) for i, st in saved.items()}
    out: dict[int, SplitState] = {}
    by_value: dict[Any, list[int]] | None = {}
    try:
        for i, split in enumerate(splits):
            by_value.setdefault(split, []).append(i)  # type: ignore[union-attr]
    except TypeError:  # descriptors that do not hash: compare each with each
        by_value = None
    for st in saved.values():
        try:
            found = by_value[st.split] if by_value is not None else None
        except KeyError:
            found = []
        except TypeError:
            found = None
        if found is None:
            found = [i for i, split in enumerate(splits) if _same(split, st.split)]
        if len(found) != 1:
            shown = ", ".join(repr(s) for s in list(splits)[:4])
            more = ", ..." if len(splits) > 4 else ""
            why = ("which this source does not make now" if not found
                   else "which this source makes more than once")
            raise ValueError(
                f"source step {step_id!r}: the checkpoint has split {st.split!r}, {why} "
                f"(it makes {len(splits)}: {shown}{more}). Resume with the source the "
                "checkpoint was taken with; a source that makes its splits from the "
                "parallelism (rows(...) or a generator without splits=N) resumes only at "
                "the parallelism it had")
        out[found[0]] = st
    return out


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # descriptors whose == does not answer (arrays) are not the same
        return False


class SourceDriver:
    """Reads the splits of one source task; ``poll`` returns the messages to send."""

    def __init__(
        self,
        step: SourceStep,
        index: int,
        parallelism: int,
        restored: Mapping[int, SplitState] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.step = step
        self.clock = clock
        self.splits = list(step.source.splits(parallelism))
        saved = match_splits(step.step_id, restored or {}, self.splits)
        batch_size = step.batch_size
        self.schedule = RateSchedule.of(step.rate) if step.rate is not None else None
        if self.schedule is not None:  # small batches keep a rate-limited source smooth
            # Per split, not per task: a generator's chunks must have one size in every
            # task, whatever the parallelism (its positions count chunks). Sized for the
            # schedule's least rate, so it stays smooth at every step.
            per_split = self.schedule.least / max(1, len(self.splits))
            batch_size = max(1, min(batch_size, int(per_split / 20) or 1))
        self.batch_size = batch_size
        self._states: dict[int, SplitState] = {}  # owned splits without an open reader
        self._readers: dict[int, SourceReader] = {}
        self.watermarks: dict[int, BoundedOutOfOrderness] = {}  # owned splits not ended
        self._order: list[int] = []  # splits to read, round-robin
        self._pending: set[int] = set()  # splits whose state is on its way here
        for sid in splits_of(len(self.splits), parallelism, index):
            self._own(sid, saved.get(sid) or SplitState(self.splits[sid]))
        self._turn = 0
        self._emitted_wm: int | None = None
        self._restate = False
        self._origin: float | None = None  # the schedule's 0 s: the first poll
        self._started: float | None = None  # the pace counts from here (a rescale resets it)
        self._rows = 0  # rows read since _started
        self._share = 0.0  # this task's share of the step's rate
        self._reset_rate()
        self._last_data = clock()
        self._idle = False
        self.done = False

    # --- the splits this task reads -------------------------------------------------

    @property
    def owned(self) -> list[int]:
        """The ids of the splits this task reads (or has read to their end)."""
        return sorted([*self._states, *self._readers])

    def snapshot(self) -> dict[int, SplitState]:
        """Every owned split's state, for a checkpoint."""
        if self._pending:
            raise RuntimeError(f"source step {self.step.step_id!r}: splits {sorted(self._pending)}"
                               " are on their way here; no checkpoint can hold them now")
        return {sid: self._state_of(sid) for sid in self.owned}

    def release(self, split_ids: Iterable[int]) -> dict[int, SplitState]:
        """Stop reading ``split_ids`` (a rescale gives them to other tasks); their states."""
        out = {}
        for sid in split_ids:
            if sid not in self._states and sid not in self._readers:
                raise ValueError(f"source step {self.step.step_id!r}: this task does not read "
                                 f"split {sid}")
            out[sid] = self._state_of(sid)
            reader = self._readers.pop(sid, None)
            if reader is not None:
                reader.close()
            self._states.pop(sid, None)
            self.watermarks.pop(sid, None)
            if sid in self._order:
                self._order.remove(sid)
        self._reset_rate()
        return out

    def expect(self, split_ids: Iterable[int]) -> None:
        """``split_ids`` come to this task from others: read them (and promise a
        watermark) only once :meth:`adopt` has their states."""
        for sid in split_ids:
            if sid in self._readers:
                raise ValueError(f"source step {self.step.step_id!r}: split {sid} is being "
                                 "read here already")
            self._states.pop(sid, None)
            self.watermarks.pop(sid, None)
            if sid in self._order:
                self._order.remove(sid)
            self._pending.add(sid)

    def adopt(self, states: Mapping[int, SplitState]) -> None:
        """Read these splits from where their old task left them."""
        for sid, st in states.items():
            if sid not in self._pending:
                raise ValueError(f"source step {self.step.step_id!r}: split {sid} was not "
                                 "expected here")
            if not _same(self.splits[sid], st.split):
                raise ValueError(f"source step {self.step.step_id!r}: split {sid} is "
                                 f"{self.splits[sid]!r} here but {st.split!r} where it came from")
            self._pending.discard(sid)
            self._own(sid, st)
        self._reset_rate()
        if not self._pending:
            self.restate()

    def restate(self) -> None:
        """After a reconfiguration, send the watermark again even if it has not risen
        (consumers forget a rescaled source's watermarks at the reconfiguration), and
        declare idleness again once the idle timeout has passed."""
        self._restate = True
        self._idle = False

    def _own(self, sid: int, st: SplitState) -> None:
        self._states[sid] = st
        if not st.ended:
            gen = BoundedOutOfOrderness(self.step.out_of_order_ms)
            gen.max_ts = st.max_ts
            self.watermarks[sid] = gen
            self._order.append(sid)
            self._order.sort()

    def _state_of(self, sid: int) -> SplitState:
        reader = self._readers.get(sid)
        gen = self.watermarks.get(sid)
        st = self._states.get(sid) or SplitState(self.splits[sid])
        if reader is not None:
            st = replace(st, position=reader.position())
        return replace(st, max_ts=gen.max_ts) if gen is not None else st

    def _reader(self, sid: int) -> SourceReader:
        reader = self._readers.get(sid)
        if reader is None:
            st = self._states.pop(sid)
            reader = self.step.source.open(self.splits[sid], st.position, self.batch_size)
            self._readers[sid] = reader
        return reader

    def _reset_rate(self) -> None:
        """Each split gets an equal share of the step's rate."""
        if self.schedule is not None:
            n = len(self._states) + len(self._readers) + len(self._pending)
            self._share = n / max(1, len(self.splits))
            if self._started is not None:
                self._started, self._rows = self.clock(), 0

    @property
    def rate_per_task(self) -> float | None:
        """Rows per second this task is asked to read now (its share of the step's rate,
        at the schedule's current step); ``None`` when the source is not paced."""
        if self.schedule is None:
            return None
        elapsed = 0.0 if self._origin is None else self.clock() - self._origin
        return self._share * self.schedule.at(elapsed)

    def _due(self, now: float) -> float:
        """Rows due from this task since ``_started`` at its share of the schedule."""
        assert self.schedule is not None and self._origin is not None
        assert self._started is not None
        rows_by = self.schedule.rows_by
        return self._share * (rows_by(now - self._origin) - rows_by(self._started - self._origin))

    def backlog(self) -> int | None:
        """Rows this task is behind, where it knows; ``None`` when it does not.

        Unpaced, every row of its splits not read yet is due now (``remaining()`` of each
        reader; ``None`` if a reader does not know, or a split is not open yet). Paced,
        the rows due by now at the task's share of the rate and not read yet (at most what
        is left, where that is known): 0 while the source keeps its pace.
        """
        if self.done:
            return 0
        unread: int | None = 0
        for sid in self.owned:
            st = self._states.get(sid)
            left = 0 if st is not None and st.ended else (
                self._readers[sid].remaining() if sid in self._readers else None)
            if left is None:
                unread = None
                break
            unread += left  # type: ignore[operator]
        if self.schedule is None:
            return unread
        due = 0 if self._started is None else max(
            0, int(self._due(self.clock())) - self._rows)
        return due if unread is None else min(due, unread)

    # --- reading --------------------------------------------------------------------

    def poll(self) -> list[Message]:
        """Messages to send now; an empty list when nothing is ready."""
        if self.done:
            return []
        if self._restate and (restated := self._watermark()):
            return restated
        if not self._order:
            if self._pending:
                return []
            return self._finish() if self.step.source.bounded else self._go_idle()
        if self.schedule is not None:
            now = self.clock()
            if self._started is None:  # not from when the task was made: no burst
                self._origin = self._started = now
            if self._rows >= self._due(now):
                return []
        sid = self._order[self._turn % len(self._order)]
        self._turn += 1
        batch = self._reader(sid).read()
        if batch is None:
            self._end_split(sid)
            return self._finish() if not self._order and not self._pending else self._watermark()
        if batch.num_rows == 0:
            return self._maybe_idle()
        self._rows += batch.num_rows
        self._last_data = self.clock()
        self._idle = False
        out: list[Message] = []
        if self.step.timestamp is not None:
            batch = with_event_time(batch, self.step.timestamp, self.step.step_id)
            self.watermarks[sid].observe(max_event_time(batch))  # type: ignore[arg-type]
            out.append(Batch(batch))
            out += self._watermark()
        else:
            out.append(Batch(batch))
        return out

    def _end_split(self, sid: int) -> None:
        st = replace(self._state_of(sid), ended=True)
        self._readers.pop(sid).close()
        self._states[sid] = st
        self._order.remove(sid)
        del self.watermarks[sid]

    def _watermark(self) -> list[Message]:
        if self.step.timestamp is None or not self.watermarks or self._pending:
            return []  # a split on its way here has a watermark this task does not know yet
        wm = min(g.watermark for g in self.watermarks.values())
        if wm == MIN_WATERMARK:
            return []  # some split has shown no row yet: nothing to promise
        if (self._emitted_wm is None or wm > self._emitted_wm
                or (self._restate and wm == self._emitted_wm)):
            self._emitted_wm = wm
            self._restate = False
            return [Watermark(wm)]
        return []

    def _maybe_idle(self) -> list[Message]:
        timeout = self.step.idle_timeout_ms
        if timeout is not None and not self._idle and (
            (self.clock() - self._last_data) * 1000 >= timeout
        ):
            return self._go_idle()
        return []

    def _go_idle(self) -> list[Message]:
        if self._idle:
            return []
        self._idle = True
        return [Watermark(self._emitted_wm or 0, idle=True)]

    def _finish(self) -> list[Message]:
        self.done = True
        return [Watermark(MAX_WATERMARK), EndOfStream()]
