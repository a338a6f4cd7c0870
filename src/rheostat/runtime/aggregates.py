"""Windowed aggregations as mergeable partials: partial -> merge -> final, all vectorised.

Each aggregation keeps a few partial columns named ``_a{i}_{part}``:

=========  =====================================  ======================================
kind       partial columns                        final value
=========  =====================================  ======================================
count      ``n`` (rows, or non-null values)       ``n`` (int64)
sum        ``s`` (int64 for ints, float64)        ``s`` (null when every value is null)
mean       ``s`` (float64), ``n`` (non-null)      ``s / n`` (float64)
min, max   ``v``                                  ``v`` (input type)
first      ``v``, ``t`` (event time of ``v``)     ``v`` with the least ``t``
last       ``v``, ``t``                           ``v`` with the greatest ``t``
reduce     ``v``                                  ``reducer`` folded over the values
=========  =====================================  ======================================

Nulls are ignored by every kind but ``count()``. :meth:`AggPlan.partial` aggregates raw rows
with one ``pyarrow`` hash ``group_by``; :meth:`AggPlan.merge` combines partial rows (given in
arrival order) with another; first/last ties on event time go to the earlier (first) or later
(last) arrival. ``reduce`` is the one slow path: it calls the user's ``reducer(a, b)`` once
per value in Python, in arrival order within each partial, so it should be associative
(and commutative when rows may arrive out of order).

>>> import pyarrow as pa
>>> from rheostat.plan.logical import Agg
>>> plan = AggPlan((("n", Agg("count")), ("hi", Agg("max", "x"))))
>>> rows = pa.table({"k": [1, 1, 2], "x": [3, 9, 4], "_ts": [0, 1, 2]})
>>> p = plan.merge(pa.concat_tables([plan.partial(rows, ["k"])] * 2), ["k"])
>>> {k: v.to_pylist() for k, v in plan.finalize(p).items()}
{'n': [4, 2], 'hi': [9, 4]}
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rheostat.plan.logical import EVENT_TIME, Agg

#: (source column, hash aggregate function, output column) for extra aggregations.
Extra = tuple[str, str, str]

_PARTS = {
    "count": ("n",), "sum": ("s",), "mean": ("s", "n"), "min": ("v",), "max": ("v",),
    "first": ("v", "t"), "last": ("v", "t"), "reduce": ("v",),
}
_MERGE_FN = {"n": "sum", "s": "sum"}


def _sum_input(arr: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Integers (and booleans) sum as int64, floats as float64, anything else as itself."""
    t = arr.type
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return arr if t == pa.int64() else arr.cast(pa.int64())
    if pa.types.is_floating(t):
        return arr if t == pa.float64() else arr.cast(pa.float64())
    return arr


def _to_float(arr: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    return arr if arr.type == pa.float64() else arr.cast(pa.float64())


class _GroupBy:
    """One ``group_by(...).aggregate(...)`` over internal column names, deduplicating calls."""

    def __init__(self, table: pa.Table, by: Sequence[str]) -> None:
        if not by:
            raise ValueError("a windowed aggregate always groups by at least the window")
        self.table = table
        self.by = list(by)
        self.arrays: dict[str, Any] = {f"_g{j}": table.column(c) for j, c in enumerate(by)}
        self.sources: dict[object, str] = {}
        self.calls: dict[tuple[str, str], str] = {}
        self.targets: list[tuple[str, tuple[str, str]]] = []

    def source(self, key: object, make: Callable[[], Any]) -> str:
        """The internal name of a value column, made once per distinct ``key``."""
        if key not in self.sources:
            name = f"_v{len(self.sources)}"
            self.arrays[name] = make()
            self.sources[key] = name
        return self.sources[key]

    def column(self, name: str) -> str:
        return self.source(("col", name), lambda: self.table.column(name))

    def call(self, target: str, src: str, fn: str) -> None:
        """Aggregate internal column ``src`` with ``fn`` into output column ``target``."""
        self.calls.setdefault((src, fn), "count_all" if fn == "count_all" else f"{src}_{fn}")
        self.targets.append((target, (src, fn)))

    def take(self, order: np.ndarray) -> None:
        """Reorder the input rows (e.g. by event time) before aggregating."""
        idx = pa.array(order)
        self.arrays = {k: v.take(idx) for k, v in self.arrays.items()}

    def run(self) -> tuple[pa.Table, dict[str, Any]]:
        """(group columns under their real names, {target: aggregated column})."""
        groups = [f"_g{j}" for j in range(len(self.by))]
        specs = [([], "count_all") if fn == "count_all" else (src, fn) for src, fn in self.calls]
        out = pa.table(self.arrays).group_by(groups, use_threads=False).aggregate(specs)
        keys = out.select(groups).rename_columns(self.by)
        return keys, {t: out.column(self.calls[call]) for t, call in self.targets}


class AggPlan:
    """The partial/merge/final functions for a step's ``(name, Agg)`` pairs.

    >>> from rheostat.plan.logical import Agg
    >>> AggPlan((("avg", Agg("mean", "x")),)).partial_names
    ['_a0_s', '_a0_n']
    """

    def __init__(self, aggs: Sequence[tuple[str, Agg]], ts_column: str = EVENT_TIME) -> None:
        seen: set[str] = set()
        for name, agg in aggs:
            if agg.kind not in _PARTS:
                raise ValueError(f"aggregation {name!r}: unknown kind {agg.kind!r}")
            if agg.kind != "count" and agg.column is None:
                raise ValueError(f"aggregation {name!r}: {agg.kind} needs a column")
            if agg.kind == "reduce" and not callable(agg.reducer):
                raise ValueError(f"aggregation {name!r}: reduce needs a callable reducer(a, b)")
            if name in seen:
                raise ValueError(f"aggregation name {name!r} is used twice")
            seen.add(name)
        self.aggs = tuple(aggs)
        self.ts_column = ts_column
        self.partial_names = [
            f"_a{i}_{p}" for i, (_, agg) in enumerate(self.aggs) for p in _PARTS[agg.kind]
        ]
        self.ordered = any(agg.kind in ("first", "last") for _, agg in self.aggs)

    @property
    def input_columns(self) -> list[str]:
        """The input columns that :meth:`partial` reads."""
        cols = [agg.column for _, agg in self.aggs if agg.column is not None]
        if self.ordered:
            cols.append(self.ts_column)
        return list(dict.fromkeys(cols))

    # --- raw rows -> partials -------------------------------------------------------

    def partial(self, table: pa.Table, by: Sequence[str], extra: Sequence[Extra] = ()) -> pa.Table:
        """Aggregate raw rows into one partial row per group of ``by``.

        Returns the ``by`` columns, then :attr:`partial_names`, then the ``extra`` outputs
        (``(source column, pyarrow hash aggregate, output name)``, e.g. ``("_ts", "min", "lo")``).
        """
        g = _GroupBy(table, by)
        ts = g.column(self.ts_column) if self.ordered else ""
        for i, (_, agg) in enumerate(self.aggs):
            p, col, kind = f"_a{i}_", agg.column, agg.kind
            if col is None:  # count(): rows
                g.call(p + "n", "", "count_all")
            elif kind == "count":
                g.call(p + "n", g.column(col), "count")
            elif kind == "sum":
                g.call(p + "s", self._cast(g, table, col, "sum", _sum_input), "sum")
            elif kind == "mean":
                g.call(p + "s", self._cast(g, table, col, "mean", _to_float), "sum")
                g.call(p + "n", g.column(col), "count")
            elif kind in ("min", "max"):
                g.call(p + "v", g.column(col), kind)
            elif kind in ("first", "last"):
                g.call(p + "v", g.column(col), kind)
                fn = "min" if kind == "first" else "max"
                g.call(p + "t", self._masked_ts(g, table, col, ts), fn)
            else:  # reduce: the value lists, folded after the group_by
                g.call(p + "v", g.column(col), "list")
        for src, fn, out in extra:
            g.call(out, g.column(src), fn)
        if self.ordered:  # first/last: aggregate in event-time order, ties in arrival order
            t = table.column(self.ts_column).to_numpy()
            if len(t) > 1 and not (t[1:] >= t[:-1]).all():
                g.take(np.argsort(t, kind="stable"))
        keys, results = g.run()
        self._reduce(results, lambda i, agg: table.column(agg.column).type)
        return self._assemble(keys, results, extra)

    @staticmethod
    def _cast(g: _GroupBy, table: pa.Table, col: str, why: str, cast: Callable[[Any], Any]) -> str:
        return g.source((why, col), lambda: cast(table.column(col)))

    def _masked_ts(self, g: _GroupBy, table: pa.Table, col: str, ts: str) -> str:
        """The event time of each row where ``col`` is valid (null elsewhere)."""
        if table.column(col).null_count == 0:
            return ts
        return g.source(("ts_of", col), lambda: pc.if_else(
            pc.is_valid(table.column(col)), table.column(self.ts_column),
            pa.scalar(None, pa.int64())))

    # --- partials -> partials -------------------------------------------------------

    def merge(self, table: pa.Table, by: Sequence[str], extra: Sequence[Extra] = ()) -> pa.Table:
        """Merge partial rows (in arrival order) into one per group of ``by``; same layout
        as :meth:`partial`."""
        g = _GroupBy(table, by)
        for i, (_, agg) in enumerate(self.aggs):
            for part in _PARTS[agg.kind]:
                name = f"_a{i}_{part}"
                if agg.kind == "reduce":
                    fn = "list"
                elif part == "t":
                    fn = "min" if agg.kind == "first" else "max"
                elif part == "v" and agg.kind in ("first", "last"):
                    continue  # picked below, at the row holding the chosen ``t``
                else:
                    fn = _MERGE_FN.get(part, agg.kind)
                g.call(name, g.column(name), fn)
        for src, fn, out in extra:
            g.call(out, g.column(src), fn)
        if self.ordered:
            g.call("_rows", g.source("_rows", lambda: pa.array(
                np.arange(table.num_rows, dtype=np.int64))), "list")
        keys, results = g.run()
        if self.ordered:
            self._pick(table, results, keys.num_rows)
        self._reduce(results, lambda i, agg: table.column(f"_a{i}_v").type)
        return self._assemble(keys, results, extra)

    def _pick(self, table: pa.Table, results: dict[str, Any], groups: int) -> None:
        """first/last values: per group, the row whose ``t`` equals the group's chosen ``t``."""
        lists = results.pop("_rows").combine_chunks()
        gid = np.empty(table.num_rows, dtype=np.int64)
        gid[lists.flatten().to_numpy()] = pc.list_parent_indices(lists).to_numpy()
        for i, (_, agg) in enumerate(self.aggs):
            if agg.kind not in ("first", "last"):
                continue
            t = table.column(f"_a{i}_t")
            best = results[f"_a{i}_t"]
            hit = pc.fill_null(pc.equal(t, best.take(pa.array(gid))), False).to_numpy()
            sel = np.flatnonzero(hit)
            if agg.kind == "last":
                sel = sel[::-1]  # the latest arrival wins ties
            uniq, pos = np.unique(gid[sel], return_index=True)
            rows = np.full(groups, -1, dtype=np.int64)
            rows[uniq] = sel[pos]
            results[f"_a{i}_v"] = table.column(f"_a{i}_v").take(pa.array(rows, mask=rows < 0))

    # --- shared ---------------------------------------------------------------------

    def _reduce(
        self, results: dict[str, Any], type_of: Callable[[int, Agg], pa.DataType]
    ) -> None:
        """Fold each group's value list with the user's reducer (the per-value slow path)."""
        for i, (name, agg) in enumerate(self.aggs):
            if agg.kind != "reduce":
                continue
            key = f"_a{i}_v"
            src_type = type_of(i, agg)
            out = []
            for values in results[key].to_pylist():
                present = [v for v in values if v is not None]
                try:
                    out.append(functools.reduce(agg.reducer, present) if present else None)
                except Exception as e:
                    raise ValueError(f"aggregation {name!r}: reducer raised {e!r}") from e
            try:
                results[key] = pa.array(out, type=src_type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as e:
                raise ValueError(
                    f"aggregation {name!r}: reducer must return values of the column's type "
                    f"{src_type}: {e}") from e

    def _assemble(
        self, keys: pa.Table, results: dict[str, Any], extra: Sequence[Extra]
    ) -> pa.Table:
        names = [*self.partial_names, *(out for _, _, out in extra)]
        out = keys
        for name in names:
            out = out.append_column(name, results[name])
        return out

    def finalize(self, table: pa.Table) -> dict[str, pa.ChunkedArray]:
        """The final value of every aggregation, by name, from merged partials."""
        out: dict[str, pa.ChunkedArray] = {}
        for i, (name, agg) in enumerate(self.aggs):
            p = f"_a{i}_"
            if agg.kind == "count":
                out[name] = table.column(p + "n")
            elif agg.kind == "sum":
                out[name] = table.column(p + "s")
            elif agg.kind == "mean":
                out[name] = pc.divide(table.column(p + "s"),
                                      table.column(p + "n").cast(pa.float64()))
            else:
                out[name] = table.column(p + "v")
        return out
