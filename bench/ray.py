"""Ray backend figures: per-batch transport cost, engine throughput Ray vs local, scaling.

    python bench/ray.py                       # all three parts: 4-6 minutes on 2 shared cores
    python bench/ray.py --quick               # one round of smaller runs: about 2 minutes
    python bench/ray.py --parts scaling --workers 1,2,4,8

Everything runs in one process against one Ray instance it starts here (``address=
"local"``, never a cluster already running), left to settle before anything is timed;
every Ray figure comes with a reference measured in the same session, because the
machine is shared and noisy. The runs of a comparison alternate (local, Ray, Ray, local
...) over ``--rounds`` rounds and the medians are reported.

1. **transport**: one Arrow IPC buffer of each size moved from one process to another,
   framed as the engine frames it (a 13-byte header frame, then the payload frame),
   receiver decoding the batch: (i) the frames as the argument of an ordered actor call,
   as ``RayWire`` sends them (up to 16 calls in flight, a threaded receiver actor);
   (ii) the payload ``ray.put`` by the sender and passed as a reference, ``ray.get`` by
   the receiver (``put_batches_from``); (iii) the local backend's wire: a socket pair
   (``multiprocessing`` Connection ``send_bytes``/``recv_bytes``) to a spawned process.
   Wall µs per batch and MB/s, and CPU µs per batch of the processes involved (sender,
   receiver and, for Ray, the raylet, which runs the object store).
2. **engine**: Nexmark queries through ``rs.run`` (generator to ``null()``) on
   ``backend="local"`` and on ``RayBackend()`` at the same parallelism and workers, plus
   ``shuffle`` (q0 behind a ``key_by`` exchange: the exchange's own cost). Each source
   reader logs (wall time, rows, its worker process's CPU time) per batch. *Steady
   rows/s* is the source rows read between 10 % and 90 % of the total over the time that
   took, so neither backend's start-up (process spawn vs actor creation) nor the drain
   counts; *rows per CPU-s* divides the same rows by the CPU time the worker processes
   used meanwhile, which other jobs on the machine disturb much less. *Start-up* is the
   time from ``rs.run`` to the first source batch.
3. **scaling**: one query at parallelism = workers = each of ``--workers``, both
   backends. On a machine with fewer cores than workers this shows oversubscription,
   not scaling efficiency.
"""

from __future__ import annotations

import os
import sys

# This file is named ray.py: running it puts bench/ first on sys.path, where it would
# shadow the ray package. Drop it before anything imports ray.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import struct  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import deque  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import pyarrow as pa  # noqa: E402
import ray  # noqa: E402

import rheostat as rs  # noqa: E402
from rheostat.backends.links import decode_batch, encode_batch  # noqa: E402
from rheostat.backends.ray.backend import RayBackend  # noqa: E402
from rheostat.bench.nexmark import QUERIES  # noqa: E402
from rheostat.bench.nexmark.common import NexmarkConfig, Query, build_flow  # noqa: E402
from rheostat.bench.nexmark.stateless import bid_columns  # noqa: E402
from rheostat.runtime.io import SourceReader, WrappedSource  # noqa: E402

KIB, MIB = 1 << 10, 1 << 20
_HEADER = "<BiQ"  # the engine's frame header (links.py): kind, channel, payload size
_HEADER_SIZE = struct.calcsize(_HEADER)
_IN_FLIGHT = 16  # calls in flight per wire, as RayWire


# ---------------------------------------------------------------- 1. transport


def ipc_payload(size: int) -> pa.Buffer:
    """An Arrow IPC stream of one int64 batch, ``size`` bytes or a little more."""
    rows = max(1, (size - 400) // 8)
    return encode_batch(pa.record_batch({"x": np.arange(rows, dtype=np.int64)}))


@ray.remote(concurrency_groups={"data": 1})
class Receiver:
    """A peer worker's ``deliver``: frames in order, batches decoded."""

    def __init__(self) -> None:
        self.rows = 0

    @ray.method(concurrency_group="data")
    def deliver(self, src: int, seq: int, frames: list[Any]) -> int:
        for frame in frames:
            if isinstance(frame, ray.ObjectRef):
                frame = ray.get(frame)
            if len(frame) > _HEADER_SIZE:
                self.rows += decode_batch(frame).num_rows
        return self.rows

    def pid(self) -> int:
        return os.getpid()


@ray.remote
class Sender:
    def __init__(self, peer: Any) -> None:
        self.peer = peer

    def pid(self) -> int:
        return os.getpid()

    def run(self, size: int, put: bool, seconds: float, min_batches: int) -> tuple[int, float]:
        """Batches sent and seconds taken: ordered calls, at most 16 in flight."""
        payload = ipc_payload(size)
        header = struct.pack(_HEADER, 1, 0, payload.size)
        in_flight: deque[Any] = deque()

        def send(seq: int) -> None:
            frame = ray.put(payload) if put else payload
            in_flight.append(self.peer.deliver.remote(0, seq, [header, frame]))
            if len(in_flight) >= _IN_FLIGHT:
                ray.get(in_flight.popleft())

        for seq in range(_IN_FLIGHT):  # warm up
            send(seq)
        ray.get(list(in_flight))
        in_flight.clear()
        n, started = 0, time.perf_counter()
        while n < min_batches or time.perf_counter() - started < seconds:
            send(n)
            n += 1
        ray.get(list(in_flight))
        return n, time.perf_counter() - started


def _socket_receiver(conn: Any) -> None:
    """The local backend's read loop, reduced: header frame, payload frame, decode."""
    while True:
        head = conn.recv_bytes()
        if head == b"stop":
            return
        if head == b"sync":
            conn.send_bytes(b"ok")
            continue
        decode_batch(conn.recv_bytes())


class SocketPeer:
    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe(duplex=True)  # a socket pair on Linux
        self.proc = ctx.Process(target=_socket_receiver, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        self.conn.send_bytes(b"sync")
        self.conn.recv_bytes()

    def run(self, size: int, seconds: float, min_batches: int) -> tuple[int, float]:
        payload = ipc_payload(size)
        header = struct.pack(_HEADER, 1, 0, payload.size)
        for _ in range(_IN_FLIGHT):  # warm up
            self.conn.send_bytes(header)
            self.conn.send_bytes(payload)
        self.conn.send_bytes(b"sync")
        self.conn.recv_bytes()
        n, started = 0, time.perf_counter()
        while n < min_batches or time.perf_counter() - started < seconds:
            self.conn.send_bytes(header)
            self.conn.send_bytes(payload)
            n += 1
        self.conn.send_bytes(b"sync")
        self.conn.recv_bytes()
        return n, time.perf_counter() - started

    def close(self) -> None:
        self.conn.send_bytes(b"stop")
        self.proc.join(5)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far."""
    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


def raylet_pids() -> list[int]:
    """The raylet of the Ray instance this process started (it runs the object store)."""
    return [p.pid for p in psutil.Process().children(recursive=True)
            if p.name().startswith("raylet")]


def bench_transport(args: argparse.Namespace) -> list[dict[str, Any]]:
    receiver = Receiver.remote()
    sender = Sender.remote(receiver)
    ray.get(sender.run.remote(4 * KIB, False, 0.0, 1))  # actors up
    socket = SocketPeer()
    pids = {"socket": [os.getpid(), socket.proc.pid],
            "ray": [ray.get(sender.pid.remote()), ray.get(receiver.pid.remote()), *raylet_pids()]}
    wall: dict[tuple[int, str], list[float]] = {}
    cpu: dict[tuple[int, str], list[float]] = {}
    for r in range(args.rounds):
        for size in args.sizes:
            modes = ["socket", "arg", "put"]
            if r % 2:
                modes.reverse()
            for mode in modes:
                procs = pids["socket" if mode == "socket" else "ray"]
                c0 = cpu_seconds(procs)
                if mode == "socket":
                    n, s = socket.run(size, args.transport_seconds, 8)
                else:
                    n, s = ray.get(sender.run.remote(size, mode == "put",
                                                     args.transport_seconds, 8))
                cpu.setdefault((size, mode), []).append((cpu_seconds(procs) - c0) / n)
                wall.setdefault((size, mode), []).append(s / n)
    socket.close()
    for actor in (sender, receiver):
        ray.kill(actor)
    rows = []
    for size in args.sizes:
        payload = ipc_payload(size).size
        row: dict[str, Any] = {"size": size, "ipc_bytes": payload}
        for mode in ("socket", "arg", "put"):
            per = statistics.median(wall[(size, mode)])
            row[f"{mode}_us"] = round(per * 1e6, 1)
            row[f"{mode}_mb_s"] = round(payload / per / 1e6, 1)
            row[f"{mode}_cpu_us"] = round(statistics.median(cpu[(size, mode)]) * 1e6, 1)
            row[f"{mode}_us_all"] = [round(x * 1e6, 1) for x in wall[(size, mode)]]
            row[f"{mode}_cpu_us_all"] = [round(x * 1e6, 1) for x in cpu[(size, mode)]]
        row["arg_vs_socket"] = round(row["arg_us"] / row["socket_us"], 2)
        row["put_vs_arg"] = round(row["put_us"] / row["arg_us"], 2)
        row["arg_vs_socket_cpu"] = round(row["arg_cpu_us"] / row["socket_cpu_us"], 2)
        row["put_vs_arg_cpu"] = round(row["put_cpu_us"] / row["arg_cpu_us"], 2)
        print(json.dumps({"transport": row}), flush=True)
        rows.append(row)
    return rows


# ---------------------------------------------------------------- 2. engine


class Metered(WrappedSource):
    """Wraps a source; each reader appends ``wall time, rows`` per batch to a file in
    ``directory`` (one file per reader; one small write per batch)."""

    def __init__(self, inner: Any, directory: str) -> None:
        super().__init__(inner)
        self.directory = directory

    def wrap(self, reader: SourceReader) -> SourceReader:
        return MeteredReader(reader, self.directory)


class MeteredReader(SourceReader):
    def __init__(self, inner: SourceReader, directory: str) -> None:
        self.inner = inner
        path = os.path.join(directory, f"{os.getpid()}-{uuid.uuid4().hex}.log")
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def read(self) -> pa.RecordBatch | None:
        batch = self.inner.read()
        if batch is not None and batch.num_rows:
            os.write(self.fd, f"{time.time():.6f} {batch.num_rows} {time.process_time():.6f} "
                              f"{os.getpid()}\n".encode())
        return batch

    def position(self) -> Any:
        return self.inner.position()

    def close(self) -> None:
        self.inner.close()
        os.close(self.fd)


def read_log(directory: str) -> np.ndarray:
    """(wall time, rows, CPU seconds of the worker process, pid) of every source batch,
    by time."""
    rows = []
    for name in os.listdir(directory):
        with open(os.path.join(directory, name)) as f:
            rows += [tuple(map(float, line.split())) for line in f if line.strip()]
    return np.array(sorted(rows), dtype=float).reshape(-1, 4)


class CpuSampler(threading.Thread):
    """(wall time, CPU seconds) of some processes every 0.1 s while it runs."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids, self.samples, self.done = pids, [], threading.Event()
        self.start()

    def run(self) -> None:
        while True:
            self.samples.append((time.time(), cpu_seconds(self.pids)))
            if self.done.wait(0.1):
                self.samples.append((time.time(), cpu_seconds(self.pids)))
                return

    def stop(self) -> np.ndarray:
        self.done.set()
        self.join()
        return np.array(self.samples, dtype=float).reshape(-1, 2)


def steady(log: np.ndarray, extra: np.ndarray | None = None, lo: float = 0.1,
           hi: float = 0.9) -> tuple[float | None, ...]:
    """Source rows/s between the batches that reach ``lo`` and ``hi`` of all rows; those
    rows per CPU second of the worker processes hosting the sources (the CPU time each
    used meanwhile, read at their own batches) plus ``extra`` ((wall time, CPU seconds)
    samples of other processes: the raylet on Ray); and the share of ``extra`` in it."""
    if len(log) < 4:
        return None, None, None
    cum = np.cumsum(log[:, 1])
    i = int(np.searchsorted(cum, lo * cum[-1]))
    j = int(np.searchsorted(cum, hi * cum[-1]))
    t0, t1 = log[i, 0], log[j, 0]
    if j <= i or t1 <= t0:
        return None, None, None
    rows = cum[j] - cum[i]
    def used(times: np.ndarray, cpu: np.ndarray) -> float:
        return float(np.interp(t1, times, cpu) - np.interp(t0, times, cpu))

    cpu = sum(used(log[log[:, 3] == pid, 0], log[log[:, 3] == pid, 2])
              for pid in np.unique(log[:, 3]))
    if extra is None or not len(extra):
        return float(rows / (t1 - t0)), (float(rows / cpu) if cpu > 0 else None), None
    other = used(extra[:, 0], extra[:, 1])
    cpu += other
    return (float(rows / (t1 - t0)), (float(rows / cpu) if cpu > 0 else None),
            (other / cpu if cpu > 0 else None))


def shuffle_build(streams: dict[str, rs.Stream], cfg: NexmarkConfig) -> rs.Stream:
    """q0 behind a hash exchange: each bid batch is split by auction, half of it to the
    other worker; nothing else is computed (the exchange's own cost)."""
    return streams["bid"].key_by("auction").map_batches(bid_columns, name="shuffle.project")


SHUFFLE = Query("shuffle", "q0 over a key_by exchange", ("bid",), shuffle_build, "", ())


def query(name: str) -> Query:
    return SHUFFLE if name == "shuffle" else QUERIES[name]


def make_backend(kind: str, put_from: int) -> Any:
    if kind == "local":
        return "local"
    return RayBackend(put_batches_from=put_from if kind == "ray-put" else 0)


def run_once(name: str, events: int, kind: str, workers: int, parallelism: int,
             put_from: int = 0) -> dict[str, Any]:
    q = query(name)
    directory = tempfile.mkdtemp(prefix="rheostat-bench-ray-")
    try:
        cfg = NexmarkConfig(events=events,
                            wrap_source=lambda source: Metered(source, directory))
        flow, out = build_flow(q, cfg)
        sink = rs.sinks.null()
        out.sink("out", sink)
        load = os.getloadavg()[0]
        sampler = CpuSampler(raylet_pids()) if kind != "local" else None
        wall0 = time.time()
        started = time.perf_counter()
        try:
            rs.run(flow, backend=make_backend(kind, put_from), parallelism=parallelism,
                   workers=workers)
        finally:
            raylet = sampler.stop() if sampler else None
        elapsed = time.perf_counter() - started
        log = read_log(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    rate, per_cpu, raylet_share = steady(log, raylet)
    return {
        "query": name, "backend": kind, "events": events, "workers": workers,
        "parallelism": parallelism, "put_batches_from": put_from if kind == "ray-put" else 0,
        "elapsed_s": round(elapsed, 3),
        "startup_s": round(log[0, 0] - wall0, 3) if len(log) else None,
        "read_s": round(log[-1, 0] - log[0, 0], 3) if len(log) else None,
        "source_rows": int(log[:, 1].sum()) if len(log) else 0,
        "steady_rows_per_s": round(rate) if rate else None,
        "steady_rows_per_cpu_s": round(per_cpu) if per_cpu else None,
        "raylet_cpu_share": round(raylet_share, 3) if raylet_share is not None else None,
        "source_processes": len(np.unique(log[:, 3])),
        "rows_out": sink.rows, "load_average": round(load, 2),
    }


def settle(seconds: float) -> None:
    if seconds > 0:
        time.sleep(seconds)


def bench_startup(args: argparse.Namespace) -> list[dict[str, Any]]:
    """A 1,000-event q0 job, repeated: the first start per backend, then the median."""
    runs: dict[str, list[dict[str, Any]]] = {"local": [], "ray": []}
    for r in range(args.startup_repeat):
        order = ["local", "ray"] if r % 2 == 0 else ["ray", "local"]
        for kind in order:
            runs[kind].append(run_once("q0", 1_000, kind, args.engine_workers,
                                       args.parallelism))
            settle(args.pause)
    rows = []
    for kind, rs_ in runs.items():
        row = {"backend": kind, "first_startup_s": rs_[0]["startup_s"],
               "first_elapsed_s": rs_[0]["elapsed_s"],
               "later_startup_s": _median([x["startup_s"] for x in rs_[1:]]),
               "later_elapsed_s": _median([x["elapsed_s"] for x in rs_[1:]]),
               "startup_all_s": [x["startup_s"] for x in rs_],
               "elapsed_all_s": [x["elapsed_s"] for x in rs_]}
        print(json.dumps({"startup": row}), flush=True)
        rows.append(row)
    return rows


def bench_engine(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for name in args.queries:
        events = args.events[name]
        kinds = ["local", "ray"] + (["ray-put"] if name in args.put_queries else [])
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
        for r in range(args.rounds):
            for kind in kinds if r % 2 == 0 else kinds[::-1]:
                run = run_once(name, events, kind, args.engine_workers, args.parallelism,
                               args.put_from)
                print(json.dumps({"run": run}), flush=True)
                runs[kind].append(run)
                settle(args.pause)
        rows.append(summarise(name, events, runs))
        print(json.dumps({"engine": rows[-1]}), flush=True)
    return rows


def summarise(name: str, events: int, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    row: dict[str, Any] = {"query": name, "events": events}
    for kind, rs_ in runs.items():
        for metric in ("rows_per_s", "rows_per_cpu_s"):
            values = [x[f"steady_{metric}"] for x in rs_]
            row[f"{kind}_{metric}"] = _median(values)
            row[f"{kind}_{metric}_all"] = values
        row[f"{kind}_elapsed_s"] = _median([x["elapsed_s"] for x in rs_])
        row[f"{kind}_startup_s"] = _median([x["startup_s"] for x in rs_])
        row[f"{kind}_rows_out"] = sorted({x["rows_out"] for x in rs_})
    pairs = [(k, "local") for k in runs if k != "local"]
    if "ray-put" in runs:
        pairs.append(("ray-put", "ray"))
    for kind, base in pairs:
        for metric, label in (("rows_per_s", ""), ("rows_per_cpu_s", "_cpu")):
            # Ratios per round (the runs of a round ran back to back), then the median.
            ratios = [a[f"steady_{metric}"] / b[f"steady_{metric}"]
                      for a, b in zip(runs[kind], runs[base], strict=True)
                      if a[f"steady_{metric}"] and b[f"steady_{metric}"]]
            key = f"{kind}_vs_{base}{label}"
            row[key] = round(statistics.median(ratios), 3) if ratios else None
            row[f"{key}_all"] = [round(x, 3) for x in ratios]
    return row


# ---------------------------------------------------------------- 3. scaling


def bench_scaling(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for n in args.workers:
        runs: dict[str, list[dict[str, Any]]] = {"local": [], "ray": []}
        for r in range(args.scaling_rounds):
            for kind in ("local", "ray") if r % 2 == 0 else ("ray", "local"):
                run = run_once(args.scaling_query, args.scaling_events, kind, n, n)
                print(json.dumps({"run": run}), flush=True)
                runs[kind].append(run)
                settle(args.pause)
        row = summarise(args.scaling_query, args.scaling_events, runs)
        row["workers"] = n
        rows.append(row)
    for kind in ("local", "ray"):
        one = next((r[f"{kind}_rows_per_s"] for r in rows if r["workers"] == 1), None)
        for r in rows:
            if one and r[f"{kind}_rows_per_s"]:
                r[f"{kind}_speedup"] = round(r[f"{kind}_rows_per_s"] / one, 2)
                r[f"{kind}_efficiency"] = round(r[f"{kind}_speedup"] / r["workers"], 2)
    for r in rows:
        print(json.dumps({"scaling": r}), flush=True)
    return rows


# ---------------------------------------------------------------- output


def _median(xs: list[Any]) -> Any:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _m(x: float | None) -> str:
    return "-" if x is None else f"{x / 1e6:.2f} M"


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _size(n: int) -> str:
    return f"{n // MIB} MiB" if n >= MIB else f"{n // KIB} KiB"


def tables(result: dict[str, Any], args: argparse.Namespace) -> str:
    out = []
    if result.get("transport"):
        out += ["Transport, one Arrow IPC batch per call, 16 calls in flight: wall µs per batch "
                "and MB/s; CPU µs per batch of the two processes (and, for Ray, the raylet); "
                f"medians of {args.rounds} rounds:", "",
                "| batch | socket pair µs | MB/s | CPU µs | Ray call arg µs | MB/s | CPU µs "
                "| ray.put ref µs | MB/s | CPU µs | arg / socket | put / arg | put / arg CPU |",
                "|" + "---|" * 13]
        for r in result["transport"]:
            out.append(
                f"| {_size(r['size'])} | {r['socket_us']:.0f} | {r['socket_mb_s']:.0f} "
                f"| {r['socket_cpu_us']:.0f} | {r['arg_us']:.0f} | {r['arg_mb_s']:.0f} "
                f"| {r['arg_cpu_us']:.0f} | {r['put_us']:.0f} | {r['put_mb_s']:.0f} "
                f"| {r['put_cpu_us']:.0f} | {r['arg_vs_socket']} | {r['put_vs_arg']} "
                f"| {r['put_vs_arg_cpu']} |")
        out.append("")
    if result.get("startup"):
        out += ["Job start-up, 1,000-event q0 (rs.run to the first source batch; whole job):",
                "", "| backend | first start s | first job s | later starts s (median) "
                "| later jobs s (median) |", "|---|---|---|---|---|"]
        for r in result["startup"]:
            out.append(f"| {r['backend']} | {_s(r['first_startup_s'])} "
                       f"| {_s(r['first_elapsed_s'])} | {_s(r['later_startup_s'])} "
                       f"| {_s(r['later_elapsed_s'])} |")
        out.append("")
    if result.get("engine"):
        out += [f"Engine, parallelism {args.parallelism}, {args.engine_workers} workers: steady "
                f"source rows/s and rows per worker CPU-second (medians of {args.rounds} "
                "alternating rounds; ratios: median of the per-round ratios):", "",
                "| query | events | local rows/s | Ray rows/s | Ray / local | local rows/CPU-s "
                "| Ray rows/CPU-s | Ray / local (CPU) | local job s | Ray job s "
                "| local start s | Ray start s |", "|" + "---|" * 12]
        for r in result["engine"]:
            out.append(
                f"| {r['query']} | {r['events'] / 1e6:.3g} M | {_m(r['local_rows_per_s'])} "
                f"| {_m(r['ray_rows_per_s'])} | {r.get('ray_vs_local')} "
                f"| {_m(r['local_rows_per_cpu_s'])} | {_m(r['ray_rows_per_cpu_s'])} "
                f"| {r.get('ray_vs_local_cpu')} "
                f"| {_s(r['local_elapsed_s'])} | {_s(r['ray_elapsed_s'])} "
                f"| {_s(r['local_startup_s'])} | {_s(r['ray_startup_s'])} |")
            if "ray-put_rows_per_s" in r:
                out.append(
                    f"| {r['query']}, Ray put_batches_from={_size(args.put_from)} "
                    f"| {r['events'] / 1e6:.3g} M | | {_m(r['ray-put_rows_per_s'])} "
                    f"| {r.get('ray-put_vs_local')} (vs Ray {r.get('ray-put_vs_ray')}) | "
                    f"| {_m(r['ray-put_rows_per_cpu_s'])} "
                    f"| {r.get('ray-put_vs_local_cpu')} (vs Ray {r.get('ray-put_vs_ray_cpu')}) "
                    f"| | {_s(r['ray-put_elapsed_s'])} | | {_s(r['ray-put_startup_s'])} |")
        out.append("")
    if result.get("scaling"):
        cores = os.cpu_count()
        out += [f"Scaling, {args.scaling_query}, parallelism = workers, steady source rows/s "
                f"(this machine has {cores} cores: more workers than cores share them, so "
                "this is not scaling efficiency):", "",
                "| workers | local rows/s | x of 1 | Ray rows/s | x of 1 | Ray / local "
                "| local rows/CPU-s | Ray rows/CPU-s |", "|---|---|---|---|---|---|---|---|"]
        for r in result["scaling"]:
            out.append(f"| {r['workers']} | {_m(r['local_rows_per_s'])} "
                       f"| {r.get('local_speedup', '-')} | {_m(r['ray_rows_per_s'])} "
                       f"| {r.get('ray_speedup', '-')} | {r.get('ray_vs_local')} "
                       f"| {_m(r['local_rows_per_cpu_s'])} | {_m(r['ray_rows_per_cpu_s'])} |")
    return "\n".join(out)


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cores": os.cpu_count(), "python": platform.python_version(),
                            "pyarrow": pa.__version__, "ray": ray.__version__,
                            "rheostat": rs.__version__,
                            "rheostat_src": os.path.dirname(os.path.dirname(rs.__file__)),
                            "load_average":
                            [round(x, 2) for x in os.getloadavg()]}
    try:
        with open("/proc/meminfo") as f:
            info["memory_gib"] = round(int(f.readline().split()[1]) / (1 << 20), 1)
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f
                               if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return info


# ---------------------------------------------------------------- the command line


def _sizes(text: str) -> list[int]:
    units = {"k": KIB, "m": MIB}
    out = []
    for part in text.lower().replace("ib", "").split(","):
        part = part.strip()
        out.append(int(float(part[:-1]) * units[part[-1]]) if part[-1] in units else int(part))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="transport,engine,scaling",
                    help="comma-separated: transport, engine, scaling")
    ap.add_argument("--quick", action="store_true", help="one round of smaller runs (~2 minutes)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="alternating rounds per comparison (default 3, quick 1)")
    ap.add_argument("--sizes", type=_sizes, default=None,
                    help="transport sizes (default 4k,64k,256k,1m,4m,8m; quick 4k,64k,1m,8m)")
    ap.add_argument("--transport-seconds", type=float, default=None,
                    help="time per transport measurement (default 0.3, quick 0.25)")
    ap.add_argument("--queries", default="q0,q1,shuffle,q5",
                    help="engine queries: Nexmark q0..q11, or 'shuffle' (q0 behind key_by)")
    ap.add_argument("--events", type=int, default=None,
                    help="events per engine run (default: q0-q2 10 M, others 6 M; quick: a third)")
    ap.add_argument("--put-queries", default="shuffle",
                    help="queries also run with RayBackend(put_batches_from=--put-from)")
    ap.add_argument("--put-from", type=_sizes, default=[MIB], help="bytes (e.g. 1m)")
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--engine-workers", type=int, default=2)
    ap.add_argument("--workers", default=None,
                    help="scaling: worker counts (default 1,2,4; quick 1,2), e.g. 1,2,4,8")
    ap.add_argument("--scaling-query", default="q5")
    ap.add_argument("--scaling-events", type=int, default=None, help="default 4 M")
    ap.add_argument("--scaling-rounds", type=int, default=1)
    ap.add_argument("--startup-repeat", type=int, default=2,
                    help="1,000-event jobs per backend for the start-up figures")
    ap.add_argument("--settle", type=float, default=8.0,
                    help="seconds to let a fresh Ray instance settle before timing")
    ap.add_argument("--pause", type=float, default=0.5, help="seconds between runs")
    ap.add_argument("--max-direct-call", type=_sizes, default=None,
                    help="Ray's max_direct_call_object_size for the instance started here "
                         "(call arguments up to this size travel inside the call, larger "
                         "ones through the object store; Ray's default is 100 KiB)")
    ap.add_argument("--json", default=None, help="write every figure to this file")
    args = ap.parse_args()
    quick = args.quick
    args.parts = [p for p in args.parts.split(",") if p]
    args.rounds = args.rounds or (1 if quick else 3)
    args.transport_seconds = args.transport_seconds or (0.25 if quick else 0.3)
    args.sizes = args.sizes or _sizes("4k,64k,1m,8m" if quick else "4k,64k,256k,1m,4m,8m")
    args.queries = [q for q in args.queries.split(",") if q]
    args.put_queries = [q for q in args.put_queries.split(",") if q]
    args.put_from = args.put_from[0]
    args.workers = [int(w) for w in (args.workers or ("1,2" if quick else "1,2,4")).split(",")
                    if w]
    scale = 3 if quick else 1
    default_events = {"q0": 10_000_000, "q1": 10_000_000, "q2": 10_000_000}
    args.events = {q: args.events or default_events.get(q, 6_000_000) // scale
                   for q in args.queries}
    args.scaling_events = args.scaling_events or 4_000_000 // scale
    if quick:
        args.startup_repeat = min(args.startup_repeat, 2)
        args.settle = min(args.settle, 5.0)

    info = machine()
    print(json.dumps({"machine": info, "args": {k: v for k, v in vars(args).items()}}),
          flush=True)
    cpus = max(os.cpu_count() or 1, *args.workers, args.engine_workers)
    started = time.perf_counter()
    system_config = ({"max_direct_call_object_size": args.max_direct_call[0]}
                     if args.max_direct_call else {})
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=True,
             _system_config=system_config)
    info["ray_init_s"] = round(time.perf_counter() - started, 2)
    settle(args.settle)  # the prestarted Ray workers' imports
    result: dict[str, Any] = {"machine": info, "part_s": {}}
    parts = [("startup", "engine", bench_startup), ("transport", "transport", bench_transport),
             ("engine", "engine", bench_engine), ("scaling", "scaling", bench_scaling)]
    try:
        for key, part, bench in parts:
            if part in args.parts:
                t = time.perf_counter()
                result[key] = bench(args)
                result["part_s"][key] = round(time.perf_counter() - t, 1)
    finally:
        ray.shutdown()
    result["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps({"ray_init_s": info["ray_init_s"], "part_s": result["part_s"],
                      "total_s": result["total_s"]}))
    print()
    print(f"ray.init (a fresh local instance, before any job): {info['ray_init_s']} s; "
          f"load average at the start: {info['load_average']}\n")
    print(tables(result, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
