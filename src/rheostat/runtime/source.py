"""Driving a source inside a source task: splits, event time, watermarks, rate limit.

Task ``i`` of ``p`` reads ``splits[i::p]`` round-robin. Each split has its own
bounded-out-of-orderness generator and the task's watermark is the minimum over its live
splits, so one slow split holds the watermark back instead of making its rows late.
A task with no splits of a bounded source ends at once; of an unbounded source it
declares itself idle so it does not stall the watermark downstream.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rheostat.plan.logical import SourceStep
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


class SourceDriver:
    def __init__(
        self,
        step: SourceStep,
        index: int,
        parallelism: int,
        positions: dict[int, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.step = step
        self.clock = clock
        splits = list(step.source.splits(parallelism))
        self.split_ids = list(range(len(splits)))[index::parallelism]
        positions = positions or {}
        self.rate_per_task = None if step.rate is None else step.rate / parallelism
        batch_size = step.batch_size
        if self.rate_per_task is not None:  # small batches keep a rate-limited source smooth
            batch_size = max(1, min(batch_size, int(self.rate_per_task / 20) or 1))
        self.readers = {
            sid: step.source.open(splits[sid], positions.get(sid), batch_size)
            for sid in self.split_ids
        }
        self.watermarks = {sid: BoundedOutOfOrderness(step.out_of_order_ms) for sid in self.readers}
        self._order = list(self.readers)
        self._turn = 0
        self._emitted_wm: int | None = None
        self._started = clock()
        self._rows = 0
        self._last_data = self._started
        self._idle = False
        self.done = False

    def positions(self) -> dict[int, Any]:
        return {sid: r.position() for sid, r in self.readers.items()}

    def poll(self) -> list[Message]:
        """Messages to send now; an empty list when nothing is ready."""
        if self.done:
            return []
        if not self._order:
            return self._finish() if self.step.source.bounded else self._go_idle()
        if self.rate_per_task is not None:
            allowed = (self.clock() - self._started) * self.rate_per_task
            if self._rows >= allowed:
                return []
        sid = self._order[self._turn % len(self._order)]
        self._turn += 1
        batch = self.readers[sid].read()
        if batch is None:
            self.readers[sid].close()
            self._order.remove(sid)
            del self.watermarks[sid]
            return self._finish() if not self._order else self._watermark()
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

    def _watermark(self) -> list[Message]:
        if self.step.timestamp is None or not self.watermarks:
            return []
        wm = min(g.watermark for g in self.watermarks.values())
        if wm == MIN_WATERMARK:
            return []  # some split has shown no row yet: nothing to promise
        if self._emitted_wm is None or wm > self._emitted_wm:
            self._emitted_wm = wm
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
