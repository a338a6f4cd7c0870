"""Two-input keyed joins with Flink's semantics: the window join and the interval join.

Input 0 is the left stream, input 1 the right; both arrive routed by their keys, so this
task owns every key it sees. Only ``how="inner"`` exists. Rows with a null key join
nothing (as in SQL).

**Window join** (tumbling or sliding windows): left and right rows with equal keys in
the same window pair up when the window fires, at the first watermark >= ``end - 1``.
Each row is buffered once per window it belongs to (a hidden window-start column), both
sides columnar; on a watermark the rows of every window now due are popped from both
sides and paired with one hash join on (keys, window start).

**Interval join**: left row ``l`` and right row ``r`` with equal keys join when
``l._ts + lower_ms <= r._ts <= l._ts + upper_ms`` (bounds may be negative). A pair is
emitted as soon as its second row arrives: each incoming batch is hash-joined against
the other side's buffer, then filtered on the bounds. Left rows are kept while
``watermark <= l._ts + upper_ms``, right rows while ``watermark <= r._ts - lower_ms``;
after that no on-time row can join them.

Output columns: the left's, then the right's, where a right key column named like its
left counterpart is dropped and any other clash gets ``suffixes`` (left, right); then,
for a window join, ``window_start`` and ``window_end`` (``timestamp[ms]``). ``_ts`` is
``window_end - 1`` for a window join and ``max(l._ts, r._ts)`` for an interval join.

**Late rows.** A row that arrives when it can no longer join anything is dropped and
counted in ``ctx.counters["late_dropped"]``: for a window join, a row whose every window
has fired (a sliding-window row still joins those of its windows that have not); for an
interval join, a row whose bounds reach neither a row the other buffer still keeps nor
the on-time rows to come. Flink drops every interval-join row behind the watermark; here
such a row still joins what the other side keeps (but is kept itself only as above).

**State** is the two buffers. ``snapshot_state(groups)`` returns
``{key_group: {"left": rows, "right": rows, "watermark": wm}}`` (immutable Arrow tables,
and the watermark so that a restored operator judges lateness as before);
``restore_state`` adds such parts to an operator, ``drop_state`` forgets key groups.

>>> import pyarrow as pa
>>> from rheostat.plan.logical import JoinStep, Tumbling
>>> from rheostat.runtime.operator import OperatorContext
>>> out = []
>>> op = Join(JoinStep("j", (), left_keys=("k",), right_keys=("k",), window=Tumbling(10)))
>>> op.open(OperatorContext.for_test(op.step, out.append))
>>> op.on_batch(pa.record_batch({"k": [1], "a": ["x"], "_ts": [3]}), 0)
>>> op.on_batch(pa.record_batch({"k": [1], "b": ["y"], "_ts": [7]}), 1)
>>> op.on_watermark(9)
>>> out[0].select(["k", "a", "b", "_ts"]).to_pylist()
[{'k': 1, 'a': 'x', 'b': 'y', '_ts': 9}]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from rheostat.plan.logical import EVENT_TIME, JoinStep, Sliding, Tumbling
from rheostat.runtime.messages import MAX_WATERMARK, MIN_WATERMARK
from rheostat.runtime.operator import (
    KeyedStateOperator,
    OperatorContext,
    register,
)
from rheostat.runtime.rowbuffer import DUE, RowBuffer, split_parts
from rheostat.runtime.window_assign import sliding_windows

_WINDOW_START = "__rheostat_window_start"
_HIDDEN = frozenset({EVENT_TIME, DUE, _WINDOW_START})

JoinState = dict[int, dict[str, Any]]


def match_keys(
    left: pa.Table, left_on: Sequence[str], right: pa.Table, right_on: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Row index pairs ``(i, j)`` of ``left`` and ``right`` with equal ``left_on`` and
    ``right_on`` columns (nulls equal nothing), by one hash join built on the smaller side.

    >>> i, j = match_keys(pa.table({"a": [1, 2]}), ["a"], pa.table({"b": [2, 2, 3]}), ["b"])
    >>> sorted(zip(i.tolist(), j.tolist()))
    [(1, 0), (1, 1)]
    """
    if left.num_rows < right.num_rows:
        j, i = match_keys(right, right_on, left, left_on)
        return i, j
    names = [f"k{n}" for n in range(len(left_on))]
    lcols = [left.column(k) for k in left_on]
    rcols = [right.column(k) for k in right_on]
    rcols = [r if r.type == c.type else r.cast(c.type) for c, r in zip(lcols, rcols)]
    lt = pa.table([*lcols, np.arange(left.num_rows)], names=[*names, "__i"])
    rt = pa.table([*rcols, np.arange(right.num_rows)], names=[*names, "__j"])
    pairs = lt.join(rt, names, join_type="inner", use_threads=False)
    return pairs.column("__i").to_numpy(), pairs.column("__j").to_numpy()


@register("join")
class Join(KeyedStateOperator):
    """Constructing ``Join(step)`` gives a :class:`WindowJoin` or an :class:`IntervalJoin`."""

    step: JoinStep

    def __new__(cls, step: JoinStep | None = None) -> Join:
        if cls is Join and step is not None:
            cls = WindowJoin if step.window is not None else IntervalJoin
        return super().__new__(cls)

    def __init__(self, step: JoinStep) -> None:
        super().__init__(step)
        if step.how != "inner":
            raise ValueError(f"step {step.step_id!r}: only inner joins exist, not {step.how!r}")
        if len(step.left_keys) != len(step.right_keys) or not step.left_keys:
            raise ValueError(
                f"step {step.step_id!r}: join keys {step.left_keys} and {step.right_keys} "
                "must be non-empty and of equal length"
            )
        self._left = RowBuffer()
        self._right = RowBuffer()
        self._watermark = MIN_WATERMARK

    def open(self, ctx: OperatorContext) -> None:
        super().open(ctx)
        self._watermark = max(self._watermark, ctx.watermark)

    def on_end(self) -> None:
        self.on_watermark(MAX_WATERMARK)

    @property
    def buffered_rows(self) -> tuple[int, int]:
        """How many rows the left and right buffers hold (a window join counts a row once
        per window it is in)."""
        return len(self._left), len(self._right)

    def _emit_pairs(
        self,
        left: pa.Table,
        li: np.ndarray,
        right: pa.Table,
        ri: np.ndarray,
        extra: dict[str, pa.Array],
    ) -> None:
        """Emit left row ``li[n]`` beside right row ``ri[n]``, then the ``extra`` columns."""
        if not len(li):
            return
        step = self.step
        same_keys = {r for lk, r in zip(step.left_keys, step.right_keys) if lk == r}
        lnames = [c for c in left.schema.names if c not in _HIDDEN]
        rnames = [c for c in right.schema.names if c not in _HIDDEN and c not in same_keys]
        clash = (set(lnames) & set(rnames)) | set(extra)
        lsuf, rsuf = step.suffixes
        names = [
            *(c + lsuf if c in clash else c for c in lnames),
            *(c + rsuf if c in clash else c for c in rnames),
            *extra,
        ]
        if len(set(names)) < len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(
                f"step {step.step_id!r}: the join output would have the column(s) {dup} twice; "
                "rename them upstream or pass other suffixes"
            )
        lcols = left.select(lnames).take(pa.array(li)).columns
        rcols = right.select(rnames).take(pa.array(ri)).columns
        out = pa.table([*lcols, *rcols, *extra.values()], names=names)
        for batch in out.combine_chunks().to_batches():
            self.ctx.emit(batch)

    # --- state per key group -------------------------------------------------------

    def _buffers(self) -> dict[str, tuple[RowBuffer, Sequence[str]]]:
        step = self.step
        return {"left": (self._left, step.left_keys), "right": (self._right, step.right_keys)}

    def snapshot_state(self, key_groups: Iterable[int] | None = None) -> JoinState:
        """The buffered rows of ``key_groups`` (all when ``None``) as ``{key_group:
        {"left": rows, "right": rows, "watermark": int}}``; the tables are immutable."""
        parts: JoinState = split_parts(self._buffers(), self.ctx.max_parallelism, key_groups)
        for part in parts.values():
            part["watermark"] = self._watermark
        return parts

    def restore_state(self, parts: Mapping[int, Mapping[str, Any]]) -> None:
        """Add key groups taken by :meth:`snapshot_state` (this task must not hold them)."""
        for name, (buf, _) in self._buffers().items():
            buf.restore(p[name] for p in parts.values() if name in p)
        for part in parts.values():
            self._watermark = max(self._watermark, part.get("watermark", MIN_WATERMARK))

    def drop_state(self, key_groups: Iterable[int]) -> None:
        """Forget ``key_groups`` (after they moved to another task)."""
        groups = list(key_groups)
        for buf, keys in self._buffers().values():
            buf.drop(keys, self.ctx.max_parallelism, groups)


class WindowJoin(Join):
    """Pairs rows with equal keys in the same tumbling or sliding window."""

    def __init__(self, step: JoinStep) -> None:
        super().__init__(step)
        window = step.window
        if isinstance(window, Tumbling):
            self._size = self._slide = window.size_ms
        elif isinstance(window, Sliding):
            self._size, self._slide = window.size_ms, window.slide_ms
        else:
            raise ValueError(
                f"step {step.step_id!r}: a window join needs a tumbling or sliding window, "
                f"not {window!r}"
            )
        if self._size <= 0 or self._slide <= 0:
            raise ValueError(f"step {step.step_id!r}: window size and slide must be positive")
        self._offset = window.offset_ms

    def on_batch(self, batch: pa.RecordBatch, input_index: int) -> None:
        ts = batch.column(EVENT_TIME).to_numpy()
        idx, start = sliding_windows(ts, self._size, self._slide, self._offset)
        due = start + (self._size - 1)
        keep = due > self._watermark
        if not keep.all():  # late: rows whose every window has fired
            n = batch.num_rows
            fired = (np.bincount(idx, minlength=n) > 0) & (np.bincount(idx[keep], minlength=n) == 0)
            self.ctx.counters["late_dropped"] += int(np.count_nonzero(fired))
            idx, start, due = idx[keep], start[keep], due[keep]
        if len(idx):
            rows_in_windows = batch.take(pa.array(idx)).append_column(
                _WINDOW_START, pa.array(start, pa.int64())
            )
            (self._left if input_index == 0 else self._right).add(rows_in_windows, due)

    def on_watermark(self, watermark: int) -> None:
        self._watermark = max(self._watermark, watermark)
        left = self._left.pop_due(watermark)
        right = self._right.pop_due(watermark)
        if left is None or right is None or not left.num_rows or not right.num_rows:
            return
        lk = [*self.step.left_keys, _WINDOW_START]
        rk = [*self.step.right_keys, _WINDOW_START]
        li, ri = match_keys(left, lk, right, rk)
        start = left.column(_WINDOW_START).to_numpy()[li]
        self._emit_pairs(left, li, right, ri, {
            "window_start": pa.array(start, pa.timestamp("ms")),
            "window_end": pa.array(start + self._size, pa.timestamp("ms")),
            EVENT_TIME: pa.array(start + (self._size - 1), pa.int64()),
        })


class IntervalJoin(Join):
    """Pairs rows with equal keys where ``l._ts + lower_ms <= r._ts <= l._ts + upper_ms``."""

    def __init__(self, step: JoinStep) -> None:
        super().__init__(step)
        if step.lower_ms > step.upper_ms:
            raise ValueError(
                f"step {step.step_id!r}: interval join lower bound {step.lower_ms} ms exceeds "
                f"the upper bound {step.upper_ms} ms"
            )

    def on_batch(self, batch: pa.RecordBatch, input_index: int) -> None:
        step = self.step
        ts = batch.column(EVENT_TIME).to_numpy()
        lower, upper = step.lower_ms, step.upper_ms
        # A row is buffered while the watermark is below ``due``: until no on-time row of
        # the other side can join it. It is late when it can join nothing at all: no row
        # the other buffer keeps and no on-time row to come.
        if input_index == 0:
            due, reach = ts + (upper + 1), ts + (upper - min(lower, 1))
        else:
            due, reach = ts + (1 - lower), ts - (lower + min(-upper, 1))
        keep = reach >= self._watermark
        if not keep.all():
            self.ctx.counters["late_dropped"] += len(keep) - int(np.count_nonzero(keep))
            batch, due = batch.filter(pa.array(keep)), due[keep]
            if not batch.num_rows:
                return
        new = pa.Table.from_batches([batch])
        own, other = (self._left, self._right) if input_index == 0 else (self._right, self._left)
        if len(other):
            left, right = (new, other.table) if input_index == 0 else (other.table, new)
            li, ri = match_keys(left, step.left_keys, right, step.right_keys)
            lts = left.column(EVENT_TIME).to_numpy()[li]
            rts = right.column(EVENT_TIME).to_numpy()[ri]
            ok = (lts + step.lower_ms <= rts) & (rts <= lts + step.upper_ms)
            self._emit_pairs(left, li[ok], right, ri[ok], {
                EVENT_TIME: pa.array(np.maximum(lts[ok], rts[ok]), pa.int64()),
            })
        kept = due > self._watermark
        own.add(new if kept.all() else new.filter(pa.array(kept)), due[kept])

    def on_watermark(self, watermark: int) -> None:
        self._watermark = max(self._watermark, watermark)
        self._left.pop_due(watermark)
        self._right.pop_due(watermark)
