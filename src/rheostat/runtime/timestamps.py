"""Event time: reading a user's timestamp column into the hidden ``_ts`` column.

>>> import pyarrow as pa
>>> b = with_event_time(pa.record_batch({"t": [5, 7]}), "t", "src")
>>> b.column("_ts").to_pylist()
[5, 7]
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from rheostat.plan.logical import EVENT_TIME


def event_time_ms(column: pa.Array | pa.ChunkedArray, name: str, step_id: str) -> pa.Array:
    """``column`` as int64 milliseconds since the epoch."""
    t = column.type
    if pa.types.is_timestamp(t):
        if t.unit != "ms":
            column = pc.cast(column, pa.timestamp("ms", t.tz), safe=False)
        out = column.cast(pa.int64())
    elif pa.types.is_date(t):
        out = pc.cast(column, pa.timestamp("ms")).cast(pa.int64())
    elif pa.types.is_integer(t):
        out = column.cast(pa.int64())
    else:
        raise TypeError(
            f"step {step_id!r}: timestamp column {name!r} has type {t}; it must be a "
            "timestamp, a date or integer milliseconds (parse it first with map_batches)"
        )
    if out.null_count:
        raise ValueError(
            f"step {step_id!r}: timestamp column {name!r} has {out.null_count} null values; "
            "every row needs an event time (filter or fill them first)"
        )
    return out


def with_event_time(batch: pa.RecordBatch, column: str, step_id: str) -> pa.RecordBatch:
    """``batch`` with ``_ts`` set from ``column``."""
    if column not in batch.schema.names:
        raise KeyError(
            f"step {step_id!r}: timestamp column {column!r} is missing from a batch with "
            f"columns {batch.schema.names}"
        )
    ts = event_time_ms(batch.column(column), column, step_id)
    return set_column(batch, EVENT_TIME, ts)


def set_column(batch: pa.RecordBatch, name: str, values: pa.Array) -> pa.RecordBatch:
    idx = batch.schema.get_field_index(name)
    if idx >= 0:
        return batch.set_column(idx, name, values)
    return batch.append_column(name, values)


def drop_event_time(batch: pa.RecordBatch) -> pa.RecordBatch:
    idx = batch.schema.get_field_index(EVENT_TIME)
    return batch.remove_column(idx) if idx >= 0 else batch


def max_event_time(batch: pa.RecordBatch) -> int | None:
    if batch.num_rows == 0 or EVENT_TIME not in batch.schema.names:
        return None
    return pc.max(batch.column(EVENT_TIME)).as_py()
