"""A slow sink slows the source: memory stays bounded by channel credits, not input size."""

import time

import numpy as np
import pyarrow as pa

import rheostat as rs
from rheostat.runtime.io import Sink, SinkWriter, Source, SourceReader

ROWS_PER_BATCH = 500_000  # 4 MB of int64 per batch
BATCHES_PER_SPLIT = 100  # 800 MB in all over two splits


class BigBatches(Source):
    def splits(self, parallelism):
        return [0, 1]

    def open(self, split, position=None, batch_size=0):
        return _BigReader(position or 0)


class _BigReader(SourceReader):
    def __init__(self, start):
        self.i = start

    def read(self):
        if self.i >= BATCHES_PER_SPLIT:
            return None
        self.i += 1
        return pa.record_batch({"x": np.full(ROWS_PER_BATCH, self.i, dtype=np.int64)})

    def position(self):
        return self.i


class SlowSink(Sink):
    def __init__(self):
        self.rows = 0

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.rows = 0

    def open(self, ctx):
        return _SlowWriter(ctx)

    def on_driver_data(self, batch):
        self.rows += batch.column(0)[0].as_py()


class _SlowWriter(SinkWriter):
    def __init__(self, ctx):
        self.ctx, self.rows = ctx, 0

    def write(self, batch):
        time.sleep(0.02)
        self.rows += batch.num_rows

    def close(self):
        self.ctx.send_to_driver(pa.record_batch({"rows": [self.rows]}))


def test_slow_sink_bounds_worker_memory(local_workers):
    flow = rs.Flow("backpressure")
    sink = SlowSink()
    flow.source("big", BigBatches(), parallelism=2).rebalance().sink("slow", sink, parallelism=1)
    peak = [0]

    def sample(plan, metrics, elapsed):
        rss = sum(p.memory_info().rss for p in local_workers())
        peak[0] = max(peak[0], rss)

    result = rs.run(flow, backend="local", parallelism=2, workers=2,
                    channel_capacity_bytes=8 << 20, progress=sample)
    assert sink.rows == 2 * BATCHES_PER_SPLIT * ROWS_PER_BATCH
    # 800 MB went through; two workers with pyarrow loaded hold far less than that.
    assert 0 < peak[0] < 450 << 20, f"peak worker RSS {peak[0] >> 20} MiB"
    source_bp = sum(m.backpressure_s for t, m in result.metrics.items() if t.startswith("big#"))
    assert source_bp > 0  # the sources were held back by missing credit
