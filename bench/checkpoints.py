"""Checkpoint figures: throughput cost, recovery after a worker kill, size and duration.

Three commands, each printing one JSON line per run and a summary (medians):

    python bench/checkpoints.py throughput --events 40000000 --repeats 3
    python bench/checkpoints.py recovery --state small --repeats 5
    python bench/checkpoints.py recovery --state large --keys 1000000 --min-state-mib 1000
    python bench/checkpoints.py growth --keys 1000000 --seconds 60

(Each takes one to three minutes on a 2-core machine; ``--repeats``, ``--events``,
``--keys`` and ``--seconds`` scale them.)

``throughput`` runs the same keyed windowed Nexmark job (bids per auction, sliding 10 s /
2 s count, ``rs.sinks.null()``) without and with checkpoints, alternating, in one session.

``recovery`` and ``growth`` run an endless synthetic stream keyed by ``key`` into one
tumbling window of a day (it never fires during the run, so state only accumulates: one
row of partial aggregates per key, ``count`` plus a ``sum`` per value column: about 160
bytes a row with 16 value columns). Two sizes are reported: the checkpoint's size in the
store (the sum of the part sizes in its manifest) and the state's size in memory (rows
and Arrow ``nbytes`` of the window parts, unpickled after the run from hard links kept
of the checkpoint's files). ``recovery`` kills a
worker with SIGKILL a fixed delay after a checkpoint completed and times every step until
the restored job processes rows again; ``growth`` records every checkpoint while uniform
keys fill the state. Both stop the job with a Ctrl-C of their own (``_thread.interrupt_main``).

How it measures: ``rs.run`` gets a :class:`Probe`, the local backend with timestamps on
what the controller sends and receives (checkpoint triggers, acknowledgements, worker
deaths, metrics reports, stop and start of the workers), plus a handler on the
``rheostat.controller`` logger ("checkpoint N complete", "restarting job"). For recovery the
workers report metrics every ``--metrics-interval`` (default 20 ms instead of 500 ms), so
"processing again" is resolved to that.
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import dataclasses
import json
import logging
import os
import pickle
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil
import pyarrow as pa

import rheostat as rs
from rheostat.backends.base import (
    CheckpointAck,
    MetricsReport,
    RestoreFrom,
    RunConfig,
    TriggerCheckpoint,
    WorkerDied,
)
from rheostat.backends.local.backend import LocalBackend
from rheostat.control.controller import RestartPolicy
from rheostat.plan.logical import SourceStep
from rheostat.plan.physical import PhysicalPlan

WORKER_MODULE = "rheostat.backends.local.worker"


# ------------------------------------------------------------------ instrumentation


class Probe(LocalBackend):
    """The local backend, timestamping (``time.monotonic``) what passes through it."""

    def __init__(self, metrics_interval_s: float | None = None) -> None:
        super().__init__()
        self.metrics_interval_s = metrics_interval_s
        self.lock = threading.Lock()
        self.starts: list[dict[str, Any]] = []  # begin, end, restored checkpoint id
        self.stops: list[tuple[float, float]] = []
        self.kills: list[float] = []
        self.died: list[float] = []
        self.triggers: dict[int, float] = {}
        self.acks: dict[int, dict[str, float]] = {}
        self.reports: list[tuple[float, int, dict[str, int]]] = []  # t, start no., rows_in
        self.source_tasks: set[str] = set()
        self.on_report: Callable[[], None] | None = None

    def start(self, plan: PhysicalPlan, placement: dict[str, int], config: RunConfig,
              restore: RestoreFrom | None = None) -> None:
        if self.metrics_interval_s is not None:
            config = dataclasses.replace(config, metrics_interval_s=self.metrics_interval_s)
        self.source_tasks = {
            t for t in plan.task_ids
            if isinstance(plan.steps[plan.chain_of(t.rsplit("#", 1)[0]).steps[0]], SourceStep)
        }
        begin = time.monotonic()
        super().start(plan, placement, config, restore)
        with self.lock:
            self.starts.append({"begin": begin, "end": time.monotonic(),
                                "restored": None if restore is None
                                else restore.point.checkpoint_id})

    def send(self, worker: int, command: Any) -> None:
        if isinstance(command, TriggerCheckpoint):
            self.triggers.setdefault(command.checkpoint_id, time.monotonic())
        super().send(worker, command)

    def events(self, timeout: float) -> list:
        events = super().events(timeout)
        now = time.monotonic()
        reported = False
        for e in events:
            if isinstance(e, CheckpointAck):
                self.acks.setdefault(e.checkpoint_id, {})[e.task_id] = now
            elif isinstance(e, WorkerDied):
                self.died.append(now)
            elif isinstance(e, MetricsReport):
                with self.lock:
                    self.reports.append(
                        (now, len(self.starts), {t: m.rows_in for t, m in e.tasks.items()}))
                reported = True
        if reported and self.on_report is not None:
            self.on_report()
        return events

    def kill(self) -> None:
        self.kills.append(time.monotonic())
        super().kill()

    def stop(self) -> list:
        begin = time.monotonic()
        events = super().stop()
        self.stops.append((begin, time.monotonic()))
        return events


class ControllerLog(logging.Handler):
    """Timestamps of the controller's "checkpoint N complete" and "restarting job" lines,
    and each committed checkpoint's part sizes from its manifest, read at once.

    With ``keep_links``, the files of the newest ``keep_links`` committed checkpoints are
    also hard-linked under ``<checkpoint_dir>/links/`` (no copy), so they can be examined
    after the run although retention has deleted them from the store.
    """

    def __init__(self, checkpoint_dir: str, keep_links: int = 0) -> None:
        super().__init__(logging.INFO)
        self.checkpoint_dir = checkpoint_dir
        self.keep_links = keep_links
        self.completed: dict[int, float] = {}
        self.sizes: dict[int, dict[str, int]] = {}
        self.restarts: list[float] = []
        self.changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        now = time.monotonic()
        if record.msg == "checkpoint %d complete":
            cid = int(record.args[0])  # type: ignore[index]
            manifest = read_manifest(chk_dir(self.checkpoint_dir, cid))
            sizes = {name: part["size"] for name, part in manifest.get("parts", {}).items()}
            if self.keep_links:
                self._link(cid)
            with self.changed:
                self.completed[cid] = now
                self.sizes[cid] = sizes
                self.changed.notify_all()
        elif str(record.msg).startswith("restarting job"):
            with self.changed:
                self.restarts.append(now)
                self.changed.notify_all()

    def linked(self, checkpoint_id: int) -> str:
        return os.path.join(self.checkpoint_dir, "links", f"chk-{checkpoint_id:08d}")

    def _link(self, cid: int) -> None:
        src, dst = chk_dir(self.checkpoint_dir, cid), self.linked(cid)
        with contextlib.suppress(OSError):
            os.makedirs(dst)
            for name in os.listdir(src):
                os.link(os.path.join(src, name), os.path.join(dst, name))
        done = sorted(self.completed)
        for c in done[: max(0, len(done) + 1 - self.keep_links)]:
            shutil.rmtree(self.linked(c), ignore_errors=True)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout)


@contextlib.contextmanager
def controller_log(checkpoint_dir: str, keep_links: int = 0):
    logger = logging.getLogger("rheostat.controller")
    handler = ControllerLog(checkpoint_dir, keep_links)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def chk_dir(checkpoint_dir: str, checkpoint_id: int) -> str:
    return os.path.join(checkpoint_dir, "checkpoints", f"chk-{checkpoint_id:08d}")


def read_manifest(directory: str) -> dict[str, Any]:
    try:
        with open(os.path.join(directory, "_MANIFEST.json"), encoding="utf-8") as f:
            return json.load(f)
    except OSError:
        return {}


def logical_state(directory: str) -> dict[str, int] | None:
    """What the keyed state of a checkpoint holds in memory: rows and Arrow bytes (the
    ``nbytes`` of the sliced data) of its table parts, unpickled one at a time;
    ``stored_bytes`` is what the same parts take in the store."""
    manifest = read_manifest(directory)
    if not manifest:
        return None
    rows = nbytes = stored = 0
    for name, part in manifest["parts"].items():
        if name.endswith("/_task"):
            continue
        with open(os.path.join(directory, part["file"]), "rb") as f:
            state = pickle.load(f)
        if isinstance(state, pa.Table):
            rows += state.num_rows
            nbytes += state.nbytes
            stored += part["size"]
        del state
    return {"rows": rows, "arrow_bytes": nbytes, "stored_bytes": stored}


def worker_processes() -> dict[int, psutil.Process]:
    """This process's rheostat workers, by worker index (from their command line)."""
    found = {}
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            cmd = child.cmdline()
            if WORKER_MODULE in cmd:
                found[int(cmd[cmd.index(WORKER_MODULE) + 1])] = child
    return found


def workers_rss() -> int:
    total = 0
    for p in worker_processes().values():
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def rounded(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


def mib(n: float | None) -> float | None:
    return None if n is None else round(n / 2**20, 3)


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(), "pyarrow": pa.__version__,
        "cpus": os.cpu_count(), "mem_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def emit(doc: dict[str, Any]) -> None:
    print(json.dumps(doc), flush=True)


class Stopper:
    """Ends a running ``rs.run`` from another thread with a Ctrl-C of its own
    (``_thread.interrupt_main``), never once the run has returned."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = True

    def stop(self) -> None:
        with self.lock:
            if self.running:
                _thread.interrupt_main()

    def run(self, flow: rs.Flow, **kwargs: Any) -> None:
        # A shell starts background jobs with SIGINT ignored, which would make
        # interrupt_main a no-op: handle it as Python does by default while the job runs.
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with contextlib.suppress(KeyboardInterrupt):
                try:
                    rs.run(flow, **kwargs)
                except KeyboardInterrupt:
                    pass
                finally:
                    with self.lock:
                        self.running = False
        finally:
            signal.signal(signal.SIGINT, previous)


# ------------------------------------------------------------------ 1. throughput


def nexmark_flow(events: int) -> rs.Flow:
    flow = rs.Flow("chk-throughput")
    bids = flow.source("bids", rs.sources.nexmark(events=events, kind="bid"),
                       timestamp="date_time", out_of_order="2s")
    (bids.key_by("auction").window(rs.windows.sliding(size="10s", slide="2s"))
     .aggregate(bids=rs.agg.count())).sink("out", rs.sinks.null())
    return flow


def throughput_once(args: argparse.Namespace, checkpoints: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    directory = tempfile.mkdtemp(prefix="rheostat-chk-bench-")
    if checkpoints:
        kwargs = {"checkpoint_interval": args.interval, "checkpoint_dir": directory}
    load = os.getloadavg()[0]
    try:
        with controller_log(directory) as log:
            started = time.perf_counter()
            result = rs.run(nexmark_flow(args.events), parallelism=args.parallelism, **kwargs)
            elapsed = time.perf_counter() - started
            sizes = [sum(s.values()) for s in log.sizes.values()]
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return {
        "checkpoints": checkpoints, "elapsed_s": round(elapsed, 2),
        "bids_per_s": round(result.rows_in("bids") / elapsed),
        "completed_checkpoints": len(result.checkpoints),
        "median_checkpoint_bytes": median(sizes), "load_avg_1m_before": round(load, 2),
    }


def cmd_throughput(args: argparse.Namespace) -> None:
    emit({"bench": "throughput", "events": args.events, "parallelism": args.parallelism,
          "interval": args.interval, **environment()})
    off, on, ratios, counts, sizes = [], [], [], [], []
    for i in range(args.repeats):
        # alternate which goes first, so drift in the machine's load hits both alike
        order = (False, True) if i % 2 == 0 else (True, False)
        pair = {}
        for checkpoints in order:
            run = throughput_once(args, checkpoints)
            emit({"repeat": i, **run})
            pair[checkpoints] = run["bids_per_s"]
            if checkpoints:
                counts.append(run["completed_checkpoints"])
                sizes.append(run["median_checkpoint_bytes"])
        off.append(pair[False])
        on.append(pair[True])
        ratios.append(pair[True] / pair[False])
    emit({
        "summary": "throughput", "repeats": args.repeats,
        "median_bids_per_s_without": round(median(off)),
        "median_bids_per_s_with": round(median(on)),
        "ratio_of_medians": round(median(on) / median(off), 3),
        "median_of_pair_ratios": round(median(ratios), 3),
        "pair_ratios": [round(r, 3) for r in ratios],
        "median_checkpoints_per_run": median(counts),
        "median_checkpoint_mib": mib(median(sizes)),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
    })


# ------------------------------------------------------------------ shared: state job


def state_flow(name: str, keys: int, value_columns: int, zipf: float) -> rs.Flow:
    """Endless synthetic rows into a day-long tumbling window: state only grows."""
    flow = rs.Flow(name)
    rows = flow.source(
        "rows", rs.sources.synthetic(None, keys=keys, zipf=zipf, value_columns=value_columns),
        timestamp="ts", out_of_order="1s")
    names = ["value"] + [f"value_{i}" for i in range(1, value_columns)]
    aggs = {"n": rs.agg.count(), **{f"s_{c}": rs.agg.sum(c) for c in names}}
    rows.key_by("key").window(rs.windows.tumbling("1d")).aggregate(**aggs) \
        .sink("out", rs.sinks.null())
    return flow


def checkpoint_rows(probe: Probe, log: ControllerLog) -> list[dict[str, Any]]:
    """One row per committed checkpoint (the final one excluded): size and timings."""
    rows = []
    for cid, done in sorted(log.completed.items()):
        trig = probe.triggers.get(cid)
        if trig is None:
            continue  # the final checkpoint, of finished tasks' inline snapshots
        acks = probe.acks.get(cid, {})
        last_ack = max(acks.values()) if acks else None
        rows.append({
            "id": cid, "bytes": sum(log.sizes.get(cid, {}).values()),
            "duration_s": rounded(done - trig),
            "trigger_to_last_ack_s": rounded(None if last_ack is None else last_ack - trig),
            "last_ack_to_commit_s": rounded(None if last_ack is None else done - last_ack),
        })
    return rows


# ------------------------------------------------------------------ 2. recovery


def recovery_once(args: argparse.Namespace, keys: int, value_columns: int,
                  min_state: int, min_checkpoints: int) -> dict[str, Any]:
    directory = tempfile.mkdtemp(prefix="rheostat-chk-bench-")
    probe = Probe(metrics_interval_s=args.metrics_interval)
    resumed = threading.Event()
    outcome: dict[str, Any] = {}
    stopper = Stopper()

    def check_resumed() -> None:
        with probe.lock:
            if len(probe.starts) < 2:
                return
            for _t, start_no, rows in probe.reports:
                if start_no >= 2 and any(n > 0 for task, n in rows.items()
                                         if task not in probe.source_tasks):
                    resumed.set()
                    return

    probe.on_report = check_resumed

    def killer(log: ControllerLog) -> None:
        try:
            def ready() -> bool:
                return any(cid >= min_checkpoints and sum(s.values()) >= min_state
                           for cid, s in log.sizes.items())
            if not log.wait_for(ready, args.fill_timeout):
                outcome["error"] = f"state did not reach {min_state} bytes in time"
                return
            cid = max(log.completed)
            time.sleep(args.kill_delay)
            procs = worker_processes()
            outcome["workers_rss_before_kill"] = workers_rss()
            victim = procs[args.kill_worker]
            outcome["killed_after_checkpoint"] = cid
            outcome["checkpoint_bytes"] = sum(log.sizes[cid].values())
            outcome["t_kill"] = time.monotonic()
            os.kill(victim.pid, signal.SIGKILL)
            if not resumed.wait(args.recover_timeout):
                outcome["error"] = "no progress after the restart in time"
                return
            outcome["workers_rss_after_restore"] = workers_rss()
            time.sleep(args.after)
        finally:
            outcome["t_interrupt"] = time.monotonic()
            stopper.stop()

    try:
        with controller_log(directory, keep_links=6) as log:
            thread = threading.Thread(target=killer, args=(log,), daemon=True)
            thread.start()
            stopper.run(
                state_flow("chk-recovery", keys, value_columns, 0.0),
                parallelism=args.parallelism, backend=probe, workers=args.parallelism,
                checkpoint_interval=args.interval, checkpoint_dir=directory,
                restart=RestartPolicy(attempts=3, backoff_s=args.backoff))
            thread.join()
        doc = recovery_figures(probe, log, outcome, args.backoff)
        restored = doc.get("restored_checkpoint")
        state = None if restored is None else logical_state(log.linked(restored))
        if state is not None:
            doc["state_rows"] = state["rows"]
            doc["state_arrow_mib"] = mib(state["arrow_bytes"])
            doc["state_stored_mib"] = mib(state["stored_bytes"])
        return doc
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def recovery_figures(probe: Probe, log: ControllerLog, outcome: dict[str, Any],
                     backoff: float) -> dict[str, Any]:
    doc: dict[str, Any] = {k: outcome.get(k) for k in
                           ("error", "killed_after_checkpoint", "checkpoint_bytes")}
    doc["workers_rss_mib_before_kill"] = mib(outcome.get("workers_rss_before_kill"))
    doc["workers_rss_mib_after_restore"] = mib(outcome.get("workers_rss_after_restore"))
    kill = outcome.get("t_kill")
    if kill is None or len(probe.starts) < 2:
        doc["error"] = doc["error"] or "no restart happened"
        return doc
    restart = probe.starts[1]
    died = min((t for t in probe.died if t >= kill), default=None)
    restart_log = min((t for t in log.restarts if t >= kill), default=None)
    stop = next(((b, e) for b, e in probe.stops if b >= kill), None)
    after = [(t, rows) for t, n, rows in probe.reports if n >= 2]
    first_report = after[0][0] if after else None
    src = next((t for t, rows in after
                if any(v > 0 for k, v in rows.items() if k in probe.source_tasks)), None)
    window = next((t for t, rows in after
                   if any(v > 0 for k, v in rows.items() if k not in probe.source_tasks)), None)

    def span(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(b - a, 3)

    doc.update({
        "restored_checkpoint": restart["restored"],
        "kill_to_processing_s": span(kill, window),
        "kill_to_source_reading_s": span(kill, src),
        "parts": {
            "detect (kill -> WorkerDied)": span(kill, died),
            "to restart decision": span(died, restart_log),
            "stop old workers": None if stop is None else span(restart_log, stop[1]),
            "verify latest checkpoint": None if stop is None
            else span(stop[1], restart["begin"] - backoff),
            "backoff (policy)": backoff,
            "spawn workers": span(restart["begin"], restart["end"]),
            "worker boot + restore state (to first report)": span(restart["end"], first_report),
            "first report -> window step has rows": span(first_report, window),
        },
    })
    return doc


def cmd_recovery(args: argparse.Namespace) -> None:
    emit({"bench": "recovery", "parallelism": args.parallelism, "interval": args.interval,
          "backoff_s": args.backoff, "kill_delay_s": args.kill_delay,
          "metrics_interval_s": args.metrics_interval, **environment()})
    cases = {"small": (args.small_keys, 1, 0, 3),
             "large": (args.keys, args.value_columns, args.min_state_mib << 20, 2)}
    chosen = list(cases) if args.state == "both" else [args.state]
    for case in chosen:
        keys, value_columns, min_state, min_checkpoints = cases[case]
        runs = []
        for i in range(args.repeats):
            doc = recovery_once(args, keys, value_columns, min_state, min_checkpoints)
            emit({"case": case, "repeat": i, "keys": keys, "value_columns": value_columns,
                  **doc})
            runs.append(doc)
        ok = [r for r in runs if r.get("kill_to_processing_s") is not None]
        parts = {name: rounded(median([r["parts"][name] for r in ok]))
                 for name in (ok[0]["parts"] if ok else {})}
        emit({
            "summary": f"recovery/{case}", "ok_runs": len(ok), "runs": len(runs),
            "median_checkpoint_mib": mib(median([r["checkpoint_bytes"] for r in ok])),
            "median_state_arrow_mib": median([r.get("state_arrow_mib") for r in ok]),
            "median_kill_to_processing_s": rounded(
                median([r["kill_to_processing_s"] for r in ok])),
            "all_kill_to_processing_s": [r["kill_to_processing_s"] for r in ok],
            "median_parts_s": parts,
        })


# ------------------------------------------------------------------ 3. growth


def cmd_growth(args: argparse.Namespace) -> None:
    emit({"bench": "growth", "keys": args.keys, "value_columns": args.value_columns,
          "parallelism": args.parallelism, "interval": args.interval, **environment()})
    directory = tempfile.mkdtemp(prefix="rheostat-chk-bench-")
    probe = Probe()
    rss: list[tuple[float, int]] = []
    stop_at = args.max_state_mib << 20
    stopper = Stopper()

    def watcher(log: ControllerLog) -> None:
        deadline = time.monotonic() + args.seconds
        try:
            while time.monotonic() < deadline:
                time.sleep(1.0)
                rss.append((time.monotonic(), workers_rss()))
                if any(sum(s.values()) >= stop_at for s in list(log.sizes.values())):
                    break
        finally:
            stopper.stop()

    started = time.monotonic()
    try:
        with controller_log(directory, keep_links=1 << 30) as log:
            thread = threading.Thread(target=watcher, args=(log,), daemon=True)
            thread.start()
            stopper.run(
                state_flow("chk-growth", args.keys, args.value_columns, 0.0),
                parallelism=args.parallelism, backend=probe, workers=args.parallelism,
                checkpoint_interval=args.interval, checkpoint_dir=directory)
            thread.join()
        rows = checkpoint_rows(probe, log)
        for row in rows:
            t = probe.triggers[row["id"]]
            near = min(rss, key=lambda x: abs(x[0] - t), default=(0, 0))
            state = logical_state(log.linked(row["id"])) or {}
            shutil.rmtree(log.linked(row["id"]), ignore_errors=True)
            emit({**row, "mib": mib(row["bytes"]), "state_rows": state.get("rows"),
                  "state_arrow_mib": mib(state.get("arrow_bytes")),
                  "t_trigger_s": round(t - started, 1), "workers_rss_mib": mib(near[1])})
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    emit({"summary": "growth", "checkpoints": len(rows),
          "max_checkpoint_mib": mib(max((r["bytes"] for r in rows), default=0)),
          "peak_workers_rss_mib": mib(max((r for _, r in rss), default=0))})


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    t = sub.add_parser("throughput", help="keyed windowed Nexmark job with/without checkpoints")
    t.add_argument("--events", type=int, default=40_000_000)
    t.add_argument("--repeats", type=int, default=3, help="pairs of runs (off, on)")
    t.add_argument("--interval", default="1s")
    t.add_argument("--parallelism", type=int, default=2)
    t.set_defaults(fn=cmd_throughput)

    r = sub.add_parser("recovery", help="time from a worker SIGKILL to processing again")
    r.add_argument("--state", choices=["small", "large", "both"], default="both")
    r.add_argument("--repeats", type=int, default=3)
    r.add_argument("--small-keys", type=int, default=1000)
    r.add_argument("--keys", type=int, default=1_000_000, help="large state: distinct keys")
    r.add_argument("--value-columns", type=int, default=16,
                   help="large state: float columns, each summed (8 bytes per key each)")
    r.add_argument("--min-state-mib", type=int, default=1000,
                   help="large state: kill after a checkpoint at least this big in the store")
    r.add_argument("--interval", default="1s")
    r.add_argument("--backoff", type=float, default=0.5, help="RestartPolicy.backoff_s")
    r.add_argument("--kill-delay", type=float, default=0.3,
                   help="seconds after a checkpoint completed")
    r.add_argument("--kill-worker", type=int, default=1)
    r.add_argument("--metrics-interval", type=float, default=0.02)
    r.add_argument("--fill-timeout", type=float, default=240)
    r.add_argument("--recover-timeout", type=float, default=120)
    r.add_argument("--after", type=float, default=1.0,
                   help="seconds to keep running after recovery before stopping")
    r.add_argument("--parallelism", type=int, default=2)
    r.set_defaults(fn=cmd_recovery)

    g = sub.add_parser("growth", help="checkpoint size and duration as keyed state grows")
    g.add_argument("--keys", type=int, default=1_000_000)
    g.add_argument("--value-columns", type=int, default=16)
    g.add_argument("--seconds", type=float, default=60)
    g.add_argument("--max-state-mib", type=int, default=4000,
                   help="stop after a checkpoint at least this big in the store")
    g.add_argument("--interval", default="1s")
    g.add_argument("--parallelism", type=int, default=2)
    g.set_defaults(fn=cmd_growth)

    args = ap.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
