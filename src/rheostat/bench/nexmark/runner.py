"""The Nexmark runner: throughput, latency and memory against the in-process limit.

For each query:

1. **Throughput.** The query runs through :func:`rheostat.run` on local worker processes,
   generator to a discarding sink, as fast as it can. *events/s* is the number of Nexmark
   events the run covers divided by the elapsed time (start-up included, as in
   ``bench/engine.py``); *source rows/s* counts the rows the query's sources read (bids
   are 46 of 50 events, persons 1, auctions 3). Peak memory is sampled through ``rs.run``'s
   ``progress=`` callback (about every 0.5 s): the largest sum of RSS over the worker
   processes, and the sum of each worker's own peak RSS (``VmHWM``).
2. **The in-process limit.** The same events, built in memory beforehand, go through the
   query's DuckDB SQL in this process in one batch, materialised to Arrow: with one
   thread (like one engine task) and with DuckDB's default threads. The ratio is
   rheostat's source rows/s over DuckDB's (same numerator, so it is the same for events/s).
3. **Latency** (``--rate``): a second run paced to the wall clock at ``rate`` events/s;
   see :mod:`rheostat.bench.nexmark.latency` for the definition.

    python -m rheostat.bench nexmark --query q5 --events 10000000 --parallelism 2
    python -m rheostat.bench nexmark --all --events 2000000 --rate 200000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import rheostat as rs
from rheostat.bench.nexmark import ORDER, QUERIES
from rheostat.bench.nexmark.common import SOURCE_STEPS, NexmarkConfig, Query, build_flow
from rheostat.bench.nexmark.latency import LatencySink, Paced, now_ms, stamp_event_time

MIB = 1 << 20


class MemorySampler:
    """A ``progress=`` callback that samples the RSS of this process's children (the
    local backend's workers)."""

    def __init__(self) -> None:
        import psutil

        self._me = psutil.Process()
        self.peak_sum = 0
        self.hwm: dict[int, int] = {}
        self.samples = 0

    def __call__(self, plan: Any, metrics: Any, elapsed: float) -> None:
        self.sample()

    def sample(self) -> None:
        import psutil

        total = 0
        for child in self._me.children(recursive=True):
            try:
                total += child.memory_info().rss
                self.hwm[child.pid] = max(self.hwm.get(child.pid, 0), _peak_rss(child.pid))
            except (psutil.Error, OSError):
                continue
        self.samples += 1
        self.peak_sum = max(self.peak_sum, total)

    def summary(self) -> dict[str, Any]:
        return {"peak_rss_sum_mib": round(self.peak_sum / MIB, 1),
                "peak_hwm_sum_mib": round(sum(self.hwm.values()) / MIB, 1),
                "workers_seen": len(self.hwm), "memory_samples": self.samples}


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's reaped children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _peak_rss(pid: int) -> int:
    """The process's peak resident set (``VmHWM``), in bytes; 0 where /proc lacks it."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# ---------------------------------------------------------------- one query


def run_throughput(query: Query, cfg: NexmarkConfig, parallelism: int,
                   workers: int | None = None) -> dict[str, Any]:
    """The query through rheostat as fast as it goes, generator to a discarding sink."""
    flow, out = build_flow(query, cfg)
    sink = rs.sinks.null()
    out.sink("out", sink)
    sampler = MemorySampler()
    load = os.getloadavg()[0]
    before = _children_cpu()
    started = time.perf_counter()
    result = rs.run(flow, parallelism=parallelism, workers=workers, progress=sampler)
    elapsed = time.perf_counter() - started
    cpu = _children_cpu() - before  # the workers, reaped by the backend when they stop
    source_rows = sum(result.rows_in(SOURCE_STEPS[k]) for k in query.kinds)
    counters = result.counters()
    return {
        "load_average_before": round(load, 2),
        "elapsed_s": round(elapsed, 3),
        "source_rows": source_rows,
        "events_per_s": round(cfg.events / elapsed),
        "source_rows_per_s": round(source_rows / elapsed),
        "worker_cpu_s": round(cpu, 3),
        "events_per_cpu_s": round(cfg.events / cpu) if cpu > 0 else None,
        "rows_out": sink.rows,
        "late": counters.get("late", 0) + counters.get("late_dropped", 0),
        "counters": counters,
        **sampler.summary(),
    }


def run_limit(query: Query, cfg: NexmarkConfig, threads: list[int | None],
              repeat: int = 1) -> dict[str, Any]:
    """The same query over the same events in DuckDB in this process; and, for scale, what
    generating the events costs one core (batches made and dropped, as a source does)."""
    from rheostat.bench.nexmark.reference import timed_answer

    replace(cfg, events=100_000).tables(query.kinds)  # warm the generator's caches
    started = time.perf_counter()
    for kind in query.kinds:
        reader = cfg.generator(kind).open((0, 1), batch_size=cfg.batch_size)
        while reader.read() is not None:
            pass
    generated = time.perf_counter() - started
    started = time.perf_counter()
    tables = cfg.tables(query.kinds)
    built = time.perf_counter() - started
    source_rows = sum(t.num_rows for t in tables.values())
    out: dict[str, Any] = {"generate_1_core_s": round(generated, 3),
                           "generate_1_core_rows_per_s": round(source_rows / generated),
                           "tables_built_s": round(built, 2)}
    for n in threads:
        label = f"duckdb_{n}_thread" if n else "duckdb_default_threads"
        cpu = time.process_time()
        seconds, result = timed_answer(query, tables, n, repeat)
        out[f"{label}_cpu_s"] = round((time.process_time() - cpu) / repeat, 3)
        out[f"{label}_s"] = round(seconds, 3)
        out[f"{label}_rows_per_s"] = round(source_rows / seconds)
        out["duckdb_rows_out"] = result.num_rows
    # One core generating the events and then querying them: the limit with generation.
    out["generate_and_duckdb_1_thread_rows_per_s"] = round(
        source_rows / (generated + out["duckdb_1_thread_s"]))
    return out


def run_latency(query: Query, cfg: NexmarkConfig, parallelism: int, rate: int,
                seconds: float, batch_ms: float, startup_s: float,
                workers: int | None = None) -> dict[str, Any]:
    """A run paced to the wall clock at ``rate`` events/s, timing every result."""
    events = int(rate * seconds)
    anchor = int(now_ms() + startup_s * 1000)
    paced = replace(cfg, events=events, first_event_rate=rate, base_time_ms=anchor,
                    batch_ms=batch_ms, wrap_source=Paced)
    last_event = anchor + (events - 1) * 1000 // rate
    cutoff = last_event - paced.out_of_order_ms - 1 - 1000
    flow, out = build_flow(query, paced, name=f"nexmark-{query.name}-latency")
    sink = LatencySink(cutoff)
    out.map_batches(stamp_event_time, name="latency.stamp").sink("out", sink)
    started = time.perf_counter()
    result = rs.run(flow, parallelism=parallelism, workers=workers)
    elapsed = time.perf_counter() - started
    source_rows = sum(result.rows_in(SOURCE_STEPS[k]) for k in query.kinds)
    counters = result.counters()
    return {"rate": rate, "events": events, "batch_ms": batch_ms, "elapsed_s": round(elapsed, 2),
            "kept_up": elapsed < seconds + startup_s + 2, "source_rows": source_rows,
            "late": counters.get("late", 0) + counters.get("late_dropped", 0),
            **sink.summary()}


def bench_query(query: Query, cfg: NexmarkConfig, args: argparse.Namespace) -> dict[str, Any]:
    record: dict[str, Any] = {"query": query.name, "title": query.title, "events": cfg.events,
                              "parallelism": args.parallelism,
                              "first_event_rate": cfg.first_event_rate, "seed": cfg.seed}
    if not args.no_throughput:
        # Start-up: the same query over 1,000 events (workers, imports, generator caches).
        tiny = run_throughput(query, replace(cfg, events=1_000), args.parallelism, args.workers)
        record["startup_s"], record["startup_cpu_s"] = tiny["elapsed_s"], tiny["worker_cpu_s"]
        runs = [run_throughput(query, cfg, args.parallelism, args.workers)
                for _ in range(max(1, args.repeat))]
        median = sorted(runs, key=lambda r: r["elapsed_s"])[len(runs) // 2]
        record.update(median)
        record["elapsed_all_s"] = [r["elapsed_s"] for r in runs]
        record["peak_rss_sum_mib"] = max(r["peak_rss_sum_mib"] for r in runs)
        record["peak_hwm_sum_mib"] = max(r["peak_hwm_sum_mib"] for r in runs)
        record["events_per_cpu_s_all"] = [r["events_per_cpu_s"] for r in runs]
    if not args.no_limit:
        threads: list[int | None] = [1, None]
        record.update(run_limit(query, cfg, threads, args.limit_repeat))
        if "source_rows_per_s" in record:
            for label in ("duckdb_1_thread", "duckdb_default_threads",
                          "generate_and_duckdb_1_thread"):
                record[f"ratio_{label}"] = round(
                    record["source_rows_per_s"] / record[f"{label}_rows_per_s"], 3)
            # Work per CPU second: robust when other jobs share the cores.
            if record.get("events_per_cpu_s"):
                record["cpu_ratio_duckdb_1_thread"] = round(
                    record["events_per_cpu_s"] * record["duckdb_1_thread_cpu_s"] / cfg.events, 3)
            if query.changelog is None:
                record["rows_out_match"] = record["rows_out"] == record["duckdb_rows_out"]
    if args.rate:
        record["latency"] = run_latency(query, cfg, args.parallelism, args.rate,
                                        args.latency_seconds, args.latency_batch_ms,
                                        args.startup_s, args.workers)
    return record


# ---------------------------------------------------------------- the command line


def machine() -> dict[str, Any]:
    import duckdb
    import numpy
    import pyarrow

    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "python": platform.python_version(), "pyarrow": pyarrow.__version__,
        "duckdb": duckdb.__version__, "numpy": numpy.__version__, "rheostat": rs.__version__,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    try:
        root = Path(rs.__file__).resolve().parents[2]
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        info["commit"] = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--query", action="append", default=[],
                    help="query to run (q0 q1 q2 q3 q4 q5 q7 q8 q11); repeat or comma-separate")
    ap.add_argument("--all", action="store_true", help="run every query")
    ap.add_argument("--events", type=int, default=10_000_000,
                    help="Nexmark events (all kinds; bids are 46 of 50)")
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--first-event-rate", type=int, default=10_000_000,
                    help="events per second of event time (the generator's default, Flink's)")
    ap.add_argument("--out-of-order-ms", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=65_536)
    ap.add_argument("--json", type=Path, default=None, help="write the records to this file")
    ap.add_argument("--no-limit", action="store_true", help="skip the DuckDB reference")
    ap.add_argument("--no-throughput", action="store_true", help="skip the throughput run")
    ap.add_argument("--repeat", type=int, default=1,
                    help="throughput runs per query; the median counts")
    ap.add_argument("--limit-repeat", type=int, default=1,
                    help="DuckDB runs per setting; the best counts")
    ap.add_argument("--rate", type=int, default=None,
                    help="also run paced to the wall clock at this many events/s and "
                         "report end-to-end latency")
    ap.add_argument("--latency-seconds", type=float, default=30.0)
    ap.add_argument("--latency-batch-ms", type=float, default=5.0,
                    help="event time per source batch in the latency run")
    ap.add_argument("--startup-s", type=float, default=2.0,
                    help="latency run: event time starts this long after submission")


def run_cli(args: argparse.Namespace) -> int:
    names = ORDER if args.all else [n for q in args.query for n in q.split(",") if n]
    unknown = [n for n in names if n not in QUERIES]
    if not names or unknown:
        print(f"give --all or --query among {', '.join(ORDER)}"
              + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
        return 2
    cfg = NexmarkConfig(events=args.events, seed=args.seed,
                        first_event_rate=args.first_event_rate,
                        out_of_order_ms=args.out_of_order_ms, batch_size=args.batch_size)
    info = machine()
    print(json.dumps({"machine": info}))
    records = []
    for name in names:
        record = bench_query(QUERIES[name], cfg, args)
        record["machine"] = info
        records.append(record)
        print(json.dumps({k: v for k, v in record.items() if k != "machine"}), flush=True)
    print()
    print(table(records))
    if args.json:
        args.json.write_text(json.dumps(records, indent=2) + "\n")
    return 0


def table(records: list[dict[str, Any]]) -> str:
    """The records as a Markdown table."""
    def m(x: Any) -> str:
        return "-" if x is None else f"{x / 1e6:.2f} M"

    head = ("| query | events | events/s | source rows/s | events/CPU-s | DuckDB 1 thr rows/s "
            "| ratio | DuckDB all thr | ratio | generate + DuckDB 1 thr | ratio "
            "| peak RSS (MiB) | latency p50 / p99 (ms) |")
    lines = [head, "|" + "---|" * 13]
    for r in records:
        lat = r.get("latency") or {}
        lat_s = (f"{lat.get('p50_ms')} / {lat.get('p99_ms')} @ {m(lat.get('rate'))}"
                 if lat.get("rows") else "-")
        lines.append(
            f"| {r['query']} {r['title']} | {r['events'] / 1e6:g} M "
            f"| {m(r.get('events_per_s'))} | {m(r.get('source_rows_per_s'))} "
            f"| {m(r.get('events_per_cpu_s'))} | {m(r.get('duckdb_1_thread_rows_per_s'))} "
            f"| {r.get('ratio_duckdb_1_thread', '-')} "
            f"| {m(r.get('duckdb_default_threads_rows_per_s'))} "
            f"| {r.get('ratio_duckdb_default_threads', '-')} "
            f"| {m(r.get('generate_and_duckdb_1_thread_rows_per_s'))} "
            f"| {r.get('ratio_generate_and_duckdb_1_thread', '-')} "
            f"| {r.get('peak_rss_sum_mib', '-')} | {lat_s} |")
    return "\n".join(lines)
