"""The worker process: hosts its tasks, talks to peers over links, reports to the controller.

Messages to the controller are pickled tuples on the control pipe: ``("finished", task)``,
``("failed", task, error, traceback)``, ``("metrics", {...})``, ``("sink", step, ipc, key)``,
``("ack", task, checkpoint, parts, inline)``, ``("ack_failed", task, checkpoint, reason)``,
``("bye",)``. The controller sends the commands of ``backends.base``. A worker whose
control pipe closes (the controller died) exits at once, so no process outlives its job.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle
import pyarrow as pa

from rheostat.backends.base import StopWorker, carry_out
from rheostat.backends.local.links import Link, RemoteInput, RemoteOutput, encode_batch
from rheostat.plan.physical import Channel, PhysicalPlan
from rheostat.runtime.channels import InputEndpoint, LocalChannel, OutputEndpoint
from rheostat.runtime.host import TaskCrashed, TaskHost
from rheostat.runtime.messages import FINAL_CHECKPOINT
from rheostat.runtime.reconfig import UpdateChecked
from rheostat.runtime.snapshots import (
    build_restores,
    dumps_state,
    encode_snapshot,
    write_snapshot,
)


def main(argv: list[str]) -> None:
    """Entry point: ``python -m rheostat.backends.local.worker WORKER CONTROL_FD PEER=FD...``.

    The job arrives on the control pipe as a cloudpickled bootstrap dict, so the user's
    script is never re-imported here (functions defined in ``__main__`` travel by value).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the controller's to handle
    worker, control_fd = int(argv[0]), int(argv[1])
    peers = {int(p): Connection(int(fd)) for p, fd in (a.split("=") for a in argv[2:])}
    control = Connection(control_fd)
    boot = pickle.loads(control.recv_bytes())
    sys.path[:] = boot["sys_path"]
    Worker(worker, control, peers, boot).run()


class Worker:
    """One worker process: its task host, its links, and the checkpoint uploads in flight."""

    def __init__(
        self, worker: int, control: Connection, peers: dict[int, Connection], boot: dict[str, Any]
    ) -> None:
        self.worker = worker
        self.control = control
        self.metrics_interval: float = boot["metrics_interval"]
        self.store = cloudpickle.loads(boot["store"]) if boot["store"] else None
        self.wake = threading.Event()
        self.commands: deque[Any] = deque()
        self.uploads: list[tuple[Future[tuple[Any, ...]], str, int]] = []
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="checkpoint-upload")
        threading.Thread(target=_read_control, args=(control, self.commands, self.wake),
                         daemon=True).start()
        self.host: TaskHost | None = None
        self._stop = False
        try:
            plan: PhysicalPlan = cloudpickle.loads(boot["plan"])
            placement: dict[str, int] = boot["placement"]
            links = {w: Link(conn, self.wake) for w, conn in peers.items()}
            self.links, self.capacity = links, boot["capacity"]
            inputs, outputs = _endpoints(plan, placement, worker, links, boot["capacity"])
            for link in links.values():
                link.start()
            my_tasks = [t for t in plan.task_ids if placement[t] == worker]
            restore = boot["restore"]
            restores = None if restore is None else build_restores(
                plan, my_tasks, restore.point, restore.parallelism
            )
            self.host = TaskHost(plan, my_tasks, inputs, outputs, self._to_driver, restores,
                                 self.store is not None, isolate_tasks=True,
                                 on_reconfig_report=self._ship_reconfiguration,
                                 between_tasks=self._between_tasks)
        except Exception as exc:
            _report_failure(control, f"worker {worker}", exc)

    def _to_driver(self, step_id: str, batch: pa.RecordBatch, key: Any = None) -> None:
        self.control.send(("sink", step_id, encode_batch(batch).to_pybytes(), key))

    def run(self) -> None:
        host = self.host
        last_metrics = time.monotonic()
        idle_wait = 0.0005
        crashed = host is None
        while True:
            if self._handle_commands() or self._stop:
                break
            moved = False
            if not crashed and host is not None and not host.done:
                try:
                    moved = host.run_round()
                except TaskCrashed as crash:
                    crashed = True
                    _report_failure(self.control, crash.task_id, crash.error)
            if host is None:
                self.wake.wait(0.1)
                continue
            self._ship_snapshots()
            self._ship_reconfiguration()
            finished = host.newly_finished()
            now = time.monotonic()
            if finished or now - last_metrics >= self.metrics_interval:
                self.control.send(("metrics", host.metrics()))  # final figures first
                last_metrics = now
            for task_id in finished:
                self.control.send(("finished", task_id))
            if moved:
                idle_wait = 0.0005
            else:
                self.wake.wait(idle_wait if not self.uploads else 0.001)
                self.wake.clear()
                idle_wait = min(idle_wait * 2, 0.05)
        if host is not None:
            self.control.send(("metrics", host.metrics()))
        self.control.send(("bye",))

    def _between_tasks(self) -> None:
        """Commands that came in while the round runs wait for one task's step, not for
        the whole round (a reconfiguration's stages are chains of such hops)."""
        if self.commands and not self._stop:
            self._stop = self._handle_commands()

    def _handle_commands(self) -> bool:
        """Carry out the controller's commands in order; True on stop."""
        while self.commands:
            command = self.commands.popleft()
            if isinstance(command, StopWorker):
                return True
            if self.host is None:
                continue
            try:
                if carry_out(self.host, command, self.worker, self._new_endpoints):
                    self.control.send(("committed", self.worker))
                self._ship_reconfiguration()  # a hand-over done at once is sent at once
            except TaskCrashed as crash:
                _report_failure(self.control, crash.task_id, crash.error)
        return False

    def _new_endpoints(
        self, plan: PhysicalPlan, placement: dict[str, int], channel_ids: Iterable[int]
    ) -> tuple[dict[int, InputEndpoint], dict[int, OutputEndpoint]]:
        wanted = set(channel_ids)
        return _endpoints(plan, placement, self.worker, self.links, self.capacity,
                          lambda c: c.channel_id in wanted)

    def _ship_reconfiguration(self) -> None:
        """State handed over (encoded like checkpoint state) and parts done."""
        assert self.host is not None
        handoffs, done = self.host.drain_reconfiguration()
        for h in handoffs:
            self.control.send(("handoff", h.reconfig_id, h.step_id, h.from_task, h.to_task,
                               dumps_state(h.state)))
        for d in done:
            if isinstance(d, UpdateChecked):
                self.control.send(("checked", d.reconfig_id, d.task_id, d.refusal))
            else:
                self.control.send(("reconfigured", d.reconfig_id, d.task_id))

    def _ship_snapshots(self) -> None:
        """Serialise and upload new snapshots in the background; ack each when written.

        The states operators hand out are immutable (Arrow tables, bytes, fresh
        containers), so the task thread goes on processing while they are written.
        """
        assert self.host is not None
        for snap in self.host.drain_snapshots():
            if snap.checkpoint_id == FINAL_CHECKPOINT:
                blobs = encode_snapshot(snap)
                self.control.send(("ack", snap.task_id, snap.checkpoint_id, (), blobs))
            else:
                future = self.pool.submit(write_snapshot, self.store, snap)
                self.uploads.append((future, snap.task_id, snap.checkpoint_id))
        still = []
        for future, task_id, checkpoint_id in self.uploads:
            if not future.done():
                still.append((future, task_id, checkpoint_id))
            elif future.exception() is not None:
                reason = f"{type(future.exception()).__name__}: {future.exception()}"
                self.control.send(("ack_failed", task_id, checkpoint_id, reason))
            else:
                self.control.send(("ack", task_id, checkpoint_id, future.result(), {}))
        self.uploads = still


def _endpoints(
    plan: PhysicalPlan, placement: dict[str, int], me: int, links: dict[int, Link], capacity: int,
    wanted: Callable[[Channel], bool] = lambda c: True,
) -> tuple[dict[int, InputEndpoint], dict[int, OutputEndpoint]]:
    inputs: dict[int, InputEndpoint] = {}
    outputs: dict[int, OutputEndpoint] = {}
    for ch in filter(wanted, plan.channels):
        src, dst = placement[ch.src_task], placement[ch.dst_task]
        if src == me and dst == me:
            local = LocalChannel(capacity)
            inputs[ch.channel_id] = local
            outputs[ch.channel_id] = local
        elif src == me:
            outputs[ch.channel_id] = RemoteOutput(links[dst], ch.channel_id, capacity)
        elif dst == me:
            inputs[ch.channel_id] = RemoteInput(links[src], ch.channel_id)
    return inputs, outputs


def _read_control(control: Connection, commands: deque[Any], wake: threading.Event) -> None:
    try:
        while True:
            commands.append(control.recv())
            wake.set()
    except (EOFError, OSError):
        os._exit(1)  # the controller is gone: never outlive the job


def _report_failure(control: Connection, where: str, error: BaseException) -> None:
    tb = "".join(traceback.format_exception(error))
    try:
        blob = pickle.dumps(error)
        pickle.loads(blob)
    except Exception:
        blob = pickle.dumps(RuntimeError(f"{type(error).__name__}: {error}"))
    control.send(("failed", where, blob, tb))


if __name__ == "__main__":
    main(sys.argv[1:])
