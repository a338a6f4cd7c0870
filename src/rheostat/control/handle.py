"""A running job: reconfigure it, query it, wait for it.

``rs.start(flow, ...)`` runs the controller on a background thread and returns a
:class:`Job`. Each reconfiguration method blocks until the change is done everywhere (or
refused, with the reason) and returns its outcome; ``wait=False`` returns a future.

>>> import rheostat as rs
>>> flow = rs.Flow("doc_handle")
>>> out = rs.sinks.collect()
>>> flow.source("n", rs.testing.rows([{"k": i} for i in range(10)])).key_by("k").process(
...     rs.stateful_map(lambda s, row: ((s or 0) + 1, row)), name="count").sink("out", out)
>>> job = rs.start(flow, backend="inline")
>>> _ = job.wait()
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Any

import pyarrow as pa

from rheostat.control.controller import Controller, JobResult
from rheostat.plan.reconfig import (
    MoveKeyGroups,
    Operation,
    Place,
    Rescale,
    SetKnob,
    UpdateFunction,
)


class Job:
    """Handle of a job started with ``rs.start``."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.name = controller.plan.flow_name
        self._result: JobResult | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"rheostat-{self.name}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self.controller.run()
        except BaseException as exc:  # re-raised by wait()
            self._error = exc

    # --- reconfiguration ------------------------------------------------------------

    def reconfigure(
        self, *ops: Operation, wait: bool = True, timeout: float | None = 300
    ) -> dict[str, Any] | Future[dict[str, Any]]:
        """Apply ``ops`` as one reconfiguration, e.g.
        ``job.reconfigure(rs.Rescale("count", 4), rs.SetKnob("score", "threshold", 0.7))``."""
        reply = self.controller.reconfigure(list(ops))
        return reply.result(timeout) if wait else reply

    def rescale(self, step: str, parallelism: int, **kw: Any) -> Any:
        """Run ``step`` (and the steps fused with it) on ``parallelism`` tasks."""
        return self.reconfigure(Rescale(step, parallelism), **kw)

    def move_key_groups(self, step: str, groups: Iterable[int], to_task: int, **kw: Any) -> Any:
        """Give key groups ``groups`` of keyed step ``step`` to its task ``to_task``."""
        return self.reconfigure(MoveKeyGroups(step, tuple(groups), to_task), **kw)

    def update_function(self, step: str, function: Any, **kw: Any) -> Any:
        """Swap the function of ``step``; the new one must accept the step's state."""
        return self.reconfigure(UpdateFunction(step, function), **kw)

    def set_knob(self, step: str, name: str, value: Any, **kw: Any) -> Any:
        """Set the declared knob ``name`` of ``step`` to ``value``."""
        return self.reconfigure(SetKnob(step, name, value), **kw)

    def place(self, task: str, worker: int = -1, *, node: str | None = None, **kw: Any) -> Any:
        """Move ``task`` (e.g. ``"counts#1"``) with its key groups' state to ``worker``,
        or on Ray to a new worker on ``node`` (a node id or IP address)."""
        return self.reconfigure(Place(task, worker, node), **kw)

    # --- state ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def sql(self, query: str) -> pa.Table:
        """Query the job's tables while it runs (see ``JobResult.sql``)."""
        return self.controller.tables.query(query)

    def cancel(self) -> None:
        """Stop the job; ``wait()`` then returns its result with state ``cancelled``."""
        self.controller.cancel()

    def wait(self, timeout: float | None = None) -> JobResult:
        """Block until the job ends; its result, or the error that failed it."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"job {self.name!r} still runs after {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result
