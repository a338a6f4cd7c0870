"""The local backend: worker processes on this machine.

Each worker is a fresh ``python -m rheostat.backends.local.worker`` in its own session
(Ctrl-C reaches only the controller, which stops the workers). Each pair of workers
shares one socket pair for the channels between their tasks; each worker has a control
socket to the controller, whose end-of-file tells the controller the worker died.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection, wait

from rheostat.backends.base import (
    Backend,
    Command,
    Event,
    RestoreFrom,
    RunConfig,
    StopWorker,
    WorkerDied,
    WorkerStopped,
)
from rheostat.backends.hosting import boot_blob
from rheostat.plan.physical import PhysicalPlan


def _worker_env() -> dict[str, str]:
    """The worker's environment: glibc keeps freed batch-sized buffers for reuse instead
    of returning them to the kernel after each batch (fresh pages halved numpy-heavy
    steps here). Values already set by the user win."""
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(8 << 20))
    env.setdefault("MALLOC_TRIM_THRESHOLD_", str(64 << 20))
    return env


class LocalBackend(Backend):
    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        self._controls: list[Connection] = []
        self._gone: set[int] = set()
        self._stopping = False

    def start(
        self, plan: PhysicalPlan, placement: dict[str, int], config: RunConfig,
        restore: RestoreFrom | None = None,
    ) -> None:
        self._gone, self._stopping = set(), False
        n = config.workers
        peer_socks: list[dict[int, socket.socket]] = [{} for _ in range(n)]
        for a, b in itertools.combinations(range(n), 2):
            peer_socks[a][b], peer_socks[b][a] = socket.socketpair()
        boot = pickle.dumps(boot_blob(
            plan, placement, config.channel_capacity_bytes, config.metrics_interval_s,
            config.store, restore, list(sys.path),
        ))
        for w in range(n):
            parent, child = socket.socketpair()
            fds = [child.fileno()] + [s.fileno() for s in peer_socks[w].values()]
            args = [str(w), str(child.fileno())] + [
                f"{peer}={s.fileno()}" for peer, s in peer_socks[w].items()
            ]
            proc = subprocess.Popen(
                [sys.executable, "-m", "rheostat.backends.local.worker", *args],
                pass_fds=fds, stdin=subprocess.DEVNULL, start_new_session=True,
                env=_worker_env(),
            )
            child.close()
            conn = Connection(parent.detach())
            conn.send_bytes(boot)
            self._procs.append(proc)
            self._controls.append(conn)
        for socks in peer_socks:
            for s in socks.values():
                s.close()  # the workers hold their own copies

    def send(self, worker: int, command: Command) -> None:
        if isinstance(command, StopWorker):
            self._stopping = True
        if worker not in self._gone:
            with contextlib.suppress(OSError):
                self._controls[worker].send(command)

    def events(self, timeout: float) -> list[Event]:
        events: list[Event] = []
        live = [c for w, c in enumerate(self._controls) if w not in self._gone]
        for conn in wait(live, timeout):
            w = self._controls.index(conn)  # type: ignore[arg-type]
            events += self._drain(w)
        return events

    def _drain(self, w: int) -> list[Event]:
        conn = self._controls[w]
        events: list[Event] = []
        try:
            while conn.poll():
                event = conn.recv()
                if not isinstance(event, WorkerStopped):
                    events.append(event)
        except (EOFError, OSError):
            self._gone.add(w)
            if not self._stopping:
                proc = self._procs[w]
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(1)
                events.append(WorkerDied(w, proc.poll()))
        return events

    def stop(self) -> list[Event]:
        self._stopping = True
        for w in range(len(self._procs)):
            self.send(w, StopWorker())
        events: list[Event] = []
        deadline = time.monotonic() + 5
        while len(self._gone) < len(self._procs) and time.monotonic() < deadline:
            events += self.events(timeout=0.1)  # until each worker's end-of-file
        for proc in self._procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for conn in self._controls:
            conn.close()
        self._procs, self._controls = [], []
        return events

    def kill(self) -> None:
        """Kill every worker at once (a restart does not wait for a clean stop)."""
        for proc in self._procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        self._stopping = True
