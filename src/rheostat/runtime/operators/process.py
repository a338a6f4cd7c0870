"""The keyed-process operator: user logic per key, with per-key state and timers.

The user protocol is :class:`rheostat.api.process.KeyedProcess` (duck-typed here: any
object with ``process(key, rows, ctx)`` and optionally ``on_timer(key, ts, ctx)`` and
``schema``; a class is instantiated once per operator).

Per batch, the rows are grouped by key in one vectorised pass (an Arrow hash group-by
that returns each key's row indices in arrival order, then one ``take``), converted to
dicts once, and ``process`` runs once per key on its slice. On a watermark, due timers
fire in timestamp order (timers a callback registers at or before the watermark fire
in the same pass), and their output is emitted before the watermark is forwarded.
All output of one call becomes one batch; ``_ts`` is the largest event time of the
key's rows (``process``) or the timer's time (``on_timer``); missing key columns are
filled in from the key. At the end of the input every remaining timer fires (the final
watermark is the largest one), as in Flink. A stream without event time works too: no
``_ts`` comes out, ``ctx.timestamp`` is ``None`` and timers fire only at the end.

State lives in ``{key_group: {key: value}}`` and timers in a
:class:`~rheostat.runtime.timers.TimerQueue`, so key groups can be snapshotted, moved
and dropped one by one: ``snapshot_state(groups)`` returns ``{key_group: bytes}``
(pickled, so later mutation of live state cannot leak into a snapshot),
``restore_state(parts)`` adds them, ``drop_state(groups)`` forgets them.

Knobs: ``ctx.knobs`` is a read-only mapping of the step's declared knobs and their
current values (``process(..., knobs={...})``; empty without knobs).

State check: before a new version of the function takes over, :meth:`check_state`
calls the new version's ``check_state(key, state)`` (if it has one) on every key's
state; an exception there refuses the update (a version that cannot read the state it
would inherit).

>>> import pyarrow as pa
>>> from rheostat.plan.logical import KeyedProcessStep
>>> from rheostat.runtime.operator import OperatorContext
>>> class Count:
...     def process(self, key, rows, ctx):
...         ctx.state.set(ctx.state.get(0) + len(rows))
...         return [{"n": ctx.state.get()}]
>>> out = []
>>> op = KeyedProcessOperator(KeyedProcessStep("p", (), keys=("k",), fn=Count()))
>>> op.open(OperatorContext.for_test(op.step, out.append))
>>> op.on_batch(pa.record_batch({"k": ["a", "b", "a"], "_ts": [1, 2, 3]}), 0)
>>> out[0].to_pylist()
[{'k': 'a', 'n': 2, '_ts': 3}, {'k': 'b', 'n': 1, '_ts': 2}]
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import cloudpickle
import numpy as np
import pyarrow as pa

from rheostat.plan.logical import EVENT_TIME, KeyedProcessStep
from rheostat.runtime.keys import key_groups
from rheostat.runtime.messages import MAX_WATERMARK, MIN_WATERMARK
from rheostat.runtime.operator import (
    KeyedStateOperator,
    Operator,
    OperatorContext,
    register,
)
from rheostat.runtime.timers import TimerQueue

_ROW = "__rheostat_row"


class _KeyState:
    """``ctx.state``: the value of the key the context is bound to."""

    __slots__ = ("_ctx",)

    def __init__(self, ctx: _Context) -> None:
        self._ctx = ctx

    def get(self, default: Any = None) -> Any:
        values = self._ctx._op._state.get(self._ctx._group)
        return default if values is None else values.get(self._ctx.key, default)

    def set(self, value: Any) -> None:
        self._ctx._op._state.setdefault(self._ctx._group, {})[self._ctx.key] = value

    def clear(self) -> None:
        state = self._ctx._op._state
        values = state.get(self._ctx._group)
        if values is not None:
            values.pop(self._ctx.key, None)
            if not values:
                del state[self._ctx._group]


class _Context:
    """The ``ctx`` a user's ``process`` and ``on_timer`` receive (one per operator)."""

    def __init__(self, op: KeyedProcessOperator) -> None:
        self._op = op
        self._group = 0
        self.key: Any = None
        self.timestamp: int | None = None
        self.timestamps: list[int] | None = None
        self.state = _KeyState(self)

    def _bind(
        self, group: int, key: Any, timestamp: int | None, timestamps: list[int] | None
    ) -> None:
        self._group, self.key, self.timestamp, self.timestamps = group, key, timestamp, timestamps

    @property
    def watermark(self) -> int:
        return self._op._watermark

    @property
    def knobs(self) -> Mapping[str, Any]:
        """The step's knobs and their current values (read-only)."""
        return MappingProxyType(self._op.step.knobs)

    def register_timer(self, timestamp: int) -> None:
        self._op._timers.register(self._group, self.key, int(timestamp))

    def delete_timer(self, timestamp: int) -> None:
        self._op._timers.delete(self._group, self.key, int(timestamp))

    def timers(self) -> list[int]:
        return self._op._timers.of(self._group, self.key)


class _Output:
    """Output rows of one call, with the key and event time of each."""

    def __init__(self, step_id: str) -> None:
        self.step_id = step_id
        self.rows: list[dict[str, Any]] = []
        self.keys: list[Any] = []
        self.times: list[int | None] = []

    def extend(self, result: Iterable[dict[str, Any]] | None, key: Any, ts: int | None) -> None:
        if result is None:
            return
        n = len(self.rows)
        for row in result:
            if not isinstance(row, dict):
                raise TypeError(
                    f"step {self.step_id!r}: keyed process must return dicts (rows), "
                    f"got {type(row).__name__}: {row!r}"
                )
            self.rows.append(row)
        added = len(self.rows) - n
        self.keys.extend([key] * added)
        self.times.extend([ts] * added)


@register("keyed_process")
class KeyedProcessOperator(KeyedStateOperator):
    """Runs a ``KeyedProcess`` once per key per batch, and its timers on watermarks."""

    step: KeyedProcessStep

    def __init__(self, step: KeyedProcessStep) -> None:
        super().__init__(step)
        fn = step.fn() if isinstance(step.fn, type) else step.fn
        if not callable(getattr(fn, "process", None)):
            raise TypeError(
                f"step {step.step_id!r}: keyed process needs a KeyedProcess with "
                f"process(key, rows, ctx), got {step.fn!r}"
            )
        if not step.keys:
            raise ValueError(f"step {step.step_id!r}: keyed process needs key columns")
        self.fn = fn
        self._state: dict[int, dict[Any, Any]] = {}
        self._timers = TimerQueue()
        self._watermark = MIN_WATERMARK
        self._key_types: dict[str, pa.DataType] = {}
        self._pctx = _Context(self)

    def open(self, ctx: OperatorContext) -> None:
        super().open(ctx)
        self._watermark = max(self._watermark, ctx.watermark)

    def on_batch(self, batch: pa.RecordBatch, input_index: int) -> None:
        n = batch.num_rows
        if not n:
            return
        keys = self.step.keys
        if not self._key_types:
            self._key_types = {k: batch.schema.field(k).type for k in keys}
        table = pa.Table.from_batches([batch])
        grouped = (
            table.select(keys)
            .append_column(_ROW, pa.array(np.arange(n)))
            .group_by(list(keys), use_threads=False)
            .aggregate([(_ROW, "list")])
        )
        lists = grouped.column(f"{_ROW}_list").combine_chunks()
        offsets = lists.offsets.to_numpy()
        ordered = table.take(lists.flatten())
        timed = EVENT_TIME in table.schema.names
        if timed:
            times = ordered.column(EVENT_TIME).to_numpy()
            latest = np.maximum.reduceat(times, offsets[:-1]).tolist()
            times_list = times.tolist()
            ordered = ordered.drop_columns([EVENT_TIME])
        rows = ordered.to_pylist()
        groups = key_groups(grouped, keys, self.ctx.max_parallelism).tolist()
        out = _Output(self.step.step_id)
        ctx, process = self._pctx, self.fn.process
        for g, key in enumerate(self._key_values(grouped)):
            a, b = offsets[g], offsets[g + 1]
            ts, stamps = (latest[g], times_list[a:b]) if timed else (None, None)
            ctx._bind(groups[g], key, ts, stamps)
            out.extend(process(key, rows[a:b], ctx), key, ts)
        self._emit(out)

    def on_watermark(self, watermark: int) -> None:
        self._watermark = max(self._watermark, watermark)
        on_timer = getattr(self.fn, "on_timer", None)
        out = _Output(self.step.step_id)
        ctx = self._pctx
        while (due := self._timers.pop(watermark)) is not None:
            group, key, ts = due
            if on_timer is not None:
                ctx._bind(group, key, ts, [ts])
                out.extend(on_timer(key, ts, ctx), key, ts)
        self._emit(out)

    def on_end(self) -> None:
        self.on_watermark(MAX_WATERMARK)

    def _key_values(self, grouped: pa.Table) -> list[Any]:
        columns = [grouped.column(k).to_pylist() for k in self.step.keys]
        return columns[0] if len(columns) == 1 else list(zip(*columns))

    def _emit(self, out: _Output) -> None:
        if not out.rows:
            return
        keys = self.step.keys
        schema = getattr(self.fn, "schema", None)
        names = dict.fromkeys(keys)
        if schema is not None:
            names.update(dict.fromkeys(schema.names))
        else:
            for row in out.rows:
                names.update(dict.fromkeys(row))
        names.pop(EVENT_TIME, None)
        arrays = []
        for name in names:
            if name in keys:
                i = keys.index(name)
                own = out.keys if len(keys) == 1 else [k[i] for k in out.keys]
                values = [row.get(name, k) for row, k in zip(out.rows, own)]
            else:
                values = [row.get(name) for row in out.rows]
            if schema is not None and name in schema.names:
                typ = schema.field(name).type
            else:
                typ = self._key_types.get(name)
            arrays.append(pa.array(values, type=typ))
        names_out = list(names)
        if out.times[0] is not None:  # else the input has no event time
            arrays.append(pa.array(out.times, pa.int64()))
            names_out.append(EVENT_TIME)
        self.ctx.emit(pa.RecordBatch.from_arrays(arrays, names=names_out))

    # --- state per key group -------------------------------------------------------

    def snapshot_state(self, key_groups: Iterable[int] | None = None) -> dict[int, bytes]:
        """State, timers and watermark of ``key_groups`` (all when ``None``), pickled per
        key group as ``{key_group: bytes}``."""
        present = set(self._state) | set(self._timers.groups())
        wanted = present if key_groups is None else present.intersection(key_groups)
        return {
            g: _dumps({
                "state": self._state.get(g, {}),
                "timers": self._timers.snapshot(g),
                "watermark": self._watermark,
            })
            for g in sorted(wanted)
        }

    def restore_state(self, parts: Mapping[int, bytes]) -> None:
        """Add key groups taken by :meth:`snapshot_state`."""
        for group, blob in parts.items():
            part = pickle.loads(blob)
            if part["state"]:
                self._state[group] = part["state"]
            self._timers.restore(group, part["timers"])
            self._watermark = max(self._watermark, part["watermark"])

    def check_state(self, fn: Any = None) -> None:
        """Call ``check_state(key, state)`` of ``fn`` (a new version of the step's function;
        default: the current one) on every key's state; its exception propagates."""
        target = self.fn if fn is None else fn() if isinstance(fn, type) else fn
        check = getattr(target, "check_state", None)
        if not callable(check):
            return
        for values in self._state.values():
            for key, value in values.items():
                check(key, value)

    def check_update(self, new: Operator) -> None:
        """The new version's ``check_state`` reads the live state; nothing is copied."""
        assert isinstance(new, KeyedProcessOperator)
        self.check_state(new.fn)

    def adopt(self, old: Operator) -> None:
        """Take over the state of ``old`` (this step's operator before a function update)
        as it is: the same objects, no copy."""
        assert isinstance(old, type(self))
        self._state, self._timers = old._state, old._timers
        self._watermark = max(self._watermark, old._watermark)
        self._key_types = dict(old._key_types)

    def drop_state(self, key_groups: Iterable[int]) -> None:
        """Forget ``key_groups`` (after they moved to another task)."""
        groups = list(key_groups)
        for g in groups:
            self._state.pop(g, None)
        self._timers.drop(groups)


def _dumps(value: Any) -> bytes:
    """Pickle state with the C pickler (several times faster on dicts of plain values);
    cloudpickle only for what it alone can take (lambdas, local classes)."""
    try:
        return pickle.dumps(value, protocol=5)
    except (pickle.PicklingError, TypeError, AttributeError):
        return cloudpickle.dumps(value)
