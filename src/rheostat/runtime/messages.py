"""What travels on a channel: batches, watermarks, checkpoint barriers, reconfiguration
markers, end of stream.

Control messages never overtake data on one channel: a channel is a FIFO of these.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

MAX_WATERMARK = 2**63 - 1
#: The id under which tasks snapshot their final state when their input has ended.
FINAL_CHECKPOINT = 2**62
MIN_WATERMARK = -(2**63)


@dataclass(slots=True)
class Batch:
    data: pa.RecordBatch

    @property
    def nbytes(self) -> int:
        return self.data.nbytes


@dataclass(frozen=True, slots=True)
class Watermark:
    """No later row on this channel has an event time <= ``value`` (except late rows).

    ``idle`` marks a channel with nothing to say for now: it does not hold back the
    minimum that a multi-input task computes.
    """

    value: int
    idle: bool = False
    nbytes = 16


@dataclass(frozen=True, slots=True)
class Barrier:
    """Checkpoint ``checkpoint_id`` starts here: rows before it belong to the checkpoint."""

    checkpoint_id: int
    nbytes = 16


@dataclass(frozen=True, slots=True)
class Marker:
    """Reconfiguration ``reconfig_id`` starts here: rows before it were routed under the
    old configuration, rows after it under the new one."""

    reconfig_id: int
    nbytes = 16


@dataclass(frozen=True, slots=True)
class EndOfStream:
    nbytes = 8


Message = Batch | Watermark | Barrier | Marker | EndOfStream
