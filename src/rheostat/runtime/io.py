"""The interfaces between the runtime and connectors: sources and sinks.

A *source* is a picklable description. At run time each source task opens the splits it
was given; a split's reader returns Arrow record batches and a position from which the
same split can be reopened to continue exactly after the last batch returned (replay).

A *sink* is a picklable description; each sink task opens one writer.

>>> import pyarrow as pa
>>> class Numbers(Source):
...     def splits(self, parallelism):
...         return [0]
...     def open(self, split, position=None, batch_size=2):
...         return ListReader([pa.record_batch({"n": [1, 2]})], position)
>>> reader = Numbers().open(0)
>>> reader.read().num_rows, reader.read()
(2, None)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa


class SourceReader(ABC):
    """Reads one split."""

    @abstractmethod
    def read(self) -> pa.RecordBatch | None:
        """The next batch; ``None`` once the split is exhausted; a 0-row batch if none is ready."""

    @abstractmethod
    def position(self) -> Any:
        """A picklable position: reopening the split there resumes after the last batch read."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files or connections."""


class Source(ABC):
    """A picklable description of where rows come from."""

    #: True when every split ends (files, a generator with a count); False for brokers.
    bounded: bool = True

    def schema(self) -> pa.Schema | None:
        """The schema of the batches, when it is known before the job runs (for checks)."""
        return None

    @abstractmethod
    def splits(self, parallelism: int) -> Sequence[Any]:
        """Picklable split descriptors; source task ``i`` reads ``splits[i::parallelism]``."""

    @abstractmethod
    def open(self, split: Any, position: Any = None, batch_size: int = 65_536) -> SourceReader:
        """A reader for ``split``, resuming at ``position`` when given."""


@dataclass(frozen=True)
class SinkContext:
    step_id: str
    task_index: int
    parallelism: int
    #: Sends a batch to the driver process (the collecting sink uses it).
    send_to_driver: Callable[[pa.RecordBatch], None]


class SinkWriter(ABC):
    @abstractmethod
    def write(self, batch: pa.RecordBatch) -> None:
        """Write one batch (without the hidden event-time column)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and close at end of stream."""


class Sink(ABC):
    """A picklable description of where rows go."""

    @abstractmethod
    def open(self, ctx: SinkContext) -> SinkWriter: ...

    def on_driver_data(self, batch: pa.RecordBatch) -> None:  # noqa: B027 - optional hook
        """Called in the driver process with each batch a writer sent with ``send_to_driver``."""


class ListReader(SourceReader):
    """Reads a list of batches; the position is the index of the next batch."""

    def __init__(self, batches: Sequence[pa.RecordBatch], position: int | None = None) -> None:
        self._batches = batches
        self._next = position or 0

    def read(self) -> pa.RecordBatch | None:
        if self._next >= len(self._batches):
            return None
        batch = self._batches[self._next]
        self._next += 1
        return batch

    def position(self) -> int:
        return self._next
