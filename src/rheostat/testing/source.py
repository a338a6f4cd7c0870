"""``rows(...)``: a replayable in-memory source of dicts, split over source tasks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from rheostat.runtime.io import ListReader, Source


class RowsSource(Source):
    """The rows of ``table`` in batches of ``batch_size``; see :func:`rows`."""

    def __init__(
        self, data: Sequence[dict[str, Any]] | pa.Table, batch_size: int, splits: int | None
    ) -> None:
        self.table = data if isinstance(data, pa.Table) else pa.Table.from_pylist(list(data))
        self.batch_size = batch_size
        self.n_splits = splits

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

    def open(self, split: tuple[int, ...], position: Any = None, batch_size: int = 0) -> ListReader:
        if len(split) == 3:
            index, n, size = split
            batches = self.table.to_batches(max_chunksize=size)
            return ListReader([b for b in batches if b.num_rows][index::n], position)
        start, stop = split
        part = self.table.slice(start, stop - start)
        batches = [b for b in part.to_batches(max_chunksize=self.batch_size) if b.num_rows]
        return ListReader(batches, position)


def rows(
    data: Sequence[dict[str, Any]] | pa.Table, *, batch_size: int = 1024, splits: int | None = None
) -> RowsSource:
    """A source over ``data`` (dicts or a pyarrow Table) in batches of ``batch_size`` rows.

    ``splits=N`` makes N splits whatever the parallelism (split ``i`` holds batches ``i,
    i+N, i+2N, ...``, so a task reading several sees the rows in their order): the step
    can then be rescaled live (``job.rescale(step, n)``, n <= N) and resumed at another
    parallelism. Without it each source task reads one contiguous range of the rows, and
    the step keeps the parallelism it started with.

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
    return RowsSource(data, batch_size, splits)
