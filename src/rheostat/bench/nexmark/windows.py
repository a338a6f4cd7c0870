"""Nexmark q5 (hot items), q7 (highest bid) and q11 (user sessions): windows on bids.

q5 and q7 need a global "maximum per window, and the rows that reach it" — a second
stage over the whole window. Both are written the same way: a vectorised *combiner*
(``map_batches``) keeps, in each batch, only the rows that reach their window's maximum
within that batch — which never drops a row that reaches the window's maximum over the
whole stream — then ``key_by("window_end")`` sends each window's few survivors to one
task, where a :class:`rheostat.KeyedProcess` keeps the best value and its rows and emits
them when the watermark passes the window (an event-time timer at ``window_end - 1``).
Ties keep every row.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

import rheostat as rs
from rheostat.bench.nexmark.common import (
    EVENT_TIME,
    MS,
    NexmarkConfig,
    Query,
    keep_max_per_group,
    ms_to_timestamp,
)

# ---------------------------------------------------------------- q5: hot items

Q5_SIZE_MS, Q5_SLIDE_MS = 10_000, 2_000


def local_hot_auctions(batch: pa.RecordBatch) -> pa.RecordBatch:
    """q5's combiner: per window in this batch, the auctions with the most bids."""
    return keep_max_per_group(batch, "window_end", "num")


class RowsWithMax(rs.KeyedProcess):
    """Keyed by ``window_end``: keeps the largest ``column`` seen and every row with it,
    and emits them when the watermark passes the window's last millisecond.

    ``window_ms`` None: the rows' event time is already ``window_end - 1`` (a window
    step's output); else the window is the tumbling window of that size holding the row.
    """

    def __init__(self, column: str, schema: pa.Schema, window_ms: int | None = None) -> None:
        self.column, self.schema, self.window_ms = column, schema, window_ms

    def process(self, key: Any, rows: list[dict], ctx: Any) -> None:
        best = ctx.state.get()
        if best is None:
            last = ctx.timestamp if self.window_ms is None else (
                ctx.timestamp // self.window_ms * self.window_ms + self.window_ms - 1)
            ctx.register_timer(last)
            best = [-1, []]
        for row in rows:
            if row[self.column] > best[0]:
                best = [row[self.column], [row]]
            elif row[self.column] == best[0]:
                best[1].append(row)
        ctx.state.set(best)

    def on_timer(self, key: Any, timestamp: int, ctx: Any) -> list[dict]:
        best = ctx.state.get()
        ctx.state.clear()
        return [] if best is None else best[1]


Q5_SCHEMA = pa.schema([("auction", pa.int64()), ("num", pa.int64()),
                       ("window_start", MS), ("window_end", MS)])


def q5(streams: dict[str, rs.Stream], cfg: NexmarkConfig) -> rs.Stream:
    counts = (streams["bid"].key_by("auction")
              .window(rs.windows.sliding(size=Q5_SIZE_MS, slide=Q5_SLIDE_MS))
              .aggregate(num=rs.agg.count(), name="q5.counts"))
    return (counts.map_batches(local_hot_auctions, name="q5.local_max")
            .key_by("window_end").process(RowsWithMax("num", Q5_SCHEMA), name="q5.hottest"))


Q5_SQL = f"""
with w as (
  select auction,
         unnest(range(epoch_ms(date_time::timestamp) // {Q5_SLIDE_MS} * {Q5_SLIDE_MS}
                        - {Q5_SIZE_MS - Q5_SLIDE_MS},
                      epoch_ms(date_time::timestamp) // {Q5_SLIDE_MS} * {Q5_SLIDE_MS} + 1,
                      {Q5_SLIDE_MS})) as ws
  from bid),
auction_bids as (select auction, ws, count(*) as num from w group by auction, ws),
max_bids as (select ws, max(num) as maxn from auction_bids group by ws)
select a.auction, a.num, a.ws as window_start, a.ws + {Q5_SIZE_MS} as window_end
from auction_bids a join max_bids m on a.ws = m.ws and a.num >= m.maxn
"""

# ---------------------------------------------------------------- q7: highest bid

Q7_SIZE_MS = 10_000
Q7_COLUMNS = ("auction", "price", "bidder", "date_time", "extra", "window_end")


def local_highest_bids(batch: pa.RecordBatch) -> pa.RecordBatch:
    """q7's combiner: per tumbling window in this batch, the bids with the highest price,
    with their ``window_end``."""
    end = batch.column(EVENT_TIME).to_numpy() // Q7_SIZE_MS * Q7_SIZE_MS + Q7_SIZE_MS
    with_end = batch.append_column("window_end", ms_to_timestamp(end))
    return keep_max_per_group(with_end, "window_end", "price").select(
        [*Q7_COLUMNS, EVENT_TIME])


Q7_SCHEMA = pa.schema([("auction", pa.int64()), ("price", pa.int64()),
                       ("bidder", pa.int64()), ("date_time", MS), ("extra", pa.string()),
                       ("window_end", MS)])


def q7(streams: dict[str, rs.Stream], cfg: NexmarkConfig) -> rs.Stream:
    return (streams["bid"].map_batches(local_highest_bids, name="q7.local_max")
            .key_by("window_end").process(RowsWithMax("price", Q7_SCHEMA, Q7_SIZE_MS),
                                          name="q7.highest"))


Q7_SQL = f"""
with b as (select *, epoch_ms(date_time::timestamp) // {Q7_SIZE_MS} * {Q7_SIZE_MS} as ws from bid),
m as (select ws, max(price) as maxprice from b group by ws)
select b.auction, b.price, b.bidder, b.date_time, b.extra, b.ws + {Q7_SIZE_MS} as window_end
from b join m on b.ws = m.ws and b.price = m.maxprice
"""

# ---------------------------------------------------------------- q11: user sessions

Q11_GAP_MS = 10_000


def q11(streams: dict[str, rs.Stream], cfg: NexmarkConfig) -> rs.Stream:
    return (streams["bid"].key_by("bidder").window(rs.windows.session(Q11_GAP_MS))
            .aggregate(bid_count=rs.agg.count(), name="q11.sessions"))


# A bid joins its bidder's session when it comes at most the gap after the previous one
# (Flink's rule: the windows [t, t + gap) of two bids merge when they touch).
Q11_SQL = f"""
with s as (select bidder, epoch_ms(date_time::timestamp) as ts from bid),
g as (select *, case when ts - lag(ts) over (partition by bidder order by ts) <= {Q11_GAP_MS}
                     then 0 else 1 end as fresh from s),
h as (select *, sum(fresh) over (partition by bidder order by ts) as sid from g)
select bidder, count(*) as bid_count, min(ts) as window_start,
       max(ts) + {Q11_GAP_MS} as window_end
from h group by bidder, sid
"""

QUERIES = [
    Query("q5", "hot items", ("bid",), q5, Q5_SQL,
          ("auction", "num", "window_start", "window_end"), windowed=True),
    Query("q7", "highest bid", ("bid",), q7, Q7_SQL, Q7_COLUMNS, windowed=True),
    Query("q11", "user sessions", ("bid",), q11, Q11_SQL,
          ("bidder", "bid_count", "window_start", "window_end"), windowed=True),
]
