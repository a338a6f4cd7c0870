"""``rows(...)``: a replayable in-memory source of dicts, split evenly over source tasks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from rheostat.runtime.io import ListReader, Source


class RowsSource(Source):
    def __init__(
        self, data: Sequence[dict[str, Any]] | pa.Table, batch_size: int, splits: int | None
    ) -> None:
        self.table = data if isinstance(data, pa.Table) else pa.Table.from_pylist(list(data))
        self.batch_size = batch_size
        self.n_splits = splits

    def schema(self) -> pa.Schema:
        return self.table.schema

    def splits(self, parallelism: int) -> list[tuple[int, int]]:
        """Contiguous row ranges, one per split (``splits`` of them, default the parallelism)."""
        n = self.n_splits or parallelism
        rows = self.table.num_rows
        return [(i * rows // n, (i + 1) * rows // n) for i in range(n)]

    def open(
        self, split: tuple[int, int], position: Any = None, batch_size: int = 0
    ) -> ListReader:
        start, stop = split
        part = self.table.slice(start, stop - start)
        batches = [b for b in part.to_batches(max_chunksize=self.batch_size) if b.num_rows]
        return ListReader(batches, position)


def rows(
    data: Sequence[dict[str, Any]] | pa.Table, *, batch_size: int = 1024, splits: int | None = None
) -> RowsSource:
    """A source over ``data`` (dicts or a pyarrow Table) in batches of ``batch_size`` rows."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    return RowsSource(data, batch_size, splits)
