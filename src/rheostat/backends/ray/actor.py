"""The worker actor: a :class:`~rheostat.backends.hosting.WorkerLoop` in a Ray actor.

Three kinds of traffic reach an actor and each has its own concurrency group, so small
control messages never queue behind large batches:

- ``data``: frames from peer workers (batches, watermarks, credit), as ordered calls;
- ``control``: the controller's commands;
- ``events``: the controller's long poll for the worker's events.

Ray does not promise that a threaded actor runs calls in the order they were sent, so
every stream of calls carries a sequence number and the receiver puts them back in order.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
from collections import deque
from typing import Any

import ray

from rheostat.backends.hosting import WorkerLoop
from rheostat.backends.links import Link
from rheostat.protocol import Event

#: Calls on one wire that may be in flight before the sender waits for the oldest. Few:
#: frames sent meanwhile (credit returns, watermarks) then share the next call, and
#: every call costs a few milliseconds of CPU whatever it carries.
#: (bench/ray.py, q5 and a shuffle: 16 -> 2 moved Ray/local rows per CPU-s from
#: 0.63-0.65 to 0.63-0.72, within this machine's noise.)
_IN_FLIGHT = 2
_CLOSED = object()


class InOrder:
    """Puts numbered items back in order: ``accept(seq, item)`` returns the items now due.

    >>> o = InOrder()
    >>> o.accept(1, "b"), o.accept(0, "a"), o.accept(2, "c")
    ([], ['a', 'b'], ['c'])
    """

    def __init__(self) -> None:
        self.next = 0
        self.early: dict[int, Any] = {}
        self.lock = threading.Lock()

    def accept(self, seq: int, item: Any) -> list[Any]:
        with self.lock:
            self.early[seq] = item
            due = []
            while self.next in self.early:
                due.append(self.early.pop(self.next))
                self.next += 1
            return due


class RayWire:
    """The wire to one peer actor: frames go out as ordered ``deliver`` calls on it (a
    sender thread batches the frames queued meanwhile into one call) and come in through
    this actor's ``deliver``.

    ``put_from``: frames of at least this many bytes go into the object store
    (``ray.put``) and travel as references; others go inside the call (which Ray
    itself moves to the object store past ~100 KiB). 0: every frame in the call.
    """

    def __init__(self, me: int, peer: Any, put_from: int = 0) -> None:
        self.me, self.peer, self.put_from = me, peer, put_from
        self.out: deque[Any] = deque()
        self.ready = threading.Condition()
        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.order = InOrder()
        threading.Thread(target=self._send_loop, daemon=True, name=f"wire-{me}").start()

    def send_bytes(self, frame: Any) -> None:
        with self.ready:
            self.out.append(frame)
            self.ready.notify()

    def recv_bytes(self) -> Any:
        frame = self.inbox.get()
        if frame is _CLOSED:
            raise EOFError("the peer worker is gone")
        if isinstance(frame, ray.ObjectRef):
            return ray.get(frame)
        return frame

    def deliver(self, seq: int, frames: list[Any]) -> None:
        for due in self.order.accept(seq, frames):
            for frame in due:
                self.inbox.put(frame)

    def close(self) -> None:
        self.inbox.put(_CLOSED)

    def _send_loop(self) -> None:
        seq = 0
        in_flight: deque[Any] = deque()
        while True:
            if len(in_flight) >= _IN_FLIGHT:
                try:  # meanwhile frames queue up and go together in the next call
                    ray.get(in_flight.popleft())
                except ray.exceptions.RayError:
                    self.close()  # the peer died: the controller hears it and restarts
                    return
            with self.ready:
                while not self.out:
                    self.ready.wait()
                frames = list(self.out)
                self.out.clear()
            if self.put_from:
                frames = [ray.put(f) if len(f) >= self.put_from else f for f in frames]
            in_flight.append(self.peer.deliver.remote(self.me, seq, frames))
            seq += 1


@ray.remote(concurrency_groups={"data": 1, "control": 1, "events": 1})
class WorkerActor:
    """One worker of a job on Ray."""

    def __init__(self, worker: int, boot: dict[str, Any]) -> None:
        for path in reversed(boot["sys_path"]):
            if path not in sys.path and os.path.isdir(path or "."):
                sys.path.insert(0, path)
        cwd = boot.get("cwd")
        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)  # relative paths in the flow mean what they meant to the driver
        self.worker, self.boot = worker, boot
        self.commands: deque[Any] = deque()
        self.command_order = InOrder()
        self.wake = threading.Event()
        self.outbox: deque[Event] = deque()
        self.has_events = threading.Condition()
        self.wires: dict[int, RayWire] = {}
        self.connected = threading.Event()  # peers may send before our connect ran

    def connect(self, peers: dict[int, Any], put_from: int = 0) -> dict[str, Any]:
        """Open wires to the peer actors and start the loop; returns where this runs."""
        self.wires = {w: RayWire(self.worker, h, put_from) for w, h in peers.items()}
        self.connected.set()
        links = {w: Link(wire, self.wake, peer=w) for w, wire in self.wires.items()}
        self.loop = WorkerLoop(self.worker, self._emit, self.commands, self.wake, links,
                               self.boot)
        threading.Thread(target=self.loop.run, daemon=True, name="worker-loop").start()
        context = ray.get_runtime_context()
        return {"node_id": context.get_node_id(), "pid": os.getpid(),
                "resources": context.get_assigned_resources()}

    def add_peers(self, peers: dict[int, Any], put_from: int = 0) -> None:
        """Open wires to workers started after this one (a live rescale's)."""
        for w, handle in peers.items():
            self.wires[w] = RayWire(self.worker, handle, put_from)
            link = Link(self.wires[w], self.wake, peer=w)
            link.start()
            self.loop.links[w] = link

    @ray.method(concurrency_group="data")
    def deliver(self, src: int, seq: int, frames: list[Any]) -> None:
        self.connected.wait()
        self.wires[src].deliver(seq, frames)

    @ray.method(concurrency_group="control")
    def command(self, seq: int, command: Any) -> None:
        self.commands.extend(self.command_order.accept(seq, command))
        self.wake.set()

    @ray.method(concurrency_group="events")
    def events(self, timeout: float) -> list[Event]:
        """The events since the last call; waits up to ``timeout`` s for the first."""
        with self.has_events:
            if not self.outbox:
                self.has_events.wait(timeout)
            out = list(self.outbox)
            self.outbox.clear()
        return out

    def _emit(self, event: Event) -> None:
        with self.has_events:
            self.outbox.append(event)
            self.has_events.notify()


def kill_quietly(actor: Any) -> None:
    with contextlib.suppress(Exception):
        ray.kill(actor, no_restart=True)
