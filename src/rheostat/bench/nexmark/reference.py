"""The reference: each query in DuckDB SQL over the whole stream, and how to compare.

DuckDB sees the events as three in-memory Arrow tables, ``bid``, ``person`` and
``auction``, built by the same generator with the same seed (``nexmark(...).to_table()``);
it computes the batch answer in one go. That answer is the oracle for the streaming one,
and its speed (one thread, and all threads) is the in-process limit of the benchmark.

>>> t = pa.table({"k": [2, 1], "t": pa.array([5, 3], pa.timestamp("ms"))})
>>> rows(t, ["k", "t"])
[(1, 3), (2, 5)]
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from rheostat.bench.nexmark.common import Query


def connect(tables: dict[str, pa.Table], threads: int | None = None) -> Any:
    """A DuckDB connection that sees ``tables`` by kind (``bid``, ``person``, ``auction``)."""
    import duckdb

    con = duckdb.connect()
    if threads is not None:
        con.execute(f"set threads to {int(threads)}")
    for kind, table in tables.items():
        con.register(kind, table)
    return con


def answer(query: Query, tables: dict[str, pa.Table], threads: int | None = None) -> pa.Table:
    """The query's complete answer, as an Arrow table."""
    return connect(tables, threads).sql(query.sql).to_arrow_table()


def timed_answer(query: Query, tables: dict[str, pa.Table],
                 threads: int | None = None, repeat: int = 1) -> tuple[float, pa.Table]:
    """The best wall time (s) of ``repeat`` runs of the query, materialised to Arrow."""
    con = connect(tables, threads)
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = con.sql(query.sql).to_arrow_table()
        best = min(best, time.perf_counter() - started)
    assert result is not None
    return best, result


def rows(table: pa.Table, columns: Sequence[str]) -> list[tuple]:
    """The rows of ``columns`` as sorted tuples; timestamps as int milliseconds."""
    arrays = []
    for name in columns:
        column = table.column(name)
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.timestamp("ms")).cast(pa.int64())
        arrays.append(column.to_pylist())
    return sorted(zip(*arrays), key=_sort_key)


def _sort_key(row: tuple) -> tuple:
    return tuple((v is None, v) for v in row)


def latest_updates(table: pa.Table, query: Query) -> pa.Table:
    """For an updating result: each key's last update (the row where the growing column
    is largest)."""
    assert query.changelog is not None
    keys, growing = query.changelog
    if table.num_rows == 0:
        return table
    best = table.group_by(list(keys), use_threads=False).aggregate([(growing, "max")])
    joined = table.join(best, list(keys), use_threads=False)
    return joined.filter(pc.equal(joined.column(growing), joined.column(f"{growing}_max")))


def comparable(table: pa.Table, query: Query) -> list[tuple]:
    """What the oracle compares: the output rows (each key's last update for a changelog)."""
    if query.changelog is not None:
        table = latest_updates(table, query)
    return rows(table, query.columns)


def differences(got: list[tuple], expected: list[tuple], show: int = 5) -> str:
    """A short description of how two sorted row lists differ ('' when equal)."""
    if got == expected:
        return ""
    from collections import Counter

    g, e = Counter(got), Counter(expected)
    extra, missing = list((g - e).elements()), list((e - g).elements())
    return (f"{len(got)} rows vs {len(expected)} expected; {len(extra)} unexpected, e.g. "
            f"{extra[:show]}; {len(missing)} missing, e.g. {missing[:show]}")

