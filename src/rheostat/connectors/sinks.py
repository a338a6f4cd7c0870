"""Sinks: Parquet and JSON-lines part files, stdout, a discarding sink, a collecting sink.

>>> from rheostat.runtime.io import SinkContext
>>> sink = collect()
>>> deliver = lambda batch, key=None: sink.on_driver_data(batch)
>>> writer = sink.open(SinkContext("out", 0, 1, deliver))  # as the runtime does:
>>> writer.write(pa.record_batch({"x": [1, 2]}))
>>> writer.commit(1, writer.prepare(1))  # rows are staged until their checkpoint commits
>>> sink.to_pylist()
[{'x': 1}, {'x': 2}]
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from rheostat.connectors.files import JsonlSink, ParquetSink, to_json_lines
from rheostat.runtime.io import Sink, SinkContext, SinkWriter


def parquet(
    path: str,
    rows_per_file: int | None = None,
    row_group_rows: int = 131_072,
    compression: str = "snappy",
    use_dictionary: bool | Sequence[str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> ParquetSink:
    """Write Parquet part files into directory ``path`` (created; local or fsspec URL).

    Exactly-once with checkpoints: each sink task stages files under ``path/_staging/`` and
    commits them as ``part-<task>-c<checkpoint>-<seq>-<id>.parquet`` when the checkpoint
    completes (see docs/sinks.md); readers skip names starting with ``_`` or ``.``. A new
    file starts every ``rows_per_file`` rows. Small batches are buffered into row groups of
    ``row_group_rows``. ``use_dictionary=None`` dictionary-encodes only the columns whose
    first row group has few distinct values (dictionary encoding of high-cardinality
    columns is slow).

    >>> parquet("out/bids", rows_per_file=1_000_000)
    sinks.parquet('out/bids')
    """
    return ParquetSink(path, rows_per_file, row_group_rows, compression, use_dictionary,
                       storage_options)


def jsonl(
    path: str,
    rows_per_file: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> JsonlSink:
    """Write JSON-lines part files into directory ``path``, exactly-once like :func:`parquet`.

    Timestamps, dates and decimals are written as strings.

    >>> jsonl("s3://bucket/out/")
    sinks.jsonl('s3://bucket/out/')
    """
    return JsonlSink(path, rows_per_file, storage_options)


# ---------------------------------------------------------------- stdout


class StdoutSink(Sink):
    """Prints rows as JSON lines; ``[i]``-prefixed by sink task when there are several."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit

    def open(self, ctx: SinkContext) -> SinkWriter:
        return _StdoutWriter(self.limit, f"[{ctx.task_index}] " if ctx.parallelism > 1 else "")

    def __repr__(self) -> str:
        return f"sinks.stdout(limit={self.limit})"


class _StdoutWriter(SinkWriter):
    def __init__(self, limit: int | None, prefix: str) -> None:
        self._left = limit
        self._prefix = prefix
        self._hidden = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if self._left is not None:
            shown = min(self._left, batch.num_rows)
            self._hidden += batch.num_rows - shown
            self._left -= shown
            batch = batch.slice(0, shown)
        if batch.num_rows:
            text = to_json_lines(pa.Table.from_batches([batch])).decode()
            if self._prefix:
                text = "".join(f"{self._prefix}{line}\n" for line in text.splitlines())
            sys.stdout.write(text)
            sys.stdout.flush()

    def close(self) -> None:
        if self._hidden:
            print(f"{self._prefix}... {self._hidden} more rows not printed (limit reached)",
                  flush=True)


def stdout(limit: int | None = None) -> StdoutSink:
    """Print rows to standard output as JSON lines, at most ``limit`` rows per sink task.

    >>> stdout(limit=5)
    sinks.stdout(limit=5)
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a row count >= 0 or None, got {limit!r}")
    return StdoutSink(limit)


# ---------------------------------------------------------------- null


class NullSink(Sink):
    """Discards rows; in the driver, ``rows`` and ``batches`` count what the tasks discarded.

    The counts are exactly-once: they are reported with checkpoints and commit with them.
    """

    exactly_once = True

    def __init__(self) -> None:
        self.rows = 0
        self.batches = 0

    def open(self, ctx: SinkContext) -> SinkWriter:
        return _NullWriter(ctx)

    def on_driver_data(self, batch: pa.RecordBatch) -> None:
        counts = batch.to_pydict()
        self.rows += sum(counts["rows"])
        self.batches += sum(counts["batches"])

    def __repr__(self) -> str:
        return "sinks.null()"


class _NullWriter(SinkWriter):
    def __init__(self, ctx: SinkContext) -> None:
        self._ctx = ctx
        self._writer = uuid.uuid4().hex  # a task index can return after a rescale
        self.rows = 0
        self.batches = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        self.batches += 1

    def prepare(self, checkpoint_id: int) -> tuple[Any, int, int]:
        key = (self._ctx.step_id, self._ctx.task_index, self._writer, checkpoint_id)
        counts = (key, self.rows, self.batches)
        self.rows = self.batches = 0
        return counts

    def commit(self, checkpoint_id: int, transaction: tuple[Any, int, int]) -> None:
        key, rows, batches = transaction
        self._ctx.send_to_driver(pa.record_batch({"rows": [rows], "batches": [batches]}), key)


def null() -> NullSink:
    """Discard every row (for benchmarks); after the run, ``sink.rows`` is the row count.

    >>> null()
    sinks.null()
    """
    return NullSink()


# ---------------------------------------------------------------- collect


class CollectSink(Sink):
    """Collects every row in the driver process; read it with ``table()``, ``to_pylist()``...

    Only the driver's instance accumulates: the copies pickled to workers carry no rows.
    Rows from several sink tasks arrive in no particular order. Exactly-once: a task stages
    its rows until their checkpoint completes (the staged rows are part of the checkpoint),
    and the driver takes each committed transaction once.
    """

    exactly_once = True

    def __init__(self) -> None:
        self._batches: list[pa.RecordBatch] = []
        self._schema: pa.Schema | None = None
        self._lock = threading.Lock()

    def open(self, ctx: SinkContext) -> SinkWriter:
        return _CollectWriter(ctx)

    def on_driver_data(self, batch: pa.RecordBatch) -> None:
        with self._lock:
            if self._schema is None:
                self._schema = batch.schema
            if batch.num_rows:
                self._batches.append(batch)

    def table(self) -> pa.Table:
        """Everything collected so far (an empty table when no rows came)."""
        with self._lock:
            batches, schema = list(self._batches), self._schema
        if not batches:
            return pa.table({}) if schema is None else schema.empty_table()
        try:
            return pa.Table.from_batches(batches)
        except pa.ArrowInvalid:  # schemas differ slightly between tasks (nullability ...)
            tables = [pa.Table.from_batches([b]) for b in batches]
            return pa.concat_tables(tables, promote_options="permissive")

    def to_pylist(self) -> list[dict[str, Any]]:
        return self.table().to_pylist()

    def to_pandas(self) -> Any:
        return self.table().to_pandas()

    @property
    def rows(self) -> int:
        with self._lock:
            return sum(b.num_rows for b in self._batches)

    def __len__(self) -> int:
        return self.rows

    def clear(self) -> None:
        with self._lock:
            self._batches.clear()
            self._schema = None

    def __getstate__(self) -> dict[str, Any]:
        return {}  # the collected rows stay in the driver

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"sinks.collect(<{self.rows} rows>)"


class _CollectWriter(SinkWriter):
    def __init__(self, ctx: SinkContext) -> None:
        self._ctx = ctx
        self._writer = uuid.uuid4().hex  # a task index can return after a rescale
        self._staged: list[pa.RecordBatch] = []
        self._schema_sent = False

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self._staged.append(batch)
        elif not self._schema_sent:  # one empty batch tells the driver the schema
            self._ctx.send_to_driver(batch)
            self._schema_sent = True

    def prepare(self, checkpoint_id: int) -> tuple[Any, list[pa.RecordBatch]]:
        staged, self._staged = self._staged, []
        return (self._ctx.step_id, self._ctx.task_index, self._writer, checkpoint_id), staged

    def commit(self, checkpoint_id: int, transaction: tuple[Any, list[pa.RecordBatch]]) -> None:
        key, batches = transaction
        for i, batch in enumerate(batches):
            self._ctx.send_to_driver(batch, (*key, i))


def collect() -> CollectSink:
    """Collect the rows in the driver, for tests and notebooks (exactly-once with checkpoints).

    >>> sink = collect()
    >>> sink.table().num_rows
    0
    """
    return CollectSink()
