"""The worker process: hosts its tasks, talks to peers over links, reports to the controller.

Messages to the controller are pickled tuples on the control pipe: ``("finished", task)``,
``("failed", task, error, traceback)``, ``("metrics", {...})``, ``("sink", step, ipc)``,
``("bye",)``. The controller sends ``"stop"``. A worker whose control pipe closes (the
controller died) exits at once, so no process outlives its job.
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
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle
import pyarrow as pa

from rheostat.backends.local.links import Link, RemoteInput, RemoteOutput, encode_batch
from rheostat.plan.physical import PhysicalPlan
from rheostat.runtime.channels import InputEndpoint, LocalChannel, OutputEndpoint
from rheostat.runtime.host import TaskCrashed, TaskHost


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
    worker_main(worker, boot["plan"], boot["placement"], control, peers,
                boot["capacity"], boot["metrics_interval"])


def worker_main(
    worker: int,
    plan_blob: bytes,
    placement: dict[str, int],
    control: Connection,
    peers: dict[int, Connection],
    capacity: int,
    metrics_interval: float,
) -> None:
    wake = threading.Event()
    commands: deque[Any] = deque()
    threading.Thread(target=_read_control, args=(control, commands, wake), daemon=True).start()
    try:
        plan: PhysicalPlan = cloudpickle.loads(plan_blob)
        links = {w: Link(conn, wake) for w, conn in peers.items()}
        inputs, outputs = _endpoints(plan, placement, worker, links, capacity)
        for link in links.values():
            link.start()
        my_tasks = [t for t in plan.task_ids if placement[t] == worker]

        def to_driver(step_id: str, batch: pa.RecordBatch) -> None:
            control.send(("sink", step_id, encode_batch(batch).to_pybytes()))

        host = TaskHost(plan, my_tasks, inputs, outputs, to_driver, isolate_tasks=True)
    except Exception as exc:
        _report_failure(control, f"worker {worker}", exc)
        _wait_for_stop(commands, wake)
        return
    _run(host, control, commands, wake, metrics_interval)


def _endpoints(
    plan: PhysicalPlan, placement: dict[str, int], me: int, links: dict[int, Link], capacity: int
) -> tuple[dict[int, InputEndpoint], dict[int, OutputEndpoint]]:
    inputs: dict[int, InputEndpoint] = {}
    outputs: dict[int, OutputEndpoint] = {}
    for ch in plan.channels:
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


def _run(
    host: TaskHost, control: Connection, commands: deque[Any], wake: threading.Event,
    metrics_interval: float,
) -> None:
    last_metrics = time.monotonic()
    idle_wait = 0.0005
    crashed = False
    while True:
        if commands:
            break  # the only command today is "stop"
        moved = False
        if not crashed and not host.done:
            try:
                moved = host.run_round()
            except TaskCrashed as crash:
                crashed = True
                _report_failure(control, crash.task_id, crash.error)
        finished = host.newly_finished()
        now = time.monotonic()
        if finished or now - last_metrics >= metrics_interval:
            control.send(("metrics", host.metrics()))  # before "finished": final figures first
            last_metrics = now
        for task_id in finished:
            control.send(("finished", task_id))
        if moved:
            idle_wait = 0.0005
        else:
            wake.wait(idle_wait)
            wake.clear()
            idle_wait = min(idle_wait * 2, 0.05)
    control.send(("metrics", host.metrics()))
    control.send(("bye",))


def _read_control(control: Connection, commands: deque[Any], wake: threading.Event) -> None:
    try:
        while True:
            commands.append(control.recv())
            wake.set()
    except (EOFError, OSError):
        os._exit(1)  # the controller is gone: never outlive the job


def _wait_for_stop(commands: deque[Any], wake: threading.Event) -> None:
    while not commands:
        wake.wait(0.1)
        wake.clear()


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
