"""Stateless operators: map, filter, flat_map, map_batches, with_timestamp and sinks.

Per-record steps convert a batch to dicts once, call the user's function per row and
rebuild a batch; the hidden event-time column never reaches user code. A failing row
follows the step's error policy: fail the job, skip it (counted), or send it with the
reason to the step's ``errors`` output. A step with knobs calls ``fn(row, **knobs)`` (or
``fn(batch, **knobs)``) with the step's current knob values.
"""

from __future__ import annotations

import contextlib
import functools
import json
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from rheostat.plan.logical import ERRORS, EVENT_TIME, MapStep, SinkStep, TimestampStep
from rheostat.runtime.errors import UserFunctionError, describe_batch, describe_record
from rheostat.runtime.io import SinkContext, SinkWriter
from rheostat.runtime.messages import FINAL_CHECKPOINT
from rheostat.runtime.operator import Operator, OperatorContext, TransactionalOperator, register
from rheostat.runtime.timestamps import drop_event_time, with_event_time

ERROR_SCHEMA = pa.schema([("step", pa.string()), ("error", pa.string()), ("record", pa.string())])


@register("map")
class MapOperator(Operator):
    step: MapStep

    def open(self, ctx: OperatorContext) -> None:
        super().open(ctx)
        self._schema: pa.Schema | None = None
        self._dead: list[dict[str, str]] = []

    def on_batch(self, batch: pa.RecordBatch, input_index: int) -> None:
        if self.step.mode == "map_batches":
            out = self._map_batches(batch)
        else:
            out = self._per_record(batch)
        if out is not None:
            self.ctx.emit(out)
        if self._dead:
            self.ctx.emit(pa.RecordBatch.from_pylist(self._dead, schema=ERROR_SCHEMA), ERRORS)
            self._dead = []

    # --- per-record -----------------------------------------------------------------

    def _per_record(self, batch: pa.RecordBatch) -> pa.RecordBatch | None:
        fn, mode, knobs = self.step.fn, self.step.mode, self.step.knobs
        if knobs:
            fn = functools.partial(fn, **knobs)
        ts = batch.column(EVENT_TIME) if EVENT_TIME in batch.schema.names else None
        rows = drop_event_time(batch).to_pylist()
        if mode == "filter":
            mask = np.zeros(len(rows), dtype=bool)
            for i, row in enumerate(rows):
                ok = self._call(fn, row)
                mask[i] = bool(ok) and ok is not _FAILED
            return batch.filter(pa.array(mask))
        out: list[dict] = []
        index: list[int] = []
        for i, row in enumerate(rows):
            res = self._call(fn, row)
            if res is _FAILED:
                continue
            if mode == "map":
                if not isinstance(res, dict):
                    self._fail(row, TypeError(f"map must return a dict, got {type(res).__name__}"))
                    continue
                out.append(res)
                index.append(i)
            else:
                try:
                    produced = list(res)
                except TypeError as exc:
                    self._fail(row, TypeError(f"flat_map must return an iterable of dicts: {exc}"))
                    continue
                if not all(isinstance(p, dict) for p in produced):
                    self._fail(row, TypeError("flat_map must return an iterable of dicts"))
                    continue
                out.extend(produced)
                index.extend([i] * len(produced))
        if not out:
            return None
        result, index = self._to_batch(out, index, rows)
        if result is None:
            return None
        if ts is not None:
            result = result.append_column(EVENT_TIME, ts.take(pa.array(index, pa.int64())))
        return result

    def _call(self, fn: Callable[[Any], Any], row: dict) -> Any:
        try:
            return fn(row)
        except Exception as exc:
            self._fail(row, exc)
            return _FAILED

    def _fail(self, row: dict, exc: BaseException) -> None:
        policy = self.step.on_error
        if policy == "fail":
            raise UserFunctionError(
                self.step.step_id, describe_record(row), exc, traceback.format_exc()
            ) from exc
        self.ctx.counters["skipped" if policy == "skip" else "dead_lettered"] += 1
        if policy == "dead_letter":
            self._dead.append({
                "step": self.step.step_id,
                "error": f"{type(exc).__name__}: {exc}",
                "record": json.dumps(row, default=str),
            })

    def _to_batch(
        self, out: list[dict], index: list[int], inputs: list[dict]
    ) -> tuple[pa.RecordBatch | None, list[int]]:
        """The dicts returned as one batch, and the input row of each batch row.

        Columns are the union of the keys of every dict so far, in the order they first
        appeared; a dict without a key has a null there. A key that first appears in a
        later row or batch adds a column (earlier batches went out without it), as a
        Bytewax user expects of free-form dicts: nothing a function returns is dropped.
        A value that does not fit its column's type fails the step on the input record
        that produced it (or skips / dead-letters that record, per ``on_error``).
        """
        while out:
            try:
                return self._build(out), index
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                bad = self._first_bad(out)
                if self.step.on_error == "fail":
                    raise UserFunctionError(
                        self.step.step_id,
                        f"{describe_record(inputs[index[bad]])} (the function returned "
                        f"{describe_record(out[bad])})", exc,
                        "the value does not fit the type its column has in the rows "
                        "returned before it (convert it in the function, e.g. to float)\n",
                    ) from exc
                self._fail(inputs[index[bad]], exc)
                out, index = out[:bad] + out[bad + 1:], index[:bad] + index[bad + 1:]
        return None, index

    def _build(self, rows: list[dict], remember: bool = True) -> pa.RecordBatch:
        """``rows`` as a batch of the union of their keys, with the types of the batches
        before where they fit (else types inferred from these rows alone)."""
        first = rows[0].keys()
        names = (list(first) if all(r.keys() == first for r in rows)
                 else list(dict.fromkeys(k for r in rows for k in r)))
        result = None
        if self._schema is not None:
            known = set(self._schema.names)
            schema = pa.schema([*self._schema, *(
                pa.field(n, pa.array([r.get(n) for r in rows]).type)
                for n in names if n not in known)])
            with contextlib.suppress(pa.ArrowInvalid, pa.ArrowTypeError):
                result = pa.RecordBatch.from_pylist(rows, schema=schema)
        if result is None:
            result = pa.RecordBatch.from_pydict({n: [r.get(n) for r in rows] for n in names})
        if remember and all(not pa.types.is_null(f.type) for f in result.schema):
            self._schema = result.schema
        return result

    def _first_bad(self, rows: list[dict]) -> int:
        """The index of the first row that ``rows[:i + 1]`` cannot hold (a binary search
        for the shortest prefix that fails; on the error path only)."""
        lo, hi = 1, len(rows)  # rows[:hi] fails
        while lo < hi:
            mid = (lo + hi) // 2
            try:
                self._build(rows[:mid], remember=False)
                lo = mid + 1
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                hi = mid
        return hi - 1

    # --- vectorised -----------------------------------------------------------------

    def _map_batches(self, batch: pa.RecordBatch) -> pa.RecordBatch | None:
        try:
            return self._apply_batch(batch)
        except UserFunctionError:
            raise
        except Exception as exc:
            if self.step.on_error == "fail":
                raise UserFunctionError(
                    self.step.step_id, describe_batch(batch), exc, traceback.format_exc()
                ) from exc
        # Isolate the bad rows by bisection: only halves that fail are split again, so a
        # few bad rows cost a few dozen calls, not one per row (only on this error path).
        parts: list[pa.RecordBatch] = []
        self._isolate(batch, parts)
        if not parts:
            return None
        return pa.Table.from_batches(parts).combine_chunks().to_batches()[0]

    def _isolate(self, batch: pa.RecordBatch, parts: list[pa.RecordBatch]) -> None:
        try:
            res = self._apply_batch(batch)
        except Exception as exc:
            if batch.num_rows == 1:
                self._fail(drop_event_time(batch).to_pylist()[0], exc)
                return
            half = batch.num_rows // 2
            self._isolate(batch.slice(0, half), parts)
            self._isolate(batch.slice(half), parts)
            return
        if res is not None and res.num_rows:
            parts.append(res)

    def _apply_batch(self, batch: pa.RecordBatch) -> pa.RecordBatch | None:
        knobs = self.step.knobs
        res = self.step.fn(batch, **knobs) if knobs else self.step.fn(batch)
        if res is None:
            return None
        if isinstance(res, pa.Table):
            res = res.combine_chunks()
            res = (res.to_batches()[0] if res.num_rows else
                   pa.RecordBatch.from_pylist([], schema=res.schema))
        if not isinstance(res, pa.RecordBatch):
            raise TypeError(
                f"map_batches must return a pyarrow RecordBatch or Table, got {type(res).__name__}"
            )
        has_ts = EVENT_TIME in batch.schema.names
        if has_ts and EVENT_TIME not in res.schema.names:
            if res.num_rows != batch.num_rows:
                raise ValueError(
                    "the output dropped the hidden _ts event-time column and changed the "
                    "row count, so event time is lost: filter with batch.filter(...) to keep "
                    "_ts, or keep the _ts column in the output"
                )
            res = res.append_column(EVENT_TIME, batch.column(EVENT_TIME))
        return res


_FAILED = object()


@register("timestamp")
class TimestampOperator(Operator):
    step: TimestampStep

    def on_batch(self, batch: pa.RecordBatch, input_index: int) -> None:
        self.ctx.emit(with_event_time(batch, self.step.column, self.step.step_id))


@register("sink")
class SinkOperator(TransactionalOperator):
    """Writes to a sink; with checkpoints, in two phases.

    At a barrier the writer's open transaction is prepared and kept, with every earlier
    one not yet committed, in this operator's checkpoint state; when the checkpoint
    completes they are committed. Without checkpoints the end of the stream prepares and
    commits the last transaction at once.
    """

    step: SinkStep

    def open(self, ctx: OperatorContext) -> None:
        super().open(ctx)
        self.rows = 0
        self._staged: dict[int, Any] = {}
        sink = self.step.sink
        self.writer: SinkWriter | None = None if sink is None else sink.open(SinkContext(
            self.step.step_id, ctx.task_index, ctx.parallelism, ctx.send_to_driver,
        ))

    def on_batch(self, batch: pa.RecordBatch, input_index: int) -> None:
        self.rows += batch.num_rows
        if self.writer is not None:
            self.writer.write(drop_event_time(batch))

    def checkpoint(self, checkpoint_id: int) -> dict[int, Any] | None:
        if self.writer is None:
            return None
        self._staged[checkpoint_id] = self.writer.prepare(checkpoint_id)
        return dict(self._staged)

    def checkpoint_complete(self, checkpoint_id: int) -> None:
        if self.writer is None:
            return
        for cid in sorted(c for c in self._staged if c <= checkpoint_id):
            self.writer.commit(cid, self._staged.pop(cid))
        if checkpoint_id == FINAL_CHECKPOINT:
            self.writer.close()
            self.writer = None

    def hand_over(self, reconfig_id: int) -> tuple[int, Any] | None:
        """The task moves to another worker: what this writer wrote since the last
        checkpoint, prepared as a transaction for the task's new instance, which commits
        it with its next checkpoint (without checkpoints it is committed here, now).
        This instance writes no more, and never closes its writer: closing would clean
        up staged files the new instance's writer shares a task index with."""
        writer, self.writer = self.writer, None
        if writer is None:
            return None
        transaction = writer.prepare(-reconfig_id)  # an id no checkpoint has
        if not self.ctx.checkpointing:
            writer.commit(-reconfig_id, transaction)
            return None
        return -reconfig_id, transaction

    def take_over(self, state: tuple[int, Any] | None) -> None:
        """Adopt the transaction the task's old instance handed over (``hand_over``)."""
        if state is not None:
            self._staged[state[0]] = state[1]

    def restore(self, parts: list[Any]) -> None:
        """Every transaction in a restored checkpoint is committed (again, idempotently)."""
        transactions = sorted((cid, t) for part in parts if part for cid, t in part.items())
        if self.writer is not None:
            self.writer.recover(transactions)

    def on_end(self) -> None:
        if self.writer is not None and not self.ctx.checkpointing:
            self.writer.commit(FINAL_CHECKPOINT, self.writer.prepare(FINAL_CHECKPOINT))
            self.writer.close()
            self.writer = None
