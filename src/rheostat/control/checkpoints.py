"""Checkpoint coordination as a pure state machine: trigger, collect acks, complete.

One checkpoint is in flight at a time. It completes when every task has acknowledged it:
with the parts it wrote, or — for a task that has finished — with its final snapshot,
which stands for its state from then on. The controller does the I/O: it sends the
triggers, writes inline parts and the manifest, and tells the tasks to commit.

>>> c = CheckpointCoordinator(["a#0", "b#0"], interval_s=1.0)
>>> c.due(now=0.0), c.due(now=1.0)
(None, 1)
>>> c.on_ack("a#0", 1, ("pa",), {}) is None
True
>>> c.on_ack("b#0", 1, ("pb",), {}).parts
('pa', 'pb')
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rheostat.runtime.messages import FINAL_CHECKPOINT


@dataclass
class Completed:
    """Every task has answered: write ``inline`` parts, then the manifest over all parts."""

    checkpoint_id: int
    parts: tuple[Any, ...]
    inline: dict[str, bytes]
    final: bool = False
    #: Finished tasks whose final snapshot this checkpoint holds: once it is durable they
    #: commit what that snapshot staged (a retired task's last sink output among it).
    finals: tuple[str, ...] = ()


@dataclass
class _InFlight:
    checkpoint_id: int
    started: float
    acked: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    inline: dict[str, dict[str, bytes]] = field(default_factory=dict)


class CheckpointCoordinator:
    def __init__(
        self, task_ids: list[str], interval_s: float, first_id: int = 1,
        timeout_s: float = 600.0, tolerable_failures: int = 3,
    ) -> None:
        self.task_ids = list(task_ids)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.tolerable_failures = tolerable_failures
        self.next_id = first_id
        self.in_flight: _InFlight | None = None
        self.finals: dict[str, dict[str, bytes]] = {}  # final snapshots of finished tasks
        self.consecutive_failures = 0
        self.completed: list[int] = []
        self._last_trigger: float | None = None

    def due(self, now: float) -> int | None:
        """A new checkpoint id to trigger now, or None (the first is one interval in)."""
        if self._last_trigger is None:
            self._last_trigger = now
        if self.in_flight is not None or now - self._last_trigger < self.interval_s:
            return None
        if len(self.finals) == len(self.task_ids):
            return None  # everything has finished: the final checkpoint follows
        self._last_trigger = now
        checkpoint_id = self.next_id
        self.next_id += 1
        self.in_flight = _InFlight(checkpoint_id, now)
        self.in_flight.inline.update(self.finals)
        return checkpoint_id

    def track(self, task_ids: list[str]) -> None:
        """Tasks a reconfiguration added: checkpoints wait for them too (retired tasks
        stay until ``forget``, their final state riding in checkpoints)."""
        self.task_ids = list(dict.fromkeys(self.task_ids + list(task_ids)))

    def forget(self, task_id: str) -> None:
        """A retired task's final state is committed: later checkpoints leave it out."""
        self.task_ids = [t for t in self.task_ids if t != task_id]
        self.finals.pop(task_id, None)

    def soon(self) -> None:
        """Make the next checkpoint due at once (after a reconfiguration)."""
        self._last_trigger = -math.inf

    def timed_out(self, now: float) -> int | None:
        f = self.in_flight
        if f is not None and now - f.started > self.timeout_s:
            return f.checkpoint_id
        return None

    def on_ack(
        self, task_id: str, checkpoint_id: int, parts: tuple[Any, ...], inline: dict[str, bytes]
    ) -> Completed | None:
        if checkpoint_id == FINAL_CHECKPOINT:
            self.finals[task_id] = inline
            f = self.in_flight
            if f is not None and task_id not in f.acked:
                f.inline[task_id] = inline  # a finished task's final state stands for it
            return self._check()
        f = self.in_flight
        if f is None or f.checkpoint_id != checkpoint_id:
            return None  # an ack for an aborted checkpoint
        f.acked[task_id] = parts
        f.inline.pop(task_id, None)
        return self._check()

    def _check(self) -> Completed | None:
        f = self.in_flight
        if f is None or any(t not in f.acked and t not in f.inline for t in self.task_ids):
            return None
        self.in_flight = None
        self.completed.append(f.checkpoint_id)
        parts = tuple(p for t in self.task_ids for p in f.acked.get(t, ()))
        inline = {name: blob for t in self.task_ids for name, blob in f.inline.get(t, {}).items()}
        finals = tuple(t for t in self.task_ids if t not in f.acked and t in self.finals)
        return Completed(f.checkpoint_id, parts, inline, finals=finals)

    def written(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id``'s manifest is durable: failures in a row end here
        (not when the tasks have answered: a manifest that cannot be written is a
        failure too)."""
        if self.completed and self.completed[-1] == checkpoint_id:
            self.consecutive_failures = 0

    def final(self) -> Completed:
        """Once every task has finished: the last checkpoint, of their final snapshots."""
        checkpoint_id = self.next_id
        self.next_id += 1
        inline = {name: blob for t in self.task_ids for name, blob in self.finals[t].items()}
        return Completed(checkpoint_id, (), inline, final=True, finals=tuple(self.task_ids))

    @property
    def all_final(self) -> bool:
        return len(self.finals) == len(self.task_ids)

    def abort(self) -> int | None:
        """Give up the checkpoint in flight (a failed part, a timeout, a restart)."""
        f, self.in_flight = self.in_flight, None
        return None if f is None else f.checkpoint_id

    def failed(self, checkpoint_id: int) -> bool | None:
        """Count checkpoint ``checkpoint_id`` as failed, once: None if it was not in flight
        (another task already reported it), else whether more failed in a row than
        tolerated. A checkpoint whose manifest could not be written fails here too."""
        f = self.in_flight
        if f is not None and f.checkpoint_id == checkpoint_id:
            self.in_flight = None
        elif self.completed and self.completed[-1] == checkpoint_id:
            self.completed.pop()  # completed by the tasks, but its commit failed
        else:
            return None
        self.consecutive_failures += 1
        return self.consecutive_failures > self.tolerable_failures

    def restart(self, task_ids: list[str]) -> None:
        """After a restore: nothing in flight, no task finished; ids keep increasing."""
        self.abort()
        self.task_ids = list(task_ids)
        self.finals.clear()
