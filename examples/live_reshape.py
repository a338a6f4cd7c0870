"""Hot items, paced so that you can reshape the job while it runs.

The same query as ``hot_items.py`` (bids per auction in sliding windows), but the source
is paced to 100,000 bids a second for two minutes. Start it::

    rheostat run examples/live_reshape.py --parallelism 2

and, from another terminal, change it while it runs::

    rheostat status live-hot-items
    rheostat rescale live-hot-items counts 4
    rheostat move live-hot-items counts 0-511 --to 1
    rheostat rescale live-hot-items counts 2
    rheostat sql live-hot-items "select * from reconfigurations"

``LIVE_RESHAPE_RATE`` and ``LIVE_RESHAPE_EVENTS`` change the pace and the length.
"""

import os

import rheostat as rs

RATE = float(os.environ.get("LIVE_RESHAPE_RATE", "100000"))
EVENTS = int(os.environ.get("LIVE_RESHAPE_EVENTS", "12000000"))

flow = rs.Flow("live-hot-items")
bids = flow.source(
    "bids",
    rs.sources.nexmark(events=EVENTS, kind="bid"),
    timestamp="date_time",
    out_of_order="2s",
    rate=RATE,
)
counts = (
    bids.key_by("auction")
    .window(rs.windows.sliding(size="10s", slide="2s"))
    .aggregate(name="counts", bids=rs.agg.count())
)
counts.sink("out", rs.sinks.parquet("out/live-hot-items/"))
