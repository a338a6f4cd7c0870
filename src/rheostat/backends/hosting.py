"""A worker's loop, the same on every backend that runs workers apart from the controller.

The loop hosts the worker's tasks, talks to peer workers over links and reports to the
controller with the protocol's events (:mod:`rheostat.protocol`), the same dataclasses
the inline backend hands over directly: state handed over travels encoded like
checkpoint state, a failure as an error that carries the worker's traceback, and a
worker's last event is ``WorkerStopped``. How events and the controller's commands travel
(a pipe, Ray actor calls) is the backend's business.
"""

from __future__ import annotations

import dataclasses
import pickle
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import cloudpickle
import pyarrow as pa

from rheostat.backends.base import carry_out
from rheostat.backends.links import Link, PeerGone, RemoteInput, RemoteOutput
from rheostat.plan.physical import Channel, PhysicalPlan
from rheostat.protocol import (
    CheckpointAck,
    CheckpointFailed,
    Event,
    FinalCommitted,
    MetricsReport,
    PartDone,
    SinkData,
    StateHandedOver,
    StopWorker,
    TaskFailed,
    TaskFinished,
    WorkerStopped,
)
from rheostat.runtime.channels import InputEndpoint, LocalChannel, OutputEndpoint
from rheostat.runtime.host import TaskCrashed, TaskHost
from rheostat.runtime.messages import FINAL_CHECKPOINT
from rheostat.runtime.snapshots import (
    build_restores,
    dumps_state,
    encode_snapshot,
    write_snapshot,
)
from rheostat.runtime.task import TaskSnapshot

#: Sends one event to the controller.
Emit = Callable[[Event], None]


class WorkerError(RuntimeError):
    """An error raised in a worker, with the worker's traceback in the message."""


def boot_blob(
    plan: PhysicalPlan, placement: dict[str, int], capacity: int, metrics_interval: float,
    store: Any, restore: Any, sys_path: list[str], joining: bool = False,
) -> dict[str, Any]:
    """What a worker needs to start: picklable with the standard pickle (the plan and
    the store travel cloudpickled, so functions defined in ``__main__`` go by value).

    ``joining``: a worker started for a live reconfiguration hosts nothing until its
    ``Reconfigure`` arrives, even where ``placement`` already puts tasks on it. A task
    started at boot would take rows of the key groups it gains before it knows it must
    hold them back for their state (the reconfiguration then replaced it, rows and all)."""
    return {
        "joining": joining,
        "plan": cloudpickle.dumps(plan),
        "placement": placement,
        "capacity": capacity,
        "metrics_interval": metrics_interval,
        "sys_path": sys_path,
        "store": cloudpickle.dumps(store) if store is not None else None,
        "restore": restore,
    }


class WorkerLoop:
    """One worker: its task host, its links, and the checkpoint uploads in flight.

    ``commands`` is filled (and ``wake`` set) by whoever receives the controller's
    commands; ``emit`` sends an event tuple to the controller.
    """

    def __init__(
        self, worker: int, emit: Emit, commands: deque[Any], wake: threading.Event,
        links: dict[int, Link], boot: dict[str, Any],
    ) -> None:
        self.worker = worker
        self.emit = emit
        self.commands = commands
        self.wake = wake
        self.links = links
        self.capacity: int = boot["capacity"]
        self.metrics_interval: float = boot["metrics_interval"]
        self.store = cloudpickle.loads(boot["store"]) if boot["store"] else None
        self.snapshots = SnapshotShipper(self.store, emit, background=True)
        self.host: TaskHost | None = None
        self._stop = False
        try:
            plan: PhysicalPlan = cloudpickle.loads(boot["plan"])
            placement: dict[str, int] = boot["placement"]
            joining = boot.get("joining", False)  # its tasks come with Reconfigure
            inputs, outputs = ({}, {}) if joining else endpoints(
                plan, placement, worker, links, self.capacity)
            for link in links.values():
                link.start()
            my_tasks = [] if joining else [t for t in plan.task_ids if placement[t] == worker]
            restore = boot["restore"]
            restores = None if restore is None else build_restores(
                plan, my_tasks, restore.point, restore.parallelism
            )
            self.host = TaskHost(plan, my_tasks, inputs, outputs, self._to_driver, restores,
                                 self.store is not None, isolate_tasks=True,
                                 on_reconfig_report=self._ship_reconfiguration,
                                 between_tasks=self._between_tasks)
        except Exception as exc:
            report_failure(emit, f"worker {worker}", exc)

    def _to_driver(self, step_id: str, batch: pa.RecordBatch, key: Any = None) -> None:
        self.emit(SinkData(step_id, batch, key))

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
                    report_failure(self.emit, crash.task_id, crash.error)
            if host is None:
                self.wake.wait(0.1)
                continue
            self._ship_snapshots()
            self._ship_reconfiguration()
            finished = host.newly_finished()
            now = time.monotonic()
            if finished or now - last_metrics >= self.metrics_interval:
                self.emit(MetricsReport(self.worker, host.metrics()))  # final figures first
                last_metrics = now
            for task_id in finished:
                self.emit(TaskFinished(task_id))
            if moved:
                idle_wait = 0.0005
            else:
                self.wake.wait(idle_wait if not self.snapshots.busy else 0.001)
                self.wake.clear()
                idle_wait = min(idle_wait * 2, 0.05)
        if host is not None:
            self.emit(MetricsReport(self.worker, host.metrics()))
        self.emit(WorkerStopped(self.worker))

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
                    self.emit(FinalCommitted(self.worker))
                self._ship_reconfiguration()  # a hand-over done at once is sent at once
            except TaskCrashed as crash:
                report_failure(self.emit, crash.task_id, crash.error)
        return False

    def _new_endpoints(
        self, plan: PhysicalPlan, placement: dict[str, int], channel_ids: Iterable[int]
    ) -> tuple[dict[int, InputEndpoint], dict[int, OutputEndpoint]]:
        wanted = set(channel_ids)
        return endpoints(plan, placement, self.worker, self.links, self.capacity,
                         lambda c: c.channel_id in wanted)

    def _ship_reconfiguration(self) -> None:
        """State handed over (encoded like checkpoint state) and parts done."""
        assert self.host is not None
        handoffs, done = self.host.drain_reconfiguration()
        for h in handoffs:
            self.emit(StateHandedOver(dataclasses.replace(h, state=dumps_state(h.state))))
        for d in done:
            self.emit(PartDone(d))

    def _ship_snapshots(self) -> None:
        assert self.host is not None
        self.snapshots.ship(self.host.drain_snapshots())


class SnapshotShipper:
    """A host's new snapshots as events: a final snapshot is acknowledged with its parts
    inline (the controller writes them); any other is written to the store and
    acknowledged once written, or reported failed (a failing store fails that checkpoint,
    not the job).

    ``background``: write on a thread (a worker: the states operators hand out are
    immutable, so the task goes on processing meanwhile); else at once (the inline
    backend, deterministic).
    """

    def __init__(self, store: Any, emit: Emit, background: bool) -> None:
        self.store, self.emit = store, emit
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="checkpoint-upload") \
            if background else None
        self.uploads: list[tuple[Future[tuple[Any, ...]], str, int]] = []

    @property
    def busy(self) -> bool:
        """Uploads are still running."""
        return bool(self.uploads)

    def ship(self, snapshots: Iterable[TaskSnapshot]) -> None:
        for snap in snapshots:
            if snap.checkpoint_id == FINAL_CHECKPOINT:
                self.emit(CheckpointAck(snap.task_id, snap.checkpoint_id, (),
                                        encode_snapshot(snap)))
                continue
            future: Future[tuple[Any, ...]]
            if self.pool is not None:
                future = self.pool.submit(write_snapshot, self.store, snap)
            else:
                future = Future()
                try:
                    future.set_result(write_snapshot(self.store, snap))
                except Exception as exc:
                    future.set_exception(exc)
            self.uploads.append((future, snap.task_id, snap.checkpoint_id))
        still = []
        for future, task_id, checkpoint_id in self.uploads:
            if not future.done():
                still.append((future, task_id, checkpoint_id))
            elif (error := future.exception()) is not None:
                reason = f"{type(error).__name__}: {error}"
                self.emit(CheckpointFailed(task_id, checkpoint_id, reason))
            else:
                self.emit(CheckpointAck(task_id, checkpoint_id, tuple(future.result())))
        self.uploads = still


def endpoints(
    plan: PhysicalPlan, placement: dict[str, int], me: int, links: dict[int, Link], capacity: int,
    wanted: Callable[[Channel], bool] = lambda c: True,
) -> tuple[dict[int, InputEndpoint], dict[int, OutputEndpoint]]:
    """The ends of ``plan``'s channels (those ``wanted``) that worker ``me`` holds."""
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


def _peer_gone(error: BaseException | None) -> PeerGone | None:
    """The broken wire to a dead peer behind ``error`` (a step's error wraps it), if any."""
    while error is not None:
        if isinstance(error, PeerGone):
            return error
        error = error.__cause__ or error.__context__
    return None


def report_failure(emit: Emit, where: str, error: BaseException) -> None:
    """``TaskFailed`` for ``where`` (a task, or "worker N"), with an error the controller
    can unpickle that carries this worker's traceback.

    A task that failed only because a peer worker died (its wire broke under a send) is
    not reported as its step failing, with the rows it was sending: the error reads
    "worker N died", as the backend's own report of that death does."""
    gone = _peer_gone(error)
    if gone is not None:
        emit(TaskFailed(where, WorkerError(f"{gone} (seen by task {where})")))
        return
    tb = "".join(traceback.format_exception(error))
    if hasattr(error, "traceback_text"):  # the user's traceback is in it already
        try:
            pickle.loads(pickle.dumps(error))
        except Exception:
            error = WorkerError(f"{type(error).__name__}: {error}\n--- worker traceback "
                                f"---\n{tb}")
    else:
        error = WorkerError(f"{error}\n--- worker traceback ---\n{tb}")
    emit(TaskFailed(where, error))
