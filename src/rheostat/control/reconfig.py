"""Reconfigurations of a running job, one at a time: queued, planned, tracked, finished.

A pure state machine, like the checkpoint coordinator: the controller asks it for the
next request to start (never while a checkpoint is in flight, so a checkpoint and a
reconfiguration cannot mix), tells it which tasks reported their part done, and does
the I/O itself.

>>> c = ReconfigCoordinator(first_id=1)
>>> fut = c.submit(["op"])
>>> req = c.next_request()
>>> req.reconfig_id, c.next_request() is None
(1, True)
>>> stage = c.started(req, plan=None, placement={}, expected={"a#0"}, removed=(), now=0.0)
>>> c.part_done(1, "a#0", now=0.5).duration_s
0.5
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from rheostat.plan.reconfig import ReconfigError


@dataclass
class Request:
    reconfig_id: int
    ops: Sequence[Any]
    reply: Future[dict[str, Any]]


@dataclass
class InFlight:
    request: Request
    plan: Any  # the PhysicalPlan after it
    placement: dict[str, int]
    expected: set[str]  # tasks whose part must be done
    removed: tuple[str, ...]
    started: float
    done: set[str] = field(default_factory=set)
    duration_s: float = 0.0
    #: "check": tasks check a function update against their state; then "apply".
    phase: str = "apply"
    spec: Any = None
    blob: bytes = b""
    apply_expected: set[str] = field(default_factory=set)
    remaining: list[Any] = field(default_factory=list)  # stages still to run after this
    moved: int = 0  # key groups this stage moves
    epoch: int = 0  # the id the stage's markers and reports carry
    refusal: str | None = None  # why a task refused its function update


class ReconfigCoordinator:
    def __init__(self, first_id: int = 1) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Request] = deque()
        self._next_id = first_id
        self.in_flight: InFlight | None = None
        self._closed: str | None = None

    def submit(self, ops: Sequence[Any]) -> Future[dict[str, Any]]:
        """Queue a request (thread-safe); the future gets its outcome."""
        reply: Future[dict[str, Any]] = Future()
        with self._lock:
            if self._closed is not None:
                reply.set_exception(ReconfigError(self._closed))
            else:
                self._queue.append(Request(self._next_id, list(ops), reply))
                self._next_id += 1
        return reply

    def next_request(self) -> Request | None:
        """The next request to start, if none is in flight."""
        with self._lock:
            if self.in_flight is not None or not self._queue:
                return None
            return self._queue.popleft()

    def put_back(self, request: Request) -> None:
        """Start ``request`` later, still before any other (it waits for something)."""
        with self._lock:
            self._queue.appendleft(request)

    @property
    def queued(self) -> bool:
        return bool(self._queue)

    def started(
        self, request: Request, plan: Any, placement: dict[str, int], expected: set[str],
        removed: tuple[str, ...], now: float, epoch: int | None = None, *,
        spec: Any = None, blob: bytes = b"", remaining: Sequence[Any] = (),
        checkers: set[str] | None = None,
    ) -> InFlight:
        """One stage of ``request`` runs; its markers and reports carry ``epoch`` (by
        default the request's id). ``remaining``: the stages after it. With
        ``checkers`` the stage first waits for those tasks to check a function update
        (phase "check", see :meth:`checked`), then for ``expected`` to apply it."""
        f = InFlight(request, plan, placement, set(expected), removed, now,
                     epoch=request.reconfig_id if epoch is None else epoch, spec=spec,
                     blob=blob, remaining=list(remaining))
        f.moved = 0 if spec is None else sum(len(m) for m in spec.moves.values())
        if checkers:
            f.phase, f.apply_expected, f.expected = "check", f.expected, set(checkers)
        self.in_flight = f
        return f

    def checked(self, epoch: int, task_id: str, refusal: str | None) -> InFlight | None:
        """A task checked the function update of stage ``epoch``. A refusal abandons the
        stage (nothing switched; the stage comes back with ``refusal`` set); once every
        checker passed, the stage turns to phase "apply" and comes back. None otherwise."""
        f = self.in_flight
        if f is None or f.phase != "check" or f.epoch != epoch:
            return None
        if refusal is not None:
            self.in_flight = None
            f.refusal = refusal
            return f
        f.done.add(task_id)
        if not f.expected <= f.done:
            return None
        f.phase, f.expected, f.done = "apply", f.apply_expected, set()
        return f

    def part_done(self, epoch: int, task_id: str, now: float) -> InFlight | None:
        """Record a task's part in stage ``epoch``; the stage once every part is in."""
        f = self.in_flight
        if f is None or f.epoch != epoch or f.phase != "apply":
            return None
        f.done.add(task_id)
        if not f.expected <= f.done:
            return None
        self.in_flight = None
        f.duration_s = now - f.started
        return f

    def abandon(self) -> InFlight | None:
        """Drop the reconfiguration in flight (the job is restarting or ending)."""
        f, self.in_flight = self.in_flight, None
        return f

    def drain(self, reason: str) -> list[Request]:
        """Every queued request; later ones are refused with ``reason`` (the job ended)."""
        with self._lock:
            self._closed = reason
            out = list(self._queue)
            self._queue.clear()
        return out
