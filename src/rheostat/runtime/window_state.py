"""Columnar window state: partial aggregates of tumbling/sliding panes, and of sessions.

Both stores keep Arrow tables whose rows are partial aggregates (see
:mod:`rheostat.runtime.aggregates`) of one key in one pane or session, with the key's
key group in ``_kg``, so one key group's state can be filtered out, snapshotted or moved.

Firing follows Flink's event-time trigger: a window ``[start, end)`` fires when the
watermark reaches ``end - 1`` and its state is kept until ``end - 1 + allowed_lateness``.
Rows that reach a window which has fired but is still kept update it; the keys they touch
are emitted again, with their full updated result, at the next watermark (Flink fires once
per late row; here once per watermark). Rows whose every window has expired are *late*:
the stores report them and never store them.

>>> import numpy as np, pyarrow as pa
>>> from rheostat.plan.logical import Agg
>>> from rheostat.runtime.aggregates import AggPlan
>>> store = PaneStore(("k",), AggPlan((("n", Agg("count")),)), size=10, slide=10)
>>> rows = pa.table({"k": [1, 1, 2], "_ts": [1, 5, 12]})
>>> late, outside = store.add(rows, np.array([1, 5, 12]), watermark=0, max_parallelism=128)
>>> store.fire(0, 9).select(["k", "_ws", "_we", "_a0_n"]).to_pylist()
[{'k': 1, '_ws': 0, '_we': 10, '_a0_n': 2}]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rheostat.plan.logical import EVENT_TIME
from rheostat.runtime.aggregates import AggPlan
from rheostat.runtime.keys import hash_columns, key_groups
from rheostat.runtime.window_assign import (
    key_codes,
    key_then_start_order,
    last_window_end,
    pane_size,
    session_ids,
    sliding_windows,
    tumbling_start,
)

#: Settled chunks a pane may hold before they are merged into one.
MAX_CHUNKS = 4


def _concat(tables: list[pa.Table]) -> pa.Table:
    """Partials of one column from batches where it was an int and where it was a float
    (the window operator allows only that change) concatenate as float64."""
    return pa.concat_tables(tables, promote_options="permissive")


def _with_kg(table: pa.Table, keys: tuple[str, ...], max_parallelism: int) -> pa.Table:
    kg = key_groups(table, keys, max_parallelism) if keys else np.zeros(table.num_rows, np.int64)
    return table.append_column("_kg", pa.array(kg))


def _columns(keys: tuple[str, ...], plan: AggPlan, *more: str) -> list[str]:
    """The input columns a store reads, each once."""
    return list(dict.fromkeys([*keys, *plan.input_columns, *more]))


def _flag(table: pa.Table, name: str, value: bool) -> pa.Table:
    return table.append_column(name, pa.array(np.full(table.num_rows, value)))


def _split_by(table: pa.Table, column: str) -> dict[int, pa.Table]:
    """Rows grouped by an int64 column, each group's rows in their original order."""
    values = table.column(column).to_numpy()
    if len(values) and (values == values[0]).all():
        return {int(values[0]): table}
    order = np.argsort(values, kind="stable")
    ordered, table = values[order], table.take(pa.array(order))
    uniq, first = np.unique(ordered, return_index=True)
    bounds = [*first.tolist(), len(ordered)]
    return {int(v): table.slice(bounds[j], bounds[j + 1] - bounds[j]) for j, v in enumerate(uniq)}


def _without(table: pa.Table, groups: pa.Array) -> pa.Table:
    return table.filter(pc.invert(pc.is_in(table.column("_kg"), value_set=groups)))


@dataclass
class _Pane:
    settled: list[pa.Table] = field(default_factory=list)  # already seen by every firing
    pending: list[pa.Table] = field(default_factory=list)  # arrived since the last watermark


class PaneStore:
    """State of tumbling (``slide == size``) or sliding windows, as partials per pane."""

    def __init__(self, keys: tuple[str, ...], plan: AggPlan, size: int, slide: int,
                 offset: int = 0, lateness: int = 0) -> None:
        self.keys, self.plan, self.lateness = keys, plan, lateness
        self.size, self.slide, self.offset = size, slide, offset % slide
        self.pane = pane_size(size, slide)
        self.panes: dict[int, _Pane] = {}
        self.columns = [*keys, "_kg", "_pane", *plan.partial_names]

    def add(self, table: pa.Table, ts: np.ndarray, watermark: int,
            max_parallelism: int) -> tuple[np.ndarray, np.ndarray]:
        """Pre-aggregate and store rows; returns masks (late rows, rows in no window)."""
        last_start = tumbling_start(ts, self.slide, self.offset)
        in_window = ts < last_start + self.size  # False only in the gaps when slide > size
        late = np.where(in_window, last_start + self.size - 1, ts) + self.lateness <= watermark
        outside = ~in_window & ~late
        keep = ~late & in_window
        rows = table.select(_columns(self.keys, self.plan))
        if not keep.all():
            rows, ts = rows.filter(pa.array(keep)), ts[keep]
        if len(ts):
            rows = rows.append_column("_pane", pa.array(tumbling_start(ts, self.pane, self.offset)))
            part = self.plan.partial(rows, [*self.keys, "_pane"])
            part = _with_kg(part, self.keys, max_parallelism).select(self.columns)
            for start, chunk in _split_by(part, "_pane").items():
                self.panes.setdefault(start, _Pane()).pending.append(chunk)
        return late, outside

    def _windows_of(self, panes: np.ndarray) -> np.ndarray:
        return sliding_windows(panes, self.size, self.slide, self.offset)[1] + self.size

    def fire(self, old: int, new: int) -> pa.Table | None:
        """Advance the watermark from ``old`` to ``new``: merged partials of the windows
        (``_ws``, ``_we``) that fire, then settle and expire state."""
        out = None
        if self.panes:
            starts = np.fromiter(self.panes, dtype=np.int64, count=len(self.panes))
            ends = np.unique(self._windows_of(starts))
            first = ends[(ends - 1 > old) & (ends - 1 <= new)]
            again = np.zeros(0, dtype=np.int64)
            if self.lateness > 0:
                dirty = np.array([p for p, s in self.panes.items() if s.pending], dtype=np.int64)
                e = np.unique(self._windows_of(dirty))
                again = e[(e - 1 <= old) & (e - 1 + self.lateness > old)]
            due = np.union1d(first, again)
            if len(due):
                out = self._merge_windows(np.sort(starts), due, first)
        self._settle()
        self._expire(new)
        return out

    def _merge_windows(self, starts: np.ndarray, due: np.ndarray, first: np.ndarray) -> pa.Table:
        chunks, ends, new = [], [], []
        for end in due.tolist():
            lo, hi = np.searchsorted(starts, [end - self.size, end])
            for p in starts[lo:hi].tolist():
                pane = self.panes[p]
                for chunk, is_new in [*((c, False) for c in pane.settled),
                                      *((c, True) for c in pane.pending)]:
                    chunks.append(chunk)
                    ends.append(np.full(chunk.num_rows, end, dtype=np.int64))
                    new.append(np.full(chunk.num_rows, is_new))
        table = _concat(chunks).append_column("_we", pa.array(np.concatenate(ends)))
        if len(first) == len(due):  # first firings only: every key is emitted
            merged = self.plan.merge(table, [*self.keys, "_we"])
            we = merged.column("_we").to_numpy()
        else:  # re-fired windows emit only the keys that changed
            table = table.append_column("_new", pa.array(np.concatenate(new)))
            merged = self.plan.merge(table, [*self.keys, "_we"], [("_new", "any", "_new")])
            we = merged.column("_we").to_numpy()
            emit = np.isin(we, first) | merged.column("_new").to_numpy(zero_copy_only=False)
            merged, we = merged.filter(pa.array(emit)).drop_columns("_new"), we[emit]
        return merged.append_column("_ws", pa.array(we - self.size))

    def _settle(self) -> None:
        """Pending chunks become settled. A pane holding too many chunks merges its newer
        chunks into one, and its oldest with them once they outweigh it, so the big chunk is
        rarely rewritten; all such panes merge in one ``group_by``."""
        todo: dict[int, int] = {}  # pane -> index of its first chunk to merge
        for start, pane in self.panes.items():
            if pane.pending:
                pane.settled.extend(pane.pending)
                pane.pending = []
                if len(pane.settled) > MAX_CHUNKS:
                    rest = sum(c.num_rows for c in pane.settled[1:])
                    todo[start] = 0 if rest >= pane.settled[0].num_rows else 1
        if todo:
            table = _concat(
                [c for p, i in todo.items() for c in self.panes[p].settled[i:]])
            merged = self.plan.merge(table, [*self.keys, "_kg", "_pane"]).select(self.columns)
            parts = _split_by(merged, "_pane")
            for p, i in todo.items():
                self.panes[p].settled[i:] = [parts[p]] if p in parts else []

    def _expire(self, watermark: int) -> None:
        """Drop panes whose every window is past its allowed lateness."""
        if not self.panes:
            return
        starts = np.fromiter(self.panes, dtype=np.int64, count=len(self.panes))
        last = last_window_end(starts, self.size, self.slide, self.offset)
        for p in starts[last - 1 + self.lateness <= watermark].tolist():
            del self.panes[p]

    def snapshot(self) -> pa.Table | None:
        """All state as one table: :attr:`columns` plus ``_new`` (arrived since last fire)."""
        chunks = [_flag(c, "_new", is_new) for pane in self.panes.values()
                  for is_new, cs in ((False, pane.settled), (True, pane.pending)) for c in cs]
        return _concat(chunks) if chunks else None

    def drop(self, groups: pa.Array) -> None:
        """Forget the rows of key groups ``groups`` (they moved to another task)."""
        for start in list(self.panes):
            pane = self.panes[start]
            pane.settled = [c for c in (_without(c, groups) for c in pane.settled) if c.num_rows]
            pane.pending = [c for c in (_without(c, groups) for c in pane.pending) if c.num_rows]
            if not pane.settled and not pane.pending:
                del self.panes[start]

    def restore(self, table: pa.Table) -> None:
        """Add the rows of a :meth:`snapshot` (all of it, or some key groups of it)."""
        for is_new in (False, True):
            part = table.filter(pc.equal(table.column("_new"), is_new)).select(self.columns)
            if part.num_rows:
                for start, chunk in _split_by(part, "_pane").items():
                    pane = self.panes.setdefault(start, _Pane())
                    (pane.pending if is_new else pane.settled).append(chunk)


class SessionStore:
    """State of session windows: one partial row per (key, open session)."""

    def __init__(self, keys: tuple[str, ...], plan: AggPlan, gap: int, lateness: int = 0) -> None:
        self.keys, self.plan, self.gap, self.lateness = keys, plan, gap, lateness
        self.columns = [*keys, "_kg", "_ws", "_we", *plan.partial_names, "_new"]
        self.state: pa.Table | None = None

    def _sessions(self, table: pa.Table, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Session number of every row of ``table`` (any order), merging per key."""
        codes = key_codes([table.column(k) for k in self.keys], table.num_rows)
        order, new_key = key_then_start_order(codes, starts)
        sid = np.empty(len(order), dtype=np.int64)
        sid[order] = session_ids(new_key, starts[order], ends[order])
        return sid

    def add(self, table: pa.Table, ts: np.ndarray, watermark: int,
            max_parallelism: int) -> tuple[np.ndarray, np.ndarray]:
        """Merge rows into sessions; returns masks (late rows, rows in no window: none)."""
        n = table.num_rows
        rows = table.select(_columns(self.keys, self.plan, EVENT_TIME))
        sid = self._sessions(rows, ts, ts + self.gap)
        batch = self.plan.partial(rows.append_column("_sid", pa.array(sid)), [*self.keys, "_sid"],
                                  [(EVENT_TIME, "min", "_ws"), (EVENT_TIME, "max", "_we")])
        batch = batch.set_column(batch.schema.get_field_index("_we"), "_we",
                                 pc.add(batch.column("_we"), self.gap))
        row_of_sid = np.empty(len(batch), dtype=np.int64)
        row_of_sid[batch.column("_sid").to_numpy()] = np.arange(len(batch))
        batch = _flag(_flag(batch.drop_columns("_sid"), "_new", True), "_old", False)

        old, rest = self._touched(batch)
        names = [c for c in self.columns if c != "_kg"] + ["_old"]
        both = batch.select(names)
        if old is not None:
            both = _concat([_flag(old.drop_columns("_kg"), "_old", True), both])
        ws, we = both.column("_ws").to_numpy(), both.column("_we").to_numpy()
        msid = self._sessions(both, ws, we)
        merged = self.plan.merge(
            both.append_column("_msid", pa.array(msid)), [*self.keys, "_msid"],
            [("_ws", "min", "_ws"), ("_we", "max", "_we"), ("_new", "any", "_new"),
             ("_old", "any", "_old")])
        mrow = np.empty(len(merged), dtype=np.int64)
        mrow[merged.column("_msid").to_numpy()] = np.arange(len(merged))
        is_late = ~merged.column("_old").to_numpy(zero_copy_only=False) & (
            merged.column("_we").to_numpy() - 1 + self.lateness <= watermark)
        late = is_late[mrow[msid[len(both) - len(batch) + row_of_sid[sid]]]]
        if is_late.any():
            merged = merged.filter(pa.array(~is_late))
        merged = _with_kg(merged, self.keys, max_parallelism).select(self.columns)
        self.state = _concat([rest, merged]) if rest is not None else merged
        if self.state.column("_kg").num_chunks > MAX_CHUNKS:
            self.state = self.state.combine_chunks()
        return late, np.zeros(n, dtype=bool)

    def _touched(self, batch: pa.Table) -> tuple[pa.Table | None, pa.Table | None]:
        """(stored sessions of keys present in ``batch``, the other stored sessions)."""
        if self.state is None or self.state.num_rows == 0:
            return None, None
        if not self.keys:
            return self.state, None
        hit = np.isin(hash_columns(self.state, self.keys), hash_columns(batch, self.keys))
        if hit.all():
            return self.state, None
        return self.state.filter(pa.array(hit)), self.state.filter(pa.array(~hit))

    def fire(self, old: int, new: int) -> pa.Table | None:
        """Sessions with new data whose end - 1 <= ``new``; then expire state."""
        if self.state is None or self.state.num_rows == 0:
            return None
        we = self.state.column("_we").to_numpy()
        is_new = self.state.column("_new").to_numpy(zero_copy_only=False)
        due = is_new & (we - 1 <= new)
        out = self.state.filter(pa.array(due)).drop_columns(["_kg", "_new"]) if due.any() else None
        if due.any():
            self.state = self.state.set_column(
                self.columns.index("_new"), "_new", pa.array(is_new & ~due))
        keep = we - 1 + self.lateness > new
        if not keep.all():
            self.state = self.state.filter(pa.array(keep))
        return out

    def snapshot(self) -> pa.Table | None:
        """All state as one table (:attr:`columns`)."""
        return self.state if self.state is not None and self.state.num_rows else None

    def drop(self, groups: pa.Array) -> None:
        """Forget the sessions of key groups ``groups`` (they moved to another task)."""
        if self.state is not None:
            self.state = _without(self.state, groups)

    def restore(self, table: pa.Table) -> None:
        """Add the sessions of a :meth:`snapshot` (all of it, or some key groups of it)."""
        table = table.select(self.columns)
        self.state = table if self.state is None else _concat([self.state, table])
