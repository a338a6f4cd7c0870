"""Nexmark q0, q1, q2: pass-through, currency conversion and selection on bids.

Each is one vectorised step (or none): a ``map_batches`` function over whole Arrow batches.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

import rheostat as rs
from rheostat.bench.nexmark.common import EVENT_TIME, NexmarkConfig, Query

BID_COLUMNS = ("auction", "bidder", "price", "date_time", "extra")
DOLLARS_TO_EUROS = 0.908


def bid_columns(batch: pa.RecordBatch) -> pa.RecordBatch:
    """q0's step: the bid columns Flink's q0 selects (a zero-copy projection)."""
    return batch.select(list(BID_COLUMNS))


def q0(streams: dict[str, rs.Stream], cfg: NexmarkConfig) -> rs.Stream:
    """Every bid, unchanged but for the projection: the engine's own cost of moving batches."""
    return streams["bid"].map_batches(bid_columns, name="q0.project")


def to_euros(batch: pa.RecordBatch) -> pa.RecordBatch:
    """q1's step: ``price`` in euros (a float64 column), the other bid columns as they are."""
    euros = pc.multiply(batch.column("price"), DOLLARS_TO_EUROS)
    return pa.record_batch(
        [batch.column(c) if c != "price" else euros for c in BID_COLUMNS],
        names=list(BID_COLUMNS),
    )


def q1(streams: dict[str, rs.Stream], cfg: NexmarkConfig) -> rs.Stream:
    return streams["bid"].map_batches(to_euros, name="q1.euros")


def every_123rd_auction(batch: pa.RecordBatch) -> pa.RecordBatch:
    """q2's step: the bids on auctions whose id is a multiple of 123 (auction and price).

    Filtering keeps the hidden ``_ts`` event-time column; a projection after it names
    ``_ts`` too, since the output has fewer rows than the input."""
    keep = batch.column("auction").to_numpy() % 123 == 0
    return batch.filter(pa.array(keep)).select(["auction", "price", EVENT_TIME])


def q2(streams: dict[str, rs.Stream], cfg: NexmarkConfig) -> rs.Stream:
    return streams["bid"].map_batches(every_123rd_auction, name="q2.select")


QUERIES = [
    Query("q0", "pass-through", ("bid",), q0,
          "select auction, bidder, price, date_time, extra from bid", BID_COLUMNS),
    Query("q1", "currency conversion", ("bid",), q1,
          "select auction, bidder, price * 0.908::double as price, date_time, extra from bid",
          BID_COLUMNS),
    Query("q2", "selection", ("bid",), q2,
          "select auction, price from bid where auction % 123 = 0", ("auction", "price")),
]
