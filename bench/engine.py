"""Engine-core figures: Nexmark bids through rheostat against the in-process limit.

For each case the same bids are (1) run through ``rs.run`` on local worker processes,
generator to discarding sink, and (2) computed in this process in one go by DuckDB over
the pre-built table (the speed a vectorised engine on this machine cannot beat). Both
are timed in the same session; the ratio is what to compare across machines.

    python bench/engine.py --events 5000000 --parallelism 2
"""

from __future__ import annotations

import argparse
import json
import time

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

import rheostat as rs

CASES = {
    "passthrough": "select * from bids",
    "currency": "select auction, bidder, price * 0.908 as price, date_time from bids",
    "sliding_count": """
        with w as (select auction,
          unnest(range(epoch_ms(date_time::timestamp) // 2000 * 2000 - 8000,
                       epoch_ms(date_time::timestamp) // 2000 * 2000 + 1, 2000)) as ws from bids)
        select auction, ws, count(*) as bids from w group by all""",
}


def to_euros(batch: pa.RecordBatch) -> pa.RecordBatch:
    i = batch.schema.get_field_index("price")
    return batch.set_column(i, "price", pc.multiply(batch.column(i), 0.908))


def build(case: str, events: int) -> tuple[rs.Flow, rs.sinks.NullSink]:
    flow = rs.Flow(case)
    sink = rs.sinks.null()
    bids = flow.source("bids", rs.sources.nexmark(events=events, kind="bid"),
                       timestamp="date_time", out_of_order="2s")
    if case == "passthrough":
        out = bids
    elif case == "currency":
        out = bids.map_batches(to_euros, name="euros")
    else:
        out = (bids.key_by("auction").window(rs.windows.sliding(size="10s", slide="2s"))
               .aggregate(bids=rs.agg.count()))
    out.sink("out", sink)
    return flow, sink


def engine_rate(case: str, events: int, parallelism: int) -> tuple[float, int]:
    flow, sink = build(case, events)
    started = time.perf_counter()
    result = rs.run(flow, parallelism=parallelism)
    elapsed = time.perf_counter() - started
    bids = result.rows_in("bids")
    return bids / elapsed, sink.rows


def limit_rate(case: str, events: int) -> tuple[float, int]:
    bids = rs.sources.nexmark(events=events, kind="bid").to_table()  # DuckDB reads it by name
    con = duckdb.connect()
    con.execute("set threads to 1")  # one core per engine task: compare like with like
    started = time.perf_counter()
    rows = con.sql(CASES[case]).to_arrow_table().num_rows  # materialised, as output
    elapsed = time.perf_counter() - started
    return bids.num_rows / elapsed, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    args = ap.parse_args()
    for case in args.cases:
        engine, engine_rows = engine_rate(case, args.events, args.parallelism)
        limit, limit_rows = limit_rate(case, args.events)
        print(json.dumps({
            "case": case, "events": args.events, "parallelism": args.parallelism,
            "engine_bids_per_s": round(engine), "duckdb_1_thread_bids_per_s": round(limit),
            "ratio": round(engine / limit, 3), "rows_out": engine_rows,
            "rows_out_match": engine_rows == limit_rows,
        }))


if __name__ == "__main__":
    main()
