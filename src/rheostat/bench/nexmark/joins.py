"""Nexmark q3 (local item suggestion) and q8 (new users): joins of persons and auctions.

**q3** is a regular (non-windowed) streaming join: every auction of category 10 meets its
seller if the seller lives in Oregon, Idaho or California, whichever arrives first. It is
written as a keyed process over the union of the two (filtered, projected) streams,
keyed by the person id (``seller`` for auctions): per person the state is either the
person's name, city and state (once seen; kept for good, as Flink keeps both sides of a
regular join) or the auctions waiting for that person (an auction can name a seller the
generator has not created yet). Only people in the three states and auctions of category
10 reach the keyed step, so it runs Python on about 2 % of the events.

**q8** is a tumbling-window join: people who created an account and opened an auction in
the same 10 s window. The auctions are first reduced to one row per seller and window
(a window count, as Flink's ``GROUP BY seller, window``), then joined with the people in
the same tumbling window.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

import rheostat as rs
from rheostat.bench.nexmark.common import EVENT_TIME, NexmarkConfig, Query

# ---------------------------------------------------------------- q3

Q3_STATES = ("OR", "ID", "CA")
Q3_CATEGORY = 10
#: The union's columns: the person id is the key; persons fill name/city/state, auctions id.
SUGGESTION = pa.schema([("person", pa.int64()), ("name", pa.string()), ("city", pa.string()),
                        ("state", pa.string()), ("id", pa.int64()), (EVENT_TIME, pa.int64())])


def local_sellers(batch: pa.RecordBatch) -> pa.RecordBatch:
    """People in OR, ID or CA, in the union's columns."""
    rows = batch.filter(pc.is_in(batch.column("state"), pa.array(Q3_STATES)))
    return pa.record_batch([
        rows.column("id"), rows.column("name"), rows.column("city"), rows.column("state"),
        pa.nulls(rows.num_rows, pa.int64()), rows.column(EVENT_TIME),
    ], schema=SUGGESTION)


def category_10(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Auctions of category 10, in the union's columns."""
    rows = batch.filter(pc.equal(batch.column("category"), Q3_CATEGORY))
    nulls = pa.nulls(rows.num_rows, pa.string())
    return pa.record_batch([
        rows.column("seller"), nulls, nulls, nulls, rows.column("id"), rows.column(EVENT_TIME),
    ], schema=SUGGESTION)


class LocalItemSuggestion(rs.KeyedProcess):
    """Keyed by person id: a regular inner join of the person with their auctions."""

    schema = pa.schema([("name", pa.string()), ("city", pa.string()), ("state", pa.string()),
                        ("id", pa.int64())])

    def process(self, key: Any, rows: list[dict], ctx: Any) -> list[dict]:
        state = ctx.state.get()  # {"person": row} once the person came, else pending ids
        out = []
        for row in rows:
            if row["id"] is None:  # the person
                pending = [] if state is None else state.get("pending", [])
                state = {"person": row}
                out += [self._pair(row, auction) for auction in pending]
            elif state is not None and "person" in state:
                out.append(self._pair(state["person"], row["id"]))
            else:
                state = state or {"pending": []}
                state["pending"].append(row["id"])
        ctx.state.set(state)
        return out

    @staticmethod
    def _pair(person: dict, auction: int) -> dict:
        return {"name": person["name"], "city": person["city"], "state": person["state"],
                "id": auction}


def q3(streams: dict[str, rs.Stream], cfg: NexmarkConfig) -> rs.Stream:
    people = streams["person"].map_batches(local_sellers, name="q3.people")
    auctions = streams["auction"].map_batches(category_10, name="q3.auctions")
    return (people.union(auctions, name="q3.union").key_by("person")
            .process(LocalItemSuggestion(), name="q3.join"))


Q3_SQL = """
select p.name, p.city, p.state, a.id
from auction a join person p on a.seller = p.id
where a.category = 10 and p.state in ('OR', 'ID', 'CA')
"""

# ---------------------------------------------------------------- q8

Q8_SIZE_MS = 10_000


def person_names(batch: pa.RecordBatch) -> pa.RecordBatch:
    return batch.select(["id", "name"])


def window_sellers(batch: pa.RecordBatch) -> pa.RecordBatch:
    """One row per seller and window, keyed like a person (``id``)."""
    return pa.record_batch([batch.column("seller"), batch.column(EVENT_TIME)],
                           names=["id", EVENT_TIME])


def q8(streams: dict[str, rs.Stream], cfg: NexmarkConfig) -> rs.Stream:
    window = rs.windows.tumbling(Q8_SIZE_MS)
    people = streams["person"].map_batches(person_names, name="q8.people")
    sellers = (streams["auction"].key_by("seller").window(window)
               .aggregate(auctions=rs.agg.count(), name="q8.sellers")
               .map_batches(window_sellers, name="q8.seller_ids"))
    return people.key_by("id").join(sellers.key_by("id"), window=window, name="q8.join")


Q8_SQL = f"""
with p as (select distinct id, name,
                  epoch_ms(date_time::timestamp) // {Q8_SIZE_MS} * {Q8_SIZE_MS} as ws
           from person),
a as (select distinct seller, epoch_ms(date_time::timestamp) // {Q8_SIZE_MS} * {Q8_SIZE_MS} as ws
      from auction)
select p.id, p.name, p.ws as window_start, p.ws + {Q8_SIZE_MS} as window_end
from p join a on p.id = a.seller and p.ws = a.ws
"""

QUERIES = [
    Query("q3", "local item suggestion", ("person", "auction"), q3, Q3_SQL,
          ("name", "city", "state", "id")),
    Query("q8", "new users", ("person", "auction"), q8, Q8_SQL,
          ("id", "name", "window_start", "window_end"), windowed=True),
]
