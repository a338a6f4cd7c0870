"""Channels between workers: one duplex wire per pair of workers, whatever carries it.

A wire carries frames in order: a 13-byte header (kind, channel id, value), followed for
a batch by the batch in the Arrow IPC stream format. The local backend's wire is a socket
pair; the Ray backend's is a stream of actor calls. Only the worker's main thread writes;
one reader thread per wire reads into per-channel queues, so a worker blocked sending
can never block its peer's reading. Credits: a sender counts the bytes it has in flight on
each channel and stops at the capacity; the receiver returns credit as it consumes.
"""

from __future__ import annotations

import struct
import threading
from collections import deque
from typing import Protocol

import pyarrow as pa

from rheostat.runtime.messages import Barrier, Batch, EndOfStream, Marker, Message, Watermark

_HEADER = struct.Struct("<BiQ")
_BATCH, _WATERMARK, _IDLE, _EOS, _CREDIT, _BARRIER, _MARKER = 1, 2, 3, 4, 5, 6, 7
_SMALL = 16  # credit charged for a watermark or end-of-stream
_RETURN_AT = 256 << 10  # return credit once this many bytes were consumed (or the queue empties)


def encode_batch(batch: pa.RecordBatch) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue()


def decode_batch(payload: bytes | pa.Buffer) -> pa.RecordBatch:
    return pa.ipc.open_stream(pa.py_buffer(payload)).read_next_batch()


class Wire(Protocol):
    """An ordered, reliable stream of frames to and from one peer worker (a
    ``multiprocessing`` Connection is one)."""

    def send_bytes(self, frame: bytes | pa.Buffer) -> None: ...

    def recv_bytes(self) -> bytes:
        """The next frame; raises EOFError or OSError once the wire is closed."""
        ...


class PeerGone(ConnectionError):
    """The wire to a peer worker broke while this worker sent on it: the peer died (or
    closed its end); no step is at fault."""

    def __init__(self, peer: int | None) -> None:
        who = "a peer worker" if peer is None else f"worker {peer}"
        super().__init__(f"{who} died: the channel wire to it closed")
        self.peer = peer


class Link:
    """One worker's end of the wire to one peer worker (``peer``, its number, if known)."""

    def __init__(self, wire: Wire, wake: threading.Event, peer: int | None = None) -> None:
        self.peer = peer
        self.wire = wire
        self.wake = wake
        self.inputs: dict[int, RemoteInput] = {}
        self.outputs: dict[int, RemoteOutput] = {}
        # Messages on a channel a reconfiguration added that the peer used before this
        # worker set up its end: they wait here for their RemoteInput.
        self.early: dict[int, deque[tuple[int, int, bytes | None]]] = {}
        self.lock = threading.Lock()
        self.closed = False
        self._thread = threading.Thread(target=self._read_loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def send(self, kind: int, channel: int, value: int, payload: pa.Buffer | None = None) -> None:
        try:
            self.wire.send_bytes(_HEADER.pack(kind, channel, value))
            if payload is not None:
                self.wire.send_bytes(payload)
        except OSError as e:  # BrokenPipeError, ConnectionResetError: the peer is gone
            raise PeerGone(self.peer) from e

    def _read_loop(self) -> None:
        try:
            while True:
                kind, channel, value = _HEADER.unpack(self.wire.recv_bytes())
                if kind == _CREDIT:
                    self.outputs[channel].returned.append(value)
                    self.wake.set()
                    continue
                payload = self.wire.recv_bytes() if kind == _BATCH else None
                inp = self.inputs.get(channel)
                if inp is None:
                    with self.lock:
                        inp = self.inputs.get(channel)
                        if inp is None:
                            self.early.setdefault(channel, deque()).append((kind, value, payload))
                if inp is not None:
                    inp.queue.append((kind, value, payload))
                self.wake.set()
        except (EOFError, OSError):
            self.closed = True
            self.wake.set()


class RemoteOutput:
    """The sending end of a channel to a task in another worker."""

    def __init__(self, link: Link, channel: int, capacity: int) -> None:
        self.link = link
        self.channel = channel
        self.capacity = capacity
        self.in_flight = 0
        self.returned: deque[int] = deque()  # appended by the reader thread
        link.outputs[channel] = self

    def has_credit(self) -> bool:
        while self.returned:
            self.in_flight -= self.returned.popleft()
        return self.in_flight < self.capacity

    def send(self, message: Message) -> None:
        if isinstance(message, Batch):
            payload = encode_batch(message.data)
            self.in_flight += payload.size
            self.link.send(_BATCH, self.channel, payload.size, payload)
        elif isinstance(message, Watermark):
            self.in_flight += _SMALL
            kind = _IDLE if message.idle else _WATERMARK
            self.link.send(kind, self.channel, message.value & 0xFFFFFFFFFFFFFFFF)
        elif isinstance(message, Barrier):
            self.in_flight += _SMALL
            self.link.send(_BARRIER, self.channel, message.checkpoint_id)
        elif isinstance(message, Marker):
            self.in_flight += _SMALL
            self.link.send(_MARKER, self.channel, message.reconfig_id)
        else:
            self.in_flight += _SMALL
            self.link.send(_EOS, self.channel, 0)


class RemoteInput:
    """The receiving end of a channel from a task in another worker."""

    def __init__(self, link: Link, channel: int) -> None:
        self.link = link
        self.channel = channel
        self._consumed = 0
        self._rows_per_byte = 0.0  # of the last batch decoded: estimates the queued rows
        with link.lock:  # filled by the reader thread from now on
            self.queue: deque[tuple[int, int, bytes | None]] = link.early.pop(channel, deque())
            link.inputs[channel] = self

    def poll(self) -> Message | None:
        if not self.queue:
            return None
        kind, value, payload = self.queue.popleft()
        if kind == _BATCH:
            message: Message = Batch(decode_batch(payload))  # type: ignore[arg-type]
            self._consumed += value
            if value:
                self._rows_per_byte = message.data.num_rows / value
        else:
            self._consumed += _SMALL
            if kind == _EOS:
                message = EndOfStream()
            elif kind == _BARRIER:
                message = Barrier(value)
            elif kind == _MARKER:
                message = Marker(value)
            else:
                signed = value - (1 << 64) if value >= 1 << 63 else value
                message = Watermark(signed, idle=kind == _IDLE)
        if self._consumed >= _RETURN_AT or not self.queue:
            self.link.send(_CREDIT, self.channel, self._consumed)
            self._consumed = 0
        return message

    def queued_rows(self) -> int:
        """Rows waiting, estimated from their encoded bytes (as the last batch decoded)."""
        frames = list(self.queue)  # one copy under the GIL: the reader thread appends
        queued = sum(value for kind, value, _ in frames if kind == _BATCH)
        return round(queued * self._rows_per_byte)
