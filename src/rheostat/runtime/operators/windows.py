"""The keyed window aggregate: tumbling, sliding and session windows on event time.

Semantics are Flink's (see :mod:`rheostat.runtime.window_state`): a window
``[start, end)`` fires when the watermark reaches ``end - 1``; its state is kept for
``allowed_lateness_ms`` more, and rows arriving meanwhile re-emit the updated full result
of their key's window at the next watermark. Rows whose every window has expired go,
unchanged, to the ``late`` port and are counted in ``ctx.counters["late"]``; rows that fall
in the gaps of a sliding window whose slide exceeds its size are counted in
``ctx.counters["outside_windows"]``. Session windows merge per key when the next row starts
at or before the running session end (``ts <= last_ts + gap``, Flink's rule); late and merge
decisions are taken per batch, not per row, so within one batch a row that is late on its
own is kept when it merges with a live session.

Output columns: the keys, ``window_start`` and ``window_end`` (``timestamp[ms]``), one
column per aggregation, and ``_ts = window_end - 1`` (int64) for downstream windows.
The hot path is vectorised: one ``group_by`` per batch into per-pane (or per-session)
partials, one more per watermark to merge the windows that fire. ``reduce`` calls the
user's reducer per value.

>>> import pyarrow as pa
>>> from rheostat.plan.logical import Agg, Tumbling, WindowAggregateStep
>>> from rheostat.runtime.operator import OperatorContext
>>> step = WindowAggregateStep("w", (), keys=("k",), window=Tumbling(10),
...                            aggs=(("n", Agg("count")),))
>>> out = []
>>> op = WindowAggregate(step)
>>> op.open(OperatorContext.for_test(step, out.append))
>>> op.on_batch(pa.record_batch({"k": [1, 1, 2], "_ts": [1, 4, 12]}), 0)
>>> op.on_watermark(9)
>>> out[0].select(["k", "n", "_ts"]).to_pylist()
[{'k': 1, 'n': 2, '_ts': 9}]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rheostat.plan.logical import EVENT_TIME, LATE, Session, Sliding, Tumbling, WindowAggregateStep
from rheostat.runtime.aggregates import AggPlan
from rheostat.runtime.messages import MAX_WATERMARK, MIN_WATERMARK
from rheostat.runtime.operator import (
    KeyedStateOperator,
    OperatorContext,
    register,
)
from rheostat.runtime.window_state import PaneStore, SessionStore

_RESERVED = {"_kg", "_pane", "_ws", "_we", "_new", "_old", "_sid", "_msid", EVENT_TIME}
_OUTPUT = ("window_start", "window_end", EVENT_TIME)
_WATERMARK_KEY = b"rheostat.watermark"


def _watermark_of(table: pa.Table) -> int | None:
    meta = table.schema.metadata or {}
    return int(meta[_WATERMARK_KEY]) if _WATERMARK_KEY in meta else None


@register("window_aggregate")
class WindowAggregate(KeyedStateOperator):
    """Runs a :class:`~rheostat.plan.logical.WindowAggregateStep` (see the module docstring)."""

    step: WindowAggregateStep

    def __init__(self, step: WindowAggregateStep) -> None:
        super().__init__(step)
        where = f"step {step.step_id!r}"
        keys, lateness = tuple(step.keys), step.allowed_lateness_ms
        for k in keys:
            if k in _RESERVED or k in _OUTPUT:
                raise ValueError(f"{where}: key column {k!r} clashes with a window column; "
                                 "rename it before the window")
        for name, _ in step.aggs:
            if name in keys or name in _OUTPUT or name in _RESERVED:
                raise ValueError(f"{where}: aggregation name {name!r} clashes with a key or "
                                 "window column; choose another name")
        if lateness < 0:
            raise ValueError(f"{where}: allowed_lateness_ms must be >= 0, got {lateness}")
        try:
            self.plan = AggPlan(step.aggs)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        self.store = self._new_store()
        self.keys = keys
        self.watermark = MIN_WATERMARK
        self._checked: pa.Schema | None = None
        self._types: dict[str, pa.DataType] = {}  # of the keys and aggregated columns so far
        self._casts: dict[str, pa.DataType] = {}  # for batches of the schema last checked

    def _new_store(self) -> PaneStore | SessionStore:
        step, where = self.step, f"step {self.step.step_id!r}"
        window, lateness = step.window, step.allowed_lateness_ms
        if isinstance(window, Tumbling | Sliding):
            size = window.size_ms
            slide = window.slide_ms if isinstance(window, Sliding) else size
            if size <= 0 or slide <= 0:
                raise ValueError(f"{where}: window size and slide must be > 0, got {window}")
            return PaneStore(tuple(step.keys), self.plan, size, slide, window.offset_ms,
                             lateness)
        if isinstance(window, Session):
            if window.gap_ms <= 0:
                raise ValueError(f"{where}: session gap must be > 0, got {window.gap_ms}")
            return SessionStore(tuple(step.keys), self.plan, window.gap_ms, lateness)
        raise ValueError(f"{where}: needs a Tumbling, Sliding or Session window, "
                         f"got {window!r}")

    def open(self, ctx: OperatorContext) -> None:
        super().open(ctx)
        self.watermark = max(self.watermark, ctx.watermark)

    def _check(self, schema: pa.Schema) -> None:
        if schema == self._checked:
            return
        missing = [c for c in (*self.keys, *self.plan.input_columns, EVENT_TIME)
                   if c not in schema.names]
        if missing:
            raise ValueError(f"step {self.step.step_id!r}: batch lacks column(s) {missing}; "
                             f"it has {schema.names}")
        t = schema.field(EVENT_TIME).type
        if not (pa.types.is_integer(t) or pa.types.is_timestamp(t)):
            raise ValueError(f"step {self.step.step_id!r}: {EVENT_TIME} must be int64 ms, got {t}")
        self._casts = self._type_changes(schema)
        self._checked = schema

    def _type_changes(self, schema: pa.Schema) -> dict[str, pa.DataType]:
        """The columns of batches of ``schema`` to cast, checked against the batches before.

        A key keeps its type (1 and 1.0 would hash to different key groups). An aggregated
        column that is an integer in some batches and a float in others (files written
        apart) aggregates as float64 from then on, as users of numeric columns expect (and
        Spark's union does); integers of other widths as int64. Any other change fails at
        the first batch that has it, with the column's name.
        """
        casts: dict[str, pa.DataType] = {}
        for name in dict.fromkeys((*self.keys, *self.plan.input_columns)):
            now, before = schema.field(name).type, self._types.get(name)
            if before is None or now == before or pa.types.is_null(now):
                self._types.setdefault(name, now)
                continue
            numeric = all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in (now, before))
            if pa.types.is_null(before) or (numeric and name not in self.keys):
                wider = (now if pa.types.is_null(before) else
                         pa.int64() if all(pa.types.is_integer(t) for t in (now, before))
                         else pa.float64())
                self._types[name] = wider
                if now != wider:
                    casts[name] = wider
                continue
            what = "key column" if name in self.keys else "column"
            raise TypeError(
                f"step {self.step.step_id!r}: {what} {name!r} is {now} in this batch but was "
                f"{before} in the batches before (files with different types?); give it one "
                "type: cast it in a map before the window, or pass schema= to the source"
                + ("" if name in self.keys else " (integers and floats mix: as float64)")
            )
        return casts

    def on_batch(self, batch: pa.RecordBatch, input_index: int) -> None:
        if batch.num_rows == 0:
            return
        self._check(batch.schema)
        col = batch.column(EVENT_TIME)
        if col.null_count:
            raise ValueError(f"step {self.step.step_id!r}: {col.null_count} rows have a null "
                             f"{EVENT_TIME}; assign event times before the window")
        table = pa.Table.from_batches([batch])
        for name, wanted in self._casts.items():
            i = table.schema.get_field_index(name)
            table = table.set_column(i, name, table.column(i).cast(wanted))
        if col.type != pa.int64():
            col = col.cast(pa.int64())
            table = table.set_column(table.schema.get_field_index(EVENT_TIME), EVENT_TIME, col)
        late, outside = self.store.add(table, col.to_numpy(), self.watermark,
                                       self.ctx.max_parallelism)
        if late.any():
            self.ctx.emit(batch.filter(pa.array(late)), LATE)
            self.ctx.counters["late"] += int(late.sum())
        if outside.any():
            self.ctx.counters["outside_windows"] += int(outside.sum())

    def on_watermark(self, watermark: int) -> None:
        new = max(watermark, self.watermark)
        fired = self.store.fire(self.watermark, new)
        self.watermark = new
        if fired is not None and fired.num_rows:
            self.ctx.emit(self._output(fired))

    def on_end(self) -> None:
        if self.watermark < MAX_WATERMARK:
            self.on_watermark(MAX_WATERMARK)

    def _output(self, merged: pa.Table) -> pa.RecordBatch:
        """Final rows, in window-end order: keys, window_start/end, aggregations, ``_ts``."""
        we = merged.column("_we").to_numpy()
        if len(we) > 1 and not (we[1:] >= we[:-1]).all():
            order = np.argsort(we, kind="stable")
            merged, we = merged.take(pa.array(order)), we[order]
        ms = pa.timestamp("ms")
        columns = {k: merged.column(k) for k in self.keys}
        columns["window_start"] = merged.column("_ws").cast(ms)
        columns["window_end"] = merged.column("_we").cast(ms)
        columns.update(self.plan.finalize(merged))
        columns[EVENT_TIME] = pa.array(we - 1)
        return pa.table(columns).combine_chunks().to_batches()[0]

    # --- state ----------------------------------------------------------------------

    def snapshot_state(self, key_groups: Iterable[int] | None = None) -> pa.Table:
        """The operator's state as one Arrow table, optionally only some key groups.

        Rows are partial aggregates with their key group in ``_kg``; the watermark rides in
        the schema metadata. Feed it to :meth:`restore_state` of a fresh operator.

        >>> import pyarrow as pa
        >>> from rheostat.plan.logical import Agg, Tumbling, WindowAggregateStep
        >>> from rheostat.runtime.operator import OperatorContext
        >>> step = WindowAggregateStep("w", (), keys=("k",), window=Tumbling(10),
        ...                            aggs=(("n", Agg("count")),))
        >>> op = WindowAggregate(step)
        >>> op.open(OperatorContext.for_test(step, print))
        >>> op.on_batch(pa.record_batch({"k": [1, 2], "_ts": [1, 4]}), 0)
        >>> op.snapshot_state().select(["k", "_kg", "_pane", "_a0_n"]).num_rows
        2
        """
        table = self.store.snapshot()
        if table is None:
            table = pa.table({"_kg": pa.array([], pa.int64())})
        elif key_groups is not None:
            wanted = pa.array(sorted(set(key_groups)), pa.int64())
            table = table.filter(pc.is_in(table.column("_kg"), value_set=wanted))
        return table.replace_schema_metadata({_WATERMARK_KEY: str(self.watermark).encode()})

    def drop_state(self, key_groups: Iterable[int]) -> None:
        """Forget ``key_groups`` (after they moved to another task)."""
        self.store.drop(pa.array(sorted(set(key_groups)), pa.int64()))

    def restore(self, parts: list[Any]) -> None:
        """State from a checkpoint (several parts when tasks were merged): the watermark
        is the lowest of theirs, so no window one of them had not fired is skipped."""
        marks = [_watermark_of(p) for p in parts]
        known = [m for m in marks if m is not None]
        if known:
            self.watermark = max(self.watermark, min(known))
        for part in parts:
            self._add(part)

    def take_over(self, table: pa.Table) -> None:
        """State of key groups handed over live, at the old owner's watermark.

        The two watermarks meet at the higher one: every row either side's windows need
        up to it has arrived (rows after the reconfiguration's markers are later), so this
        task's own windows fire up to the old owner's watermark, or the state's windows
        up to this task's, before the state joins the store.
        """
        mark = _watermark_of(table)
        if mark is not None and mark > self.watermark:
            self.on_watermark(mark)
        elif mark is not None and mark < self.watermark and table.num_rows:
            behind = self._new_store()
            behind.restore(table.replace_schema_metadata(None))
            fired = behind.fire(mark, self.watermark)
            if fired is not None and fired.num_rows:
                self.ctx.emit(self._output(fired))
            table = behind.snapshot()
            if table is None:
                return
        self._add(table)

    def restore_state(self, table: pa.Table) -> None:
        """Add state taken by :meth:`snapshot_state` (all of it, or moved key groups)."""
        mark = _watermark_of(table)
        if mark is not None:
            self.watermark = max(self.watermark, mark)
        self._add(table)

    def _add(self, table: pa.Table) -> None:
        if table.num_rows:
            self.store.restore(table.replace_schema_metadata(None))
