"""Nexmark q4: the average winning price per category.

The winning bid of an auction is its highest bid placed between the auction's start
(``date_time``) and its end (``expires``), both included; q4 averages the winning prices
of each category's auctions. Flink writes it as a global ``GROUP BY`` whose result keeps
updating; the streaming formulation here is:

1. **interval join** of auctions (keyed by ``id``) with bids (keyed by ``auction``): a bid
   pairs with its auction when ``auction.date_time <= bid.date_time <=
   auction.date_time + longest auction`` (a bound of the generator's auction lengths),
   then a ``map_batches`` keeps the pairs with ``bid.date_time <= expires`` and
   pre-aggregates each batch to one row per auction (its highest price there);
2. **keyed process by auction**: keeps the highest price so far and fires an event-time
   timer at ``expires``; when the watermark passes it no valid bid can still come, so the
   auction's final price goes out and its state is dropped;
3. **keyed process by category**: a running count and sum of final prices; each batch
   emits the category's updated average (an upsert: the latest row per category is the
   current answer, and the last one equals the batch query's result).

State is bounded by the auctions in flight plus one row per category.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

import rheostat as rs
from rheostat.bench.nexmark.common import EVENT_TIME, NexmarkConfig, Query


def auction_terms(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The columns of an auction that q4 needs: id, category and ``expires`` in ms."""
    return pa.record_batch([batch.column("id"), batch.column("category"),
                            batch.column("expires").cast(pa.int64()),
                            batch.column(EVENT_TIME)],
                           names=["id", "category", "expires", EVENT_TIME])


def bid_prices(batch: pa.RecordBatch) -> pa.RecordBatch:
    return batch.select(["auction", "price", EVENT_TIME])


def best_valid_bids(batch: pa.RecordBatch) -> pa.RecordBatch | pa.Table:
    """Pairs whose bid came no later than the auction's end (the join's ``_ts`` is the
    bid's time), reduced to the highest price per auction in this batch."""
    ts = batch.column(EVENT_TIME).to_numpy()
    valid = batch.filter(pa.array(ts <= batch.column("expires").to_numpy()))
    if valid.num_rows == 0:
        return valid.select(["id", "category", "expires", "price", EVENT_TIME])
    best = (pa.Table.from_batches([valid])
            .group_by("id", use_threads=False)
            .aggregate([("price", "max"), ("category", "max"), ("expires", "max"),
                        (EVENT_TIME, "max")]))
    return pa.table([best.column("id"), best.column("category_max"),
                     best.column("expires_max"), best.column("price_max"),
                     best.column(f"{EVENT_TIME}_max")],
                    names=["id", "category", "expires", "price", EVENT_TIME])


class WinningBid(rs.KeyedProcess):
    """Keyed by auction id: the highest valid price, emitted when the auction expires."""

    schema = pa.schema([("category", pa.int64()), ("final", pa.int64())])

    def process(self, key: Any, rows: list[dict], ctx: Any) -> None:
        best = ctx.state.get()
        if best is None:
            best = [rows[0]["price"], rows[0]["category"]]
            ctx.register_timer(rows[0]["expires"])
        best[0] = max(best[0], *(row["price"] for row in rows))
        ctx.state.set(best)

    def on_timer(self, key: Any, timestamp: int, ctx: Any) -> list[dict]:
        best = ctx.state.get()
        ctx.state.clear()
        return [] if best is None else [{"category": best[1], "final": best[0]}]


class AveragePrice(rs.KeyedProcess):
    """Keyed by category: the running average of final prices (one upsert per batch)."""

    schema = pa.schema([("auctions", pa.int64()), ("total", pa.int64()),
                        ("avg_price", pa.float64())])

    def process(self, key: Any, rows: list[dict], ctx: Any) -> list[dict]:
        auctions, total = ctx.state.get((0, 0))
        auctions += len(rows)
        total += sum(row["final"] for row in rows)
        ctx.state.set((auctions, total))
        return [{"auctions": auctions, "total": total, "avg_price": total / auctions}]


def q4(streams: dict[str, rs.Stream], cfg: NexmarkConfig) -> rs.Stream:
    auctions = streams["auction"].map_batches(auction_terms, name="q4.auctions")
    bids = streams["bid"].map_batches(bid_prices, name="q4.bids")
    pairs = auctions.key_by("id").join(bids.key_by("auction"),
                                       between=(0, cfg.max_auction_ms), name="q4.join")
    return (pairs.map_batches(best_valid_bids, name="q4.valid")
            .key_by("id").process(WinningBid(), name="q4.winning")
            .key_by("category").process(AveragePrice(), name="q4.average"))


Q4_SQL = """
with q as (
  select a.id, a.category, max(b.price) as final
  from auction a join bid b
    on a.id = b.auction and b.date_time between a.date_time and a.expires
  group by a.id, a.category)
select category, count(*) as auctions, sum(final)::bigint as total, avg(final) as avg_price
from q group by category
"""

QUERIES = [
    Query("q4", "average price per category", ("auction", "bid"), q4, Q4_SQL,
          ("category", "auctions", "total", "avg_price"),
          changelog=(("category",), "auctions"), windowed=True),
]
