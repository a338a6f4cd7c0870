"""Hot items, slowed down so that you can kill a worker and watch the job recover.

    rheostat run examples/recovery.py -p 2 --checkpoint-interval 1s --checkpoint-dir out/chk

While it runs (about 20 s), kill one worker from another terminal:

    pkill -9 -n -f rheostat.backends.local.worker

The controller notices, restarts the job from its latest checkpoint and carries on; the
Parquet output in out/recovery/ holds every window exactly once.
"""

import rheostat as rs

flow = rs.Flow("recovery")
bids = flow.source(
    "bids", rs.sources.nexmark(events=4_000_000, kind="bid"),
    timestamp="date_time", out_of_order="2s", rate=200_000,
)
counts = (bids.key_by("auction")
              .window(rs.windows.sliding(size="10s", slide="2s"))
              .aggregate(bids=rs.agg.count()))
counts.sink("out", rs.sinks.parquet("out/recovery/"))
