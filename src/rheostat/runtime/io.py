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

    def remaining(self) -> int | None:
        """Rows of the split not read yet, where the reader knows (a file's row count, a
        generator's end); ``None``, the default: unknown. The sensors report it as the
        source's backlog; it is asked once per metrics report, not per batch."""
        return None


class Source(ABC):
    """A picklable description of where rows come from."""

    #: True when every split ends (files, a generator with a count); False for brokers.
    bounded: bool = True

    def schema(self) -> pa.Schema | None:
        """The schema of the batches, when it is known before the job runs (for checks)."""
        return None

    @abstractmethod
    def splits(self, parallelism: int) -> Sequence[Any]:
        """Picklable split descriptors, the same list in every task of a run.

        Which task reads which split is ``rheostat.plan.splits.split_owners(len(splits),
        parallelism)``; with ``parallelism >= len(splits)`` task ``i`` reads split ``i``.
        A source whose list does not depend on ``parallelism`` (one split per file, or a
        fixed count such as ``rows(..., splits=8)``) can be rescaled live and resumed at
        another parallelism: split positions move between tasks. A list made from the
        parallelism pins the step to the parallelism it started with. Descriptors should
        compare equal (``==``) when they name the same split: restores match the
        checkpoint's splits to these by value.

        >>> class Three(Source):
        ...     def splits(self, parallelism): return ["a", "b", "c"]
        ...     def open(self, split, position=None, batch_size=1): ...
        >>> Three().splits(2) == Three().splits(5)
        True
        """

    @abstractmethod
    def open(self, split: Any, position: Any = None, batch_size: int = 65_536) -> SourceReader:
        """A reader for ``split``, resuming at ``position`` when given."""


class WrappedSource(Source):
    """A source that reads ``inner`` and wraps each of its readers (``wrap``): for
    pacing, metering or fault injection around any source.

    >>> class Same(WrappedSource):
    ...     def wrap(self, reader): return reader
    """

    def __init__(self, inner: Source) -> None:
        self.inner = inner

    @property
    def bounded(self) -> bool:  # type: ignore[override]
        return bool(self.inner.bounded)

    def schema(self) -> pa.Schema | None:
        return self.inner.schema()

    def splits(self, parallelism: int) -> Sequence[Any]:
        return self.inner.splits(parallelism)

    def open(self, split: Any, position: Any = None, batch_size: int = 65_536) -> SourceReader:
        return self.wrap(self.inner.open(split, position, batch_size))

    @abstractmethod
    def wrap(self, reader: SourceReader) -> SourceReader:
        """The reader the task reads instead of ``reader``."""


@dataclass(frozen=True)
class SinkContext:
    step_id: str
    #: The task's index and its step's parallelism when the writer opened. Both change
    #: with live rescales and an index can come back: never key a transaction on them.
    task_index: int
    parallelism: int
    #: Sends batches to the driver process (the collecting sink uses it). ``key`` names a
    #: committed transaction: the driver delivers each key once, however often it is sent.
    send_to_driver: Callable[[list[pa.RecordBatch], Any], None]


class SinkWriter(ABC):
    """Writes one sink task's rows.

    A writer that takes part in checkpoints (its sink sets ``exactly_once = True``) stages
    what it writes: ``prepare`` closes the current transaction at a checkpoint barrier and
    returns a small picklable description of it, stored in the checkpoint; ``commit``
    makes it visible once the checkpoint is complete. After a crash the restored writer
    gets ``recover`` with the transactions of the restored checkpoint: it commits them
    again (commits are idempotent) and discards what the old tasks it restored had staged
    besides. A transaction must name itself (a per-writer id, not the task index) and be
    committable by any writer of the step: transactions move between tasks when the job
    is rescaled, moved or restored (docs/sinks.md, "The contract"). Writers that keep the
    defaults write directly and are at-least-once across failures.
    """

    @abstractmethod
    def write(self, batch: pa.RecordBatch) -> None:
        """Write one batch (without the hidden event-time column)."""

    def prepare(self, checkpoint_id: int) -> Any:
        """Stage everything written since the last ``prepare``; return its transaction."""
        return None

    def commit(self, checkpoint_id: int, transaction: Any) -> None:  # noqa: B027
        """Make a prepared transaction visible. Must be idempotent."""

    def recover(self, transactions: list[tuple[int, Any]]) -> None:
        """After a restore: commit these (again) and discard any other staged data."""
        for checkpoint_id, transaction in transactions:
            self.commit(checkpoint_id, transaction)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and close at end of stream."""


class Sink(ABC):
    """A picklable description of where rows go."""

    #: True when the writers stage output and commit it with checkpoints (two phases).
    exactly_once: bool = False

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

    def remaining(self) -> int:
        return sum(b.num_rows for b in self._batches[self._next:])
