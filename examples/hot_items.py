"""Nexmark "hot items": bids per auction over sliding windows.

Every 2 seconds of event time, count each auction's bids in the last 10 seconds and write
the counts to Parquet. Run it with the CLI (progress and a summary)::

    rheostat run examples/hot_items.py --parallelism 2

or as a script, which empties ``out/hot-items/`` first and prints the hottest auctions
it found at the end::

    python examples/hot_items.py
"""

import shutil

import rheostat as rs

OUT = "out/hot-items/"

flow = rs.Flow("hot-items")
bids = flow.source(
    "bids",
    rs.sources.nexmark(events=1_000_000, kind="bid"),
    timestamp="date_time",
    out_of_order="2s",
)
counts = (
    bids.key_by("auction")
    .window(rs.windows.sliding(size="10s", slide="2s"))
    .aggregate(bids=rs.agg.count())
)
counts.sink("out", rs.sinks.parquet(OUT))


def show_hot_items(path: str = OUT, top: int = 5) -> None:
    """Print the ``top`` auctions by their busiest 10-second window."""
    import pyarrow.parquet as pq

    counts = pq.read_table(path)
    best = counts.group_by("auction").aggregate([("bids", "max"), ("window_end", "count")])
    best = best.sort_by([("bids_max", "descending"), ("auction", "ascending")])
    print(f"\nHottest auctions ({counts.num_rows:,} window counts in {path}):")
    for row in best.slice(0, top).to_pylist():
        print(f"  auction {row['auction']}: up to {row['bids_max']} bids in 10 s "
              f"(bids seen in {row['window_end_count']} windows)")


if __name__ == "__main__":
    # The Parquet sink adds files beside existing ones: start from an empty directory.
    shutil.rmtree(OUT, ignore_errors=True)
    rs.run(flow, parallelism=2, progress=True)
    show_hot_items()
