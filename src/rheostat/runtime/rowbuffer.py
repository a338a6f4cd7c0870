"""A columnar buffer of rows that each fall due at a watermark, kept per key group.

The joins buffer their inputs here. Every row carries a *due* watermark (a hidden
int64 column): a row is needed while the watermark is below it and is popped once the
watermark reaches it. A row that is already due when it arrives is late. Appending is
cheap (the batch is kept as a chunk); the chunks are concatenated only when the buffer is
read; popping is one vectorised filter, skipped outright while the watermark is below the
smallest due value.

Key groups are not stored: they are a pure function of the key columns, so they are
computed only when a snapshot is taken or key groups are dropped.

>>> import numpy as np, pyarrow as pa
>>> buf = RowBuffer()
>>> buf.add(pa.record_batch({"k": [1, 2, 3]}), np.array([10, 20, 30]))
>>> buf.pop_due(20).column("k").to_pylist(), len(buf)
([1, 2], 1)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from rheostat.runtime.keys import key_groups
from rheostat.runtime.messages import MAX_WATERMARK

DUE = "__rheostat_due"
_MAX_CHUNKS = 32  # filtering keeps a table's chunks: merge them past this many


class RowBuffer:
    """Rows with a due watermark each; see the module docstring."""

    def __init__(self) -> None:
        self._chunks: list[pa.Table] = []
        self._min_due = MAX_WATERMARK

    def __len__(self) -> int:
        return sum(c.num_rows for c in self._chunks)

    @property
    def table(self) -> pa.Table:
        """Every buffered row (the ``DUE`` column included), as one table."""
        if len(self._chunks) > 1:
            self._chunks = [pa.concat_tables(self._chunks, promote_options="default")]
        return self._chunks[0] if self._chunks else pa.table({})

    def add(self, rows: pa.RecordBatch | pa.Table, due: np.ndarray) -> None:
        """Buffer ``rows`` with their ``due`` watermarks (an int64 array, one per row)."""
        if len(due):
            table = rows if isinstance(rows, pa.Table) else pa.Table.from_batches([rows])
            self._chunks.append(table.append_column(DUE, pa.array(due, pa.int64())))
            self._min_due = min(self._min_due, int(due.min()))

    def pop_due(self, watermark: int) -> pa.Table | None:
        """Remove and return the rows due at ``watermark``; ``None`` when there are none."""
        if not self._chunks or watermark < self._min_due:
            return None
        table = self.table
        due = table.column(DUE).to_numpy()
        mask = due <= watermark
        popped = table.filter(pa.array(mask))
        self._replace(table.filter(pa.array(~mask)))
        return popped

    def _replace(self, table: pa.Table) -> None:
        if table.num_columns and table.column(0).num_chunks > _MAX_CHUNKS:
            table = table.combine_chunks()
        self._chunks = [table] if table.num_rows else []
        self._min_due = (
            int(table.column(DUE).to_numpy().min()) if table.num_rows else MAX_WATERMARK
        )

    # --- per key group: snapshot, restore, drop ------------------------------------

    def split(
        self, keys: Sequence[str], max_parallelism: int, groups: Iterable[int] | None = None
    ) -> dict[int, pa.Table]:
        """The buffered rows per key group (only ``groups`` when given; empty ones left out)."""
        table = self.table
        if not table.num_rows:
            return {}
        kg = key_groups(table, keys, max_parallelism)
        if groups is not None:
            wanted = np.isin(kg, np.fromiter(groups, dtype=np.int64))
            table, kg = table.filter(pa.array(wanted)), kg[wanted]
        order = np.argsort(kg, kind="stable")
        table, kg = table.take(pa.array(order)), kg[order]
        starts = np.flatnonzero(np.r_[True, kg[1:] != kg[:-1]]) if len(kg) else []
        ends = [*starts[1:], len(kg)]
        return {int(kg[s]): table.slice(s, e - s) for s, e in zip(starts, ends)}

    def restore(self, parts: Iterable[pa.Table]) -> None:
        """Add rows taken by :meth:`split` (their ``DUE`` column included)."""
        tables = [*self._chunks, *(t for t in parts if t.num_rows)]
        if tables:
            self._replace(pa.concat_tables(tables, promote_options="default"))

    def drop(self, keys: Sequence[str], max_parallelism: int, groups: Iterable[int]) -> None:
        """Forget the rows of ``groups`` (key groups that moved to another task)."""
        table = self.table
        if table.num_rows:
            kg = key_groups(table, keys, max_parallelism)
            gone = np.isin(kg, np.fromiter(groups, dtype=np.int64))
            self._replace(table.filter(pa.array(~gone)))


def split_parts(
    buffers: Mapping[str, tuple[RowBuffer, Sequence[str]]],
    max_parallelism: int,
    groups: Iterable[int] | None,
) -> dict[int, dict[str, pa.Table]]:
    """Snapshot several named buffers as ``{key_group: {name: rows}}``."""
    wanted = None if groups is None else list(groups)
    out: dict[int, dict[str, pa.Table]] = {}
    for name, (buf, keys) in buffers.items():
        for g, rows in buf.split(keys, max_parallelism, wanted).items():
            out.setdefault(g, {})[name] = rows
    return out
