"""The worker process of the local backend.

It runs :class:`~rheostat.backends.hosting.WorkerLoop`; its events (the protocol's
dataclasses, :mod:`rheostat.protocol`) are pickled on the control pipe to the
controller, which sends its commands the same way. A worker whose control pipe closes
(the controller died) exits at once, so no process outlives its job.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

from rheostat.backends.hosting import WorkerLoop
from rheostat.backends.links import Link


def main(argv: list[str]) -> None:
    """Entry point: ``python -m rheostat.backends.local.worker WORKER CONTROL_FD PEER=FD...``.

    The job arrives on the control pipe as a bootstrap dict, so the user's script is
    never re-imported here (functions defined in ``__main__`` travel by value).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the controller's to handle
    worker, control_fd = int(argv[0]), int(argv[1])
    peers = {int(p): Connection(int(fd)) for p, fd in (a.split("=") for a in argv[2:])}
    control = Connection(control_fd)
    try:
        boot = pickle.loads(control.recv_bytes())
    except (EOFError, OSError):
        os._exit(1)  # the controller died before the job arrived
    sys.path[:] = boot["sys_path"]
    wake = threading.Event()
    commands: deque[Any] = deque()
    threading.Thread(target=_read_control, args=(control, commands, wake), daemon=True).start()
    links = {w: Link(conn, wake, peer=w) for w, conn in peers.items()}
    WorkerLoop(worker, control.send, commands, wake, links, boot).run()


def _read_control(control: Connection, commands: deque[Any], wake: threading.Event) -> None:
    try:
        while True:
            commands.append(control.recv())
            wake.set()
    except (EOFError, OSError):
        os._exit(1)  # the controller is gone: never outlive the job


if __name__ == "__main__":
    main(sys.argv[1:])
