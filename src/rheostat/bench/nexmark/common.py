"""What every Nexmark query shares: the run's configuration, its sources and helpers.

A query is a :class:`Query`: which event kinds it reads, a ``build`` function that writes
it with rheostat's public API over those sources, the same query in DuckDB SQL over the
tables ``bid``, ``person`` and ``auction``, and the output columns to compare.

>>> cfg = NexmarkConfig(events=1_000, first_event_rate=1_000)
>>> cfg.max_auction_ms
3334
>>> table = keep_max_per_group(pa.table({"g": [1, 1, 2, 2], "v": [5, 7, 7, 7]}), "g", "v")
>>> table.to_pylist()
[{'g': 1, 'v': 7}, {'g': 2, 'v': 7}, {'g': 2, 'v': 7}]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

import rheostat as rs
from rheostat.connectors.nexmark import (
    AUCTION_PROPORTION,
    BID_PROPORTION,
    NUM_IN_FLIGHT_AUCTIONS,
    PERSON_PROPORTION,
    TOTAL_PROPORTION,
    count_of,
)

#: Source step ids by event kind (also the DuckDB table names' plural).
SOURCE_STEPS = {"bid": "bids", "person": "persons", "auction": "auctions"}
#: The hidden event-time column a map_batches function sees (int64 ms).
EVENT_TIME = "_ts"
MS = pa.timestamp("ms")


@dataclass(frozen=True)
class NexmarkConfig:
    """One run's generator settings. ``first_event_rate`` is events per second of event
    time (the generator's default, 10 M/s, is Flink Nexmark's default rate: 10 M events
    span 1 s of event time). ``out_of_order_ms`` is the sources' watermark delay; the
    generator's splits are each in event-time order, so 0 makes no row late."""

    events: int
    seed: int = 0
    first_event_rate: int = 10_000_000
    base_time_ms: int | None = None
    out_of_order_ms: int = 0
    batch_size: int = 65_536
    #: When set, each source's batches hold this many ms of event time instead.
    batch_ms: float | None = None
    #: Optional wrapper of each source (the latency runs pace them to the wall clock).
    wrap_source: Callable[[Any], Any] | None = field(default=None, compare=False)

    def generator(self, kind: str) -> Any:
        kw: dict[str, Any] = {"seed": self.seed, "first_event_rate": self.first_event_rate}
        if self.base_time_ms is not None:
            kw["base_time_ms"] = self.base_time_ms
        return rs.sources.nexmark(self.events, kind, **kw)  # type: ignore[arg-type]

    def batch_rows(self, kind: str) -> int:
        """Rows per source batch of ``kind``."""
        if self.batch_ms is None:
            return self.batch_size
        share = {"person": PERSON_PROPORTION, "auction": AUCTION_PROPORTION,
                 "bid": BID_PROPORTION}[kind] / TOTAL_PROPORTION
        return max(1, round(self.first_event_rate * share * self.batch_ms / 1000))

    def rows(self, kind: str) -> int:
        """How many ``kind`` rows the stream holds."""
        return count_of(kind, self.events)

    @property
    def max_auction_ms(self) -> int:
        """An upper bound of ``expires - date_time`` over the generator's auctions.

        The generator lets an auction run for ``1 + below(2 * horizon)`` ms, where the
        horizon is the event time of the next ``NUM_IN_FLIGHT_AUCTIONS`` auctions'
        worth of events (100 * 50 / 3 events). The oracle checks the bound holds.
        """
        ahead = NUM_IN_FLIGHT_AUCTIONS * TOTAL_PROPORTION // AUCTION_PROPORTION
        horizon = -(-(ahead * 1000) // self.first_event_rate) + 1
        return max(2 * horizon, 1)

    def tables(self, kinds: tuple[str, ...]) -> dict[str, pa.Table]:
        """The whole stream of each kind, built in this process (for DuckDB)."""
        return {kind: self.generator(kind).to_table() for kind in kinds}


@dataclass(frozen=True)
class Query:
    """One Nexmark query: its rheostat flow, its DuckDB reference and how to compare them."""

    name: str
    title: str
    #: Event kinds it reads, in the order ``build`` takes their streams.
    kinds: tuple[str, ...]
    #: ``build(streams, cfg) -> Stream``: the query over ``{kind: source stream}``.
    build: Callable[[dict[str, rs.Stream], NexmarkConfig], rs.Stream]
    #: The same query in DuckDB SQL over tables ``bid``, ``person``, ``auction``.
    sql: str
    #: Output columns compared with the reference (order-insensitively, exactly).
    columns: tuple[str, ...]
    #: For an updating result (a changelog): the key columns and the column that grows
    #: with each update; the oracle compares each key's last update with the reference.
    changelog: tuple[tuple[str, ...], str] | None = None
    #: Whether the query's results are each due at a watermark (windows, timers).
    windowed: bool = False


def sources(flow: rs.Flow, cfg: NexmarkConfig, kinds: tuple[str, ...]) -> dict[str, rs.Stream]:
    """One source step per kind, event time from ``date_time``."""
    streams = {}
    for kind in kinds:
        source = cfg.generator(kind)
        if cfg.wrap_source is not None:
            source = cfg.wrap_source(source)
        streams[kind] = flow.source(SOURCE_STEPS[kind], source, timestamp="date_time",
                                    out_of_order=cfg.out_of_order_ms,
                                    batch_size=cfg.batch_rows(kind))
    return streams


def build_flow(query: Query, cfg: NexmarkConfig, name: str | None = None) -> tuple[rs.Flow,
                                                                                  rs.Stream]:
    """A flow that reads the query's sources and computes it; the caller adds the sink."""
    flow = rs.Flow(name or f"nexmark-{query.name}")
    out = query.build(sources(flow, cfg, query.kinds), cfg)
    return flow, out


# ---------------------------------------------------------------- vectorised helpers


def keep_max_per_group(batch: Any, group: str, value: str) -> Any:
    """The rows of ``batch`` whose ``value`` is the largest of their ``group`` (ties kept).

    A combiner: applied to any part of a stream it never drops a row that is the maximum
    of its group in the whole stream, so a keyed step after it sees few rows.
    """
    if batch.num_rows == 0:
        return batch
    g = _as_int64(batch.column(group))
    v = batch.column(value).to_numpy()
    if g[0] == g[-1] and (g == g[0]).all():  # the common case: one window in the batch
        mask = v == v.max()
    else:
        groups, inverse = np.unique(g, return_inverse=True)
        best = np.full(len(groups), v.min(), dtype=v.dtype)
        np.maximum.at(best, inverse, v)
        mask = v == best[inverse]
    return batch.filter(pa.array(mask))


def _as_int64(column: Any) -> np.ndarray:
    if pa.types.is_timestamp(column.type):
        column = column.cast(pa.int64())
    return column.to_numpy()


def ms_to_timestamp(ms: np.ndarray) -> pa.Array:
    return pa.array(ms, pa.int64()).cast(MS)
