"""Channel endpoints and credit-based backpressure, bounded in bytes.

A sender may send while the bytes it has in flight on the channel are under the
channel's capacity (one message is always allowed into an empty channel, so a batch
larger than the capacity cannot deadlock). Backends provide endpoints that cross
processes; ``LocalChannel`` is the zero-copy hand-off between tasks in one process.

>>> import pyarrow as pa
>>> from rheostat.runtime.messages import Batch
>>> ch = LocalChannel(capacity_bytes=1)
>>> ch.has_credit(); ch.send(Batch(pa.record_batch({"x": [1]}))); ch.has_credit()
True
False
>>> ch.poll().data.num_rows, ch.has_credit()
(1, True)
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from rheostat.runtime.messages import Batch, Message

DEFAULT_CAPACITY_BYTES = 8 << 20


class OutputEndpoint(Protocol):
    def has_credit(self) -> bool: ...

    def send(self, message: Message) -> None: ...


class InputEndpoint(Protocol):
    def poll(self) -> Message | None: ...

    def queued_rows(self) -> int:
        """Rows waiting on the channel now (for the sensors; an estimate where the rows
        are still encoded). Called once per metrics report, never per message."""
        ...


class LocalChannel:
    """Both ends of a channel whose tasks share a process: a deque of messages."""

    def __init__(self, capacity_bytes: int = DEFAULT_CAPACITY_BYTES) -> None:
        self.capacity = capacity_bytes
        self.in_flight = 0
        self._queue: deque[Message] = deque()

    def has_credit(self) -> bool:
        return self.in_flight < self.capacity or not self._queue

    def send(self, message: Message) -> None:
        self._queue.append(message)
        self.in_flight += message.nbytes

    def poll(self) -> Message | None:
        if not self._queue:
            return None
        message = self._queue.popleft()
        self.in_flight -= message.nbytes
        return message

    def queued_rows(self) -> int:
        return sum(m.data.num_rows for m in list(self._queue) if isinstance(m, Batch))


class Outbox:
    """Messages waiting for credit on one output endpoint, kept in order."""

    def __init__(self, endpoint: OutputEndpoint) -> None:
        self.endpoint = endpoint
        self.pending: deque[Message] = deque()

    def put(self, message: Message) -> None:
        if not self.pending and self.endpoint.has_credit():
            self.endpoint.send(message)
        else:
            self.pending.append(message)

    def flush(self) -> bool:
        """Send what credit allows; True when nothing is left waiting."""
        while self.pending and self.endpoint.has_credit():
            self.endpoint.send(self.pending.popleft())
        return not self.pending
