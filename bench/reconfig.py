"""Live reconfiguration: latency disruption of rescale / key-group move / function update,
against a stop-and-restart from a checkpoint (the Flink way), in one session.

    python bench/reconfig.py --seconds 6 --keys 50000 --state-mb 20

Job (local backend, 2 workers): an endless synthetic source (2 tasks) paced to the wall
clock -- row ``n`` has event time ``anchor + n / rate`` ms and is released only once the
clock reaches it, so event time is the ingest time -> ``key_by("key")`` -> ``hold``, a
keyed process keeping ``(count, pad)`` per key (``--state-mb`` over ``--keys`` keys) and
emitting one row per input row with its event time -> a sink that sends (event time,
arrival time) to the driver at once. Latency of a row = arrival at the sink - event time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import tempfile
import threading
import time
from typing import Any

import numpy as np
import pyarrow as pa

import rheostat as rs
from rheostat.bench.nexmark.latency import now_ms
from rheostat.runtime.io import Sink, SinkContext, SinkWriter, Source, SourceReader

BIN_MS = 50


class PacedReader(SourceReader):
    """A synthetic chunk reader that reads a chunk only once its newest row is due."""

    def __init__(self, inner: Any, start_ms: int, per_ms: float, schema: pa.Schema) -> None:
        self.inner, self.start_ms, self.per_ms = inner, start_ms, per_ms
        self.empty = pa.RecordBatch.from_pylist([], schema=schema)

    def read(self) -> pa.RecordBatch | None:
        chunk, size = self.inner.position()
        if now_ms() < self.start_ms + ((chunk + 1) * size - 1) / self.per_ms:
            return self.empty
        return self.inner.read()

    def position(self) -> Any:
        return self.inner.position()  # nothing held back: resumable as the inner reader

    def close(self) -> None:
        self.inner.close()


class Paced(Source):
    def __init__(self, keys: int, start_ms: int, rate: float) -> None:
        self.inner = rs.sources.synthetic(None, keys=keys, zipf=0, value_columns=0,
                                          start_ms=start_ms, events_per_ms=rate / 1000)
        self.start_ms, self.per_ms = start_ms, rate / 1000

    @property
    def bounded(self) -> bool:  # type: ignore[override]
        return False

    def schema(self) -> pa.Schema:
        return self.inner.schema()

    def splits(self, parallelism: int) -> Any:
        return self.inner.splits(parallelism)

    def open(self, split: Any, position: Any = None, batch_size: int = 65_536) -> SourceReader:
        return PacedReader(self.inner.open(split, position, batch_size), self.start_ms,
                           self.per_ms, self.inner.schema())


class Hold(rs.KeyedProcess):
    schema = pa.schema([("ingest_ms", pa.int64())])

    def __init__(self, pad: int, version: int = 1) -> None:
        self.pad, self.version = pad, version

    def process(self, key: Any, rows: list[dict], ctx: Any) -> list[dict]:
        n, pad = ctx.state.get((0, None))
        ctx.state.set((n + len(rows), pad if pad is not None else bytes(self.pad)))
        return [{"ingest_ms": t} for t in ctx.timestamps]


class LatencySink(Sink):
    """Sends ``(event time, count, arrival)`` per sink batch to the driver at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.parts: list[pa.RecordBatch] = []

    def open(self, ctx: SinkContext) -> SinkWriter:
        return _Writer(ctx)

    def on_driver_data(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            with self.lock:
                self.parts.append(batch)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(event time, arrival) per row, sorted by arrival."""
        with self.lock:
            t = pa.Table.from_batches(self.parts) if self.parts else None
        if t is None:
            return np.zeros(0), np.zeros(0)
        n = t["count"].to_numpy()
        ing = np.repeat(t["ingest"].to_numpy().astype(float), n)
        arr = np.repeat(t["arrived"].to_numpy(), n)
        order = np.argsort(arr, kind="stable")
        return ing[order], arr[order]

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]


class _Writer(SinkWriter):
    def __init__(self, ctx: SinkContext) -> None:
        self.ctx = ctx

    def write(self, batch: pa.RecordBatch) -> None:
        arrived = now_ms()
        if batch.num_rows:
            u, c = np.unique(batch.column("ingest_ms").to_numpy(), return_counts=True)
            self.ctx.send_to_driver(pa.record_batch(  # type: ignore[arg-type]
                {"ingest": u, "count": c, "arrived": np.full(len(u), arrived)}), None)


def build(args: argparse.Namespace, sink: LatencySink, start_ms: int, rate: float) -> rs.Flow:
    flow = rs.Flow("reconfig-bench")
    src = flow.source("src", Paced(args.keys, start_ms, rate), timestamp="ts",
                      batch_size=args.batch, parallelism=2)
    src.key_by("key").process(Hold(args.state_mb * 2**20 // args.keys), name="hold").sink(
        "out", sink)
    return flow


def stats(lat: np.ndarray) -> dict[str, Any]:
    if not len(lat):
        return {"rows": 0}
    p50, p99 = np.percentile(lat, [50, 99])
    return {"rows": len(lat), "p50_ms": round(p50, 1), "p99_ms": round(p99, 1),
            "max_ms": round(float(lat.max()), 1)}


def disruption(ing: np.ndarray, arr: np.ndarray, t0: float, t1: float, thr: float) -> float:
    """Seconds of 50 ms arrival bins in [t0, t1) with no output or median latency > thr."""
    edges = np.arange(t0, t1 + BIN_MS, BIN_MS)
    idx = np.searchsorted(arr, edges)
    bad = sum(1 for a, b in itertools.pairwise(idx)
              if b == a or np.median(arr[a:b] - ing[a:b]) > thr)
    return bad * BIN_MS / 1000


def longest_gap(arr: np.ndarray, t0: float, t1: float) -> float:
    a = np.concatenate([[t0], arr[(arr >= t0) & (arr < t1)], [t1]])
    return round(float(np.diff(a).max()) / 1000, 3)


def steady(sink: LatencySink, since: float, until: float) -> dict[str, Any]:
    ing, arr = sink.arrays()
    sel = (ing >= since) & (ing < until)
    return stats(arr[sel] - ing[sel])


def around(sink: LatencySink, name: str, t0: float, t1: float, until: float, thr: float,
           ms: float | None, status: str) -> dict[str, Any]:
    ing, arr = sink.arrays()
    sel = (ing >= t0) & (ing <= t1 + 1000)
    return {"change": name, "status": status, "duration_ms": ms,
            "wall_ms": round(t1 - t0), **stats(arr[sel] - ing[sel]),
            "gap_s": longest_gap(arr, t0, until),
            "disruption_s": disruption(ing, arr, t0, until, thr)}


def max_rate(args: argparse.Namespace) -> float:
    sink = LatencySink()
    job = rs.start(build(args, sink, int(now_ms()) - 10**9, 1e9), parallelism=2, workers=2)
    time.sleep(args.seconds + 4)
    job.cancel()
    job.wait()
    _, arr = sink.arrays()
    arr = arr[arr >= arr[0] + 3000] if len(arr) else arr
    return len(arr) / max((arr[-1] - arr[0]) / 1000, 1e-3) if len(arr) > 1 else 0.0


def live(args: argparse.Namespace, rate: float) -> tuple[dict, list[dict]]:
    sink = LatencySink()
    anchor = int(now_ms()) + 2000
    job = rs.start(build(args, sink, anchor, rate), parallelism=2, workers=2,
                   reconfig_batch_groups=args.batch_groups)
    time.sleep(2 + args.warmup + args.seconds)
    base = steady(sink, anchor + args.warmup * 1000, now_ms())
    ops = [("rescale 2->4", lambda: job.rescale("hold", 4)),
           ("rescale 4->2", lambda: job.rescale("hold", 2)),
           ("move 1024 key groups", lambda: job.move_key_groups("hold", range(0, 1024), 1)),
           ("update function", lambda: job.update_function("hold", Hold(
               args.state_mb * 2**20 // args.keys, 2)))]
    marks = []
    for name, op in ops:
        t0 = now_ms()
        try:
            r = op()
            status, ms = r["status"], r.get("duration_ms")
            if r.get("reason"):
                status += f": {r['reason']}"
        except Exception as exc:  # reported; the bench goes on
            status, ms = f"error: {exc!r}", None
        marks.append((name, t0, now_ms(), ms, status))
        time.sleep(args.seconds)
    job.cancel()
    job.wait()
    ends = [m[1] for m in marks[1:]] + [marks[-1][2] + args.seconds * 1000]
    rows = [around(sink, n, t0, t1, end, base.get("p99_ms", 0), ms, st)
            for (n, t0, t1, ms, st), end in zip(marks, ends)]
    return base, rows


def restart(args: argparse.Namespace, rate: float) -> tuple[dict, list[dict]]:
    sink, directory = LatencySink(), tempfile.mkdtemp(prefix="rheostat-reconfig-")
    anchor = int(now_ms()) + 2000
    flow = build(args, sink, anchor, rate)
    opts: dict[str, Any] = {"workers": 2, "checkpoint_interval": "1s",
                            "checkpoint_dir": directory}
    try:
        job = rs.start(flow, parallelism=2, **opts)
        time.sleep(2 + args.warmup + args.seconds)
        base = steady(sink, anchor + args.warmup * 1000, now_ms())
        marks = []
        for p in (4, 2):
            t0 = now_ms()
            job.cancel()
            job.wait()
            job = rs.start(build(args, sink, anchor, rate), parallelism=p, resume=True, **opts)
            marks.append((f"restart at p={p}", t0))
            time.sleep(args.seconds)
        job.cancel()
        job.wait()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    ing, arr = sink.arrays()
    rows = []
    for i, (name, t0) in enumerate(marks):
        end = marks[i + 1][1] if i + 1 < len(marks) else t0 + args.seconds * 1000
        after = arr[(arr > t0) & (ing > t0)]  # first output of a row ingested after the stop
        t1 = float(after[0]) if len(after) else end
        rows.append(around(sink, name, t0, t1, end, base.get("p99_ms", 0), None, "restarted"))
    return base, rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=6, help="steady state and each wait")
    ap.add_argument("--warmup", type=float, default=4)
    ap.add_argument("--rate", type=float, default=None, help="rows/s (default: 70%% of max)")
    ap.add_argument("--keys", type=int, default=50_000)
    ap.add_argument("--state-mb", type=int, default=20)
    ap.add_argument("--batch", type=int, default=500, help="source batch rows")
    ap.add_argument("--batch-groups", type=int, default=512,
                    help="key groups per migration stage (0: one stage)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the restart baseline")
    args = ap.parse_args(argv)
    print(json.dumps({"python": platform.python_version(), "pyarrow": pa.__version__,
                      "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
                      **vars(args)}), flush=True)
    rate = args.rate
    if rate is None:
        top = max_rate(args)
        rate = round(0.7 * top)
        print(json.dumps({"max_rows_per_s": round(top), "rate": rate}), flush=True)
    lbase, lrows = live(args, rate)
    print(json.dumps({"live_steady": lbase}), flush=True)
    for r in lrows:
        print(json.dumps(r), flush=True)
    if args.no_baseline:
        return
    bbase, brows = restart(args, rate)
    print(json.dumps({"restart_steady": bbase}), flush=True)
    for r in brows:
        print(json.dumps(r), flush=True)
    print(f"\n{'change':<22}{'ms':>7}{'p50':>8}{'p99':>8}{'max':>8}{'gap s':>7}{'disr s':>8}")
    for r in lrows + brows:
        print(f"{r['change']:<22}{r['duration_ms'] or r['wall_ms']:>7.0f}"
              f"{r.get('p50_ms', 0):>8}{r.get('p99_ms', 0):>8}{r.get('max_ms', 0):>8}"
              f"{r['gap_s']:>7}{r['disruption_s']:>8}")
    lr = {r["change"][-4:]: r["disruption_s"] for r in lrows[:2]}
    for r in brows:
        key = "2->4" if r["change"].endswith("4") else "4->2"
        ratio = r["disruption_s"] / lr[key] if lr.get(key) else float("inf")
        print(f"disruption restart/live {key}: {r['disruption_s']} s / {lr.get(key)} s "
              f"= {ratio:.1f}x")


if __name__ == "__main__":
    main()
