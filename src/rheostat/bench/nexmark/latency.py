"""End-to-end latency: a source paced to the wall clock and a sink that times results.

**Definition.** In a latency run the generator's event time *is* wall-clock time: event
``n`` happens at ``anchor + n / rate`` seconds (``first_event_rate = rate`` and
``base_time_ms = anchor``, a moment chosen a little after start-up), and the paced source
hands a batch to the engine only once the wall clock has reached its newest event — no
event enters before it happens. Every output row carries rheostat's own event time
(``_ts``): for a stateless step the input row's time, for a join the newer of the pair,
for a keyed process the newest row of its key in the batch or the timer's time, and for
a window ``window_end - 1`` — the instant after which the result could be known. The
latency of an output row is the wall-clock time at the sink minus that event time. It
therefore includes the batching of the source (``batch_ms``), the watermark delay
(``out_of_order``), queues, exchanges and the operators' work.

Results due in the last second of event time are left out: they may be flushed by the
end-of-input watermark rather than by the data (which would make them look early).

Latencies are kept as a histogram of 0.1 ms buckets per sink task and merged in the
driver.

>>> h = LatencyHistogram()
>>> h.add(np.array([1.0, 2.0, 2.0, 9.0]))
>>> h.quantile(0.5), h.quantile(1.0), h.count
(2.0, 9.0, 4)
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rheostat.bench.nexmark.common import EVENT_TIME
from rheostat.runtime.io import Sink, SinkContext, SinkWriter, SourceReader, WrappedSource

_STAMP = "__bench_event_ms"
_RESOLUTION = 10  # buckets per millisecond


def now_ms() -> float:
    return time.time() * 1000.0


# ---------------------------------------------------------------- the paced source


class Paced(WrappedSource):
    """Wraps a generator whose event times are wall-clock ms: a batch is released only
    once ``time.time()`` has reached its newest event (until then the reader says "no
    batch ready", and the task does other work or waits)."""

    def __init__(self, inner: Any, column: str = "date_time") -> None:
        super().__init__(inner)
        self.column = column

    def wrap(self, reader: SourceReader) -> SourceReader:
        return PacedReader(reader, self.column)

    def __repr__(self) -> str:
        return f"paced({self.inner!r})"


class PacedReader(SourceReader):
    def __init__(self, inner: SourceReader, column: str) -> None:
        self.inner = inner
        self.column = column
        self._held: pa.RecordBatch | None = None
        self._due = 0.0

    def read(self) -> pa.RecordBatch | None:
        if self._held is None:
            batch = self.inner.read()
            if batch is None or batch.num_rows == 0:
                return batch
            self._held = batch
            newest = pc.max(batch.column(self.column)).cast(pa.int64()).as_py()
            self._due = float(newest)
        if now_ms() < self._due:
            return self._held.slice(0, 0)
        batch, self._held = self._held, None
        return batch

    def position(self) -> Any:
        # No checkpoints use it here; while a batch is held the inner reader is one ahead.
        return self.inner.position()

    def close(self) -> None:
        self.inner.close()


# ---------------------------------------------------------------- the timing sink


def stamp_event_time(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Copy the hidden event time into a visible column, so the sink can read it."""
    return batch.append_column(_STAMP, batch.column(EVENT_TIME))


class LatencyHistogram:
    """Counts of latencies in 0.1 ms buckets (negative latencies clip to 0)."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def add(self, latencies_ms: np.ndarray) -> None:
        buckets = np.maximum(np.rint(latencies_ms * _RESOLUTION), 0).astype(np.int64)
        values, counts = np.unique(buckets, return_counts=True)
        for v, c in zip(values.tolist(), counts.tolist()):
            self.counts[v] = self.counts.get(v, 0) + c

    def merge(self, buckets: list[int], counts: list[int]) -> None:
        for v, c in zip(buckets, counts):
            if v is None or c is None:
                continue
            self.counts[v] = self.counts.get(v, 0) + c

    def quantile(self, q: float) -> float | None:
        if not self.counts:
            return None
        keys = sorted(self.counts)
        cum = np.cumsum([self.counts[k] for k in keys])
        i = int(np.searchsorted(cum, q * cum[-1], side="left"))
        return keys[min(i, len(keys) - 1)] / _RESOLUTION

    def summary(self) -> dict[str, Any]:
        n = self.count
        if not n:
            return {"rows": 0}
        mean = sum(k * c for k, c in self.counts.items()) / n / _RESOLUTION
        return {"rows": n, "p50_ms": self.quantile(0.5), "p90_ms": self.quantile(0.9),
                "p99_ms": self.quantile(0.99), "max_ms": max(self.counts) / _RESOLUTION,
                "mean_ms": round(mean, 2)}


class LatencySink(Sink):
    """Times every row against its event time; the driver holds the merged histogram."""

    def __init__(self, cutoff_ms: int) -> None:
        self.cutoff_ms = cutoff_ms
        self.histogram = LatencyHistogram()
        self.left_out = 0
        self.results: set[int] = set()

    def open(self, ctx: SinkContext) -> SinkWriter:
        return _LatencyWriter(ctx, self.cutoff_ms)

    def on_driver_data(self, batch: pa.RecordBatch) -> None:
        d = batch.to_pydict()
        self.histogram.merge(d["bucket"], d["count"])
        self.left_out += d["left_out"][0] if d["left_out"] else 0
        self.results.update(v for v in d["results"] if v is not None)

    def summary(self) -> dict[str, Any]:
        return {**self.histogram.summary(), "left_out_rows": self.left_out,
                "distinct_event_times": len(self.results)}

    def __repr__(self) -> str:
        return f"latency_sink(cutoff_ms={self.cutoff_ms})"


class _LatencyWriter(SinkWriter):
    def __init__(self, ctx: SinkContext, cutoff_ms: int) -> None:
        self.ctx = ctx
        self.cutoff_ms = cutoff_ms
        self.histogram = LatencyHistogram()
        self.left_out = 0
        self.results: set[int] = set()

    def write(self, batch: pa.RecordBatch) -> None:
        arrived = now_ms()
        ts = batch.column(_STAMP).to_numpy()
        counted = ts <= self.cutoff_ms
        self.left_out += int(len(ts) - counted.sum())
        if counted.any():
            ts = ts[counted]
            self.histogram.add(arrived - ts.astype(np.float64))
            if len(self.results) < 100_000:
                self.results.update(np.unique(ts).tolist())

    def close(self) -> None:
        keys = list(self.histogram.counts)
        results = list(self.results)
        n = max(len(keys), len(results), 1)
        pad = [None] * n
        self.ctx.send_to_driver(pa.record_batch({
            "bucket": pa.array((keys + pad)[:n], pa.int64()),
            "count": pa.array(([self.histogram.counts[k] for k in keys] + pad)[:n], pa.int64()),
            "left_out": pa.array([self.left_out] + [None] * (n - 1), pa.int64()),
            "results": pa.array((results + pad)[:n], pa.int64()),
        }))

