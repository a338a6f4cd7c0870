"""``rows(...)``: a replayable in-memory source of dicts, split over source tasks, and
``Gate``: a switch a test opens to let such a source end."""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from rheostat.runtime.io import ListReader, Source, SourceReader


class Gate:
    """A switch shared with worker processes (a flag file): closed until :meth:`open`.

    ``rows(..., hold_end=gate)`` does not end its input before the gate is open, so a
    test can reconfigure a running job without racing its end.

    >>> gate = Gate()
    >>> gate.is_open()
    False
    >>> gate.open(); gate.is_open()
    True
    """

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="rheostat-gate-")
        # Removed with the driver's instance; the copies workers unpickle leave it alone.
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.folder, True)

    def open(self) -> None:
        with open(os.path.join(self.folder, "open"), "w"):
            pass

    def is_open(self) -> bool:
        return os.path.exists(os.path.join(self.folder, "open"))

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.folder = state["folder"]

    def __repr__(self) -> str:
        return f"Gate({'open' if self.is_open() else 'closed'})"


class _HeldReader(SourceReader):
    """A reader whose end waits for a gate: empty batches (nothing ready) until then."""

    def __init__(self, inner: ListReader, gate: Gate, schema: pa.Schema) -> None:
        self.inner, self.gate = inner, gate
        self.empty_batch = pa.RecordBatch.from_pylist([], schema=schema)

    def read(self) -> pa.RecordBatch | None:
        batch = self.inner.read()
        if batch is None and not self.gate.is_open():
            return self.empty_batch
        return batch

    def position(self) -> Any:
        return self.inner.position()

    def remaining(self) -> int | None:
        return self.inner.remaining()


class RowsSource(Source):
    """The rows of ``table`` in batches of ``batch_size``; see :func:`rows`."""

    def __init__(
        self, data: Sequence[dict[str, Any]] | pa.Table, batch_size: int, splits: int | None,
        hold_end: Gate | None = None,
    ) -> None:
        self.table = data if isinstance(data, pa.Table) else pa.Table.from_pylist(list(data))
        self.batch_size = batch_size
        self.n_splits = splits
        self.hold_end = hold_end

    def schema(self) -> pa.Schema:
        return self.table.schema

    def __repr__(self) -> str:
        splits = "" if self.n_splits is None else f", splits={self.n_splits}"
        return f"testing.rows(<{self.table.num_rows} rows>{splits})"

    def splits(self, parallelism: int) -> list[tuple[int, int]] | list[tuple[int, int, int]]:
        """``splits=N``: ``(i, N, batch_size)``, batches ``i, i+N, ...`` of the table.
        Without: one contiguous row range ``(start, stop)`` per task."""
        if self.n_splits is not None:
            return [(i, self.n_splits, self.batch_size) for i in range(self.n_splits)]
        rows = self.table.num_rows
        return [(i * rows // parallelism, (i + 1) * rows // parallelism)
                for i in range(parallelism)]

    def open(
        self, split: tuple[int, ...], position: Any = None, batch_size: int = 0
    ) -> SourceReader:
        if len(split) == 3:
            index, n, size = split
            batches = self.table.to_batches(max_chunksize=size)
            reader = ListReader([b for b in batches if b.num_rows][index::n], position)
        else:
            start, stop = split
            part = self.table.slice(start, stop - start)
            reader = ListReader(
                [b for b in part.to_batches(max_chunksize=self.batch_size) if b.num_rows],
                position)
        if self.hold_end is None:
            return reader
        return _HeldReader(reader, self.hold_end, self.table.schema)


def rows(
    data: Sequence[dict[str, Any]] | pa.Table, *, batch_size: int = 1024,
    splits: int | None = None, hold_end: Gate | None = None,
) -> RowsSource:
    """A source over ``data`` (dicts or a pyarrow Table) in batches of ``batch_size`` rows.

    ``splits=N`` makes N splits whatever the parallelism (split ``i`` holds batches ``i,
    i+N, i+2N, ...``, so a task reading several sees the rows in their order): the step
    can then be rescaled live (``job.rescale(step, n)``, n <= N) and resumed at another
    parallelism. Without it each source task reads one contiguous range of the rows, and
    the step keeps the parallelism it started with.

    ``hold_end``: the input does not end before this :class:`Gate` is open (a test that
    reconfigures the running job opens it when it is done).

    >>> src = rows([{"x": i} for i in range(10)], batch_size=2, splits=3)
    >>> [src.open(s).read()["x"].to_pylist() for s in src.splits(1)]
    [[0, 1], [2, 3], [4, 5]]
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if splits is not None and (isinstance(splits, bool) or not isinstance(splits, int)
                               or splits < 1):
        raise ValueError(f"splits must be an integer >= 1 (or None: one per task), got "
                         f"{splits!r}")
    return RowsSource(data, batch_size, splits, hold_end)
