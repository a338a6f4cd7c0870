"""The controller's half that runs live reconfigurations, one stage at a time.

Mixed into :class:`~rheostat.control.controller.Controller`. A request is cut into stages
(``plan.reconfig.stages``); each is planned against the current plan, checked first when
it updates a stateful step's function, sent to every worker, and done when every task it
touches has reported its part. A stage never starts while a checkpoint is in flight, and
none is triggered while one runs. See ``docs/architecture.md``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import cloudpickle

from rheostat.backends.base import Backend, CheckUpdate, Command, Reconfigure, RunConfig
from rheostat.control.http_api import ApiError, ApiRequest, HttpApi
from rheostat.control.job import JobStateMachine
from rheostat.control.reconfig import InFlight, ReconfigCoordinator, Request
from rheostat.control.tables import JobTables
from rheostat.plan.logical import STATEFUL_KINDS
from rheostat.plan.physical import PhysicalPlan
from rheostat.plan.reconfig import (
    Place,
    ReconfigError,
    Reconfiguration,
    UpdateFunction,
    describe,
    plan_reconfiguration,
    stages,
)
from rheostat.runtime.reconfig import UpdateChecked

if TYPE_CHECKING:
    from rheostat.control.checkpoints import CheckpointCoordinator

log = logging.getLogger("rheostat.controller")


@dataclasses.dataclass
class Growing:
    """Workers an elastic backend is starting for the tasks a request adds."""

    reconfig_id: int
    placement: dict[str, int]  # added task -> its new worker
    workers: list[int]
    ready: bool = False


class LiveReconfigurer:
    """Reconfiguration bookkeeping and I/O (state set up by ``Controller``)."""

    plan: PhysicalPlan
    placement: dict[str, int]
    config: RunConfig
    backend: Backend
    job: JobStateMachine
    checkpoints: CheckpointCoordinator | None
    tables: JobTables
    api: HttpApi | None
    reconfigs: ReconfigCoordinator
    reconfig_batch_groups: int
    _epoch: int
    _retired: dict[str, int]
    _retired_on: dict[str, int]
    worker_ids: list[int]
    _next_worker: int
    _growing: Growing | None
    _task_chains: dict[str, tuple[str, str]]
    clock: Callable[[], float]

    def _send_all(self, commands: list[Command]) -> None: ...  # provided by Controller

    def _maybe_reconfigure(self) -> None:
        """Start the next queued reconfiguration, never while a checkpoint is in flight."""
        if self.checkpoints is not None and self.checkpoints.in_flight is not None:
            return
        if self.reconfigs.in_flight is None:
            self._release_retired()
            self._release_idle_workers()
        if self._still_growing():
            return
        request = self.reconfigs.next_request()
        if request is None:
            return
        text = "; ".join(describe(op) for op in request.ops)
        try:
            request = self._placed_on_nodes(request)
            if request is None:
                return
            for op in request.ops:
                if isinstance(op, Place) and op.worker not in self.worker_ids:
                    raise ReconfigError(f"there is no worker {op.worker}: the job runs on "
                                        f"workers {self.worker_ids}")
            parts = stages(self.plan, self.placement, self.config.workers, request.ops,
                           self.reconfig_batch_groups)
        except Exception as exc:
            self.tables.reconfig_requested(request.reconfig_id, text)
            self._finish_reconfig(request, "refused", reason=str(exc), error=exc)
            return
        self._start_stage(request, parts, self.clock(), first=True)

    def _start_stage(
        self, request: Request, parts: list[list[Any]], started: float, first: bool
    ) -> None:
        """Plan and start the first of ``parts`` (the stages left of ``request``)."""
        text = "; ".join(describe(op) for op in request.ops)
        try:
            r = plan_reconfiguration(self.plan, self.placement, self.config.workers,
                                     parts[0], self._next_epoch(),
                                     allow_idle_tasks=len(parts) > 1 or not first,
                                     finished=self.job.finished_tasks)
            blob = cloudpickle.dumps(r.plan)
        except Exception as exc:
            if first:
                self.tables.reconfig_requested(request.reconfig_id, text)
            self._finish_reconfig(request, "refused" if first else "failed", reason=str(exc),
                                  error=exc)
            return
        spec = r.spec
        self._release_retired()
        if any(t in self._retired for t in spec.added):
            self.reconfigs.put_back(request)  # until their predecessors are committed
            return
        if spec.added and self.backend.elastic:
            grown = self._grow(request, r)
            if grown is None:
                return
            r = grown
        if first:
            self.tables.reconfig_requested(request.reconfig_id, text)
        touched = set(spec.affected_chains) | {
            r.plan.chain_of(s).chain_id for s in spec.updated_steps}
        expected = {t for t in set(self.plan.task_ids) | set(r.plan.task_ids)
                    if t.rsplit("#", 1)[0] in touched}
        if first:
            log.info("reconfiguration %d: %s (%d stages)", request.reconfig_id, text,
                     len(parts))
            self.tables.reconfig_started(request.reconfig_id, len(parts))
        checked = tuple(op.step for op in request.ops if isinstance(op, UpdateFunction)
                        and r.plan.steps[op.step].kind in STATEFUL_KINDS)
        checkers = {t for t in self.plan.task_ids if t not in self.job.finished_tasks
                    and any(s in self.plan.chain_of(t.rsplit("#", 1)[0]).steps
                            for s in checked)}
        f = self.reconfigs.started(request, r.plan, r.placement, expected, spec.removed,
                                   started, epoch=spec.reconfig_id, spec=spec, blob=blob,
                                   remaining=parts[1:], checkers=checkers)
        if checkers:  # first every task checks the new function against its state
            self._send_all([CheckUpdate(f.epoch, blob, checked)])
            return
        self._apply(f)

    def _next_epoch(self) -> int:
        """A new id for the markers of one stage (tasks tell stages apart by it)."""
        self._epoch += 1
        return self._epoch

    def _apply(self, f: InFlight) -> None:
        """Send the reconfiguration to every worker; from now on it runs."""
        self.job.track(f.plan.task_ids)
        if self.checkpoints is not None:  # a retired task's final state stays in them
            self.checkpoints.track(f.plan.task_ids)
        self._send_all([Reconfigure(f.spec, f.blob, f.placement)])
        if not f.expected:
            done = self.reconfigs.part_done(f.epoch, "", self.clock())
            assert done is not None
            self._reconfigured(done)

    def _update_checked(self, check: UpdateChecked) -> None:
        f = self.reconfigs.checked(check.reconfig_id, check.task_id, check.refusal)
        if f is None:
            return
        if f.refusal is not None:  # nothing has switched: the old function runs on
            self._finish_reconfig(f.request, "refused", reason=f.refusal)
        else:
            self._apply(f)

    def _release_retired(self) -> None:
        """Forget retired tasks whose final state no checkpoint needs any more."""
        for t, left in list(self._retired.items()):
            if left <= 0 and t in self.job.finished_tasks:
                del self._retired[t]
                self._retired_on.pop(t, None)
                self.job.forget(t)
                if self.checkpoints is not None:
                    self.checkpoints.forget(t)

    def _release_idle_workers(self) -> None:
        """Stop the workers of an elastic backend that host no task (live or retired),
        between reconfigurations."""
        if (not self.backend.elastic or self.job.state != "running"
                or self.reconfigs.in_flight is not None or self._growing is not None):
            return
        busy = set(self.placement.values()) | set(self._retired_on.values())
        idle = [w for w in self.worker_ids if w not in busy]
        if idle:
            log.info("releasing worker(s) %s: they host no task any more", idle)
            self.backend.release_workers(idle)
            self.worker_ids = [w for w in self.worker_ids if w not in idle]
            self.job.track(self.job.task_ids, len(self.worker_ids))

    def _grow(self, request: Request, r: Reconfiguration) -> Reconfiguration | None:
        """On an elastic backend each task ``r`` adds gets a worker of its own: the first
        call starts them and puts ``request`` back (the job runs on meanwhile); once
        they are ready, ``r`` with them in its placement."""
        g = self._growing
        if g is None or g.reconfig_id != request.reconfig_id:
            self._start_workers(request, r.plan, r.placement, {t: None for t in r.spec.added})
            return None
        return dataclasses.replace(r, placement={**r.placement, **self._grown().placement})

    def _placed_on_nodes(self, request: Request) -> Request | None:
        """``Place`` on a node: first start a worker there (None: the request waits for
        it, the job runs on), then place the task on that worker."""
        ops = [op for op in request.ops if isinstance(op, Place) and op.node is not None]
        if not ops:
            return request
        g = self._growing
        if g is not None and g.reconfig_id == request.reconfig_id and g.ready:
            placed = self._grown().placement
            return dataclasses.replace(request, ops=[
                Place(op.task, placed[op.task])
                if isinstance(op, Place) and op.node is not None else op
                for op in request.ops])
        if not self.backend.elastic:
            raise ReconfigError(f"placing a task on a node needs a backend that starts "
                                f"workers (Ray); this job runs on {type(self.backend).__name__}")
        for op in ops:
            if op.task not in self.placement:
                raise ReconfigError(f"the job has no task {op.task!r}; its tasks are "
                                    f"{self.plan.task_ids}")
        self._start_workers(request, self.plan, self.placement, {op.task: op.node for op in ops})
        return None

    def _start_workers(
        self, request: Request, plan: PhysicalPlan, placement: dict[str, int],
        tasks: dict[str, str | None],
    ) -> None:
        """Start a new worker for each of ``tasks`` (on its node, when one is named) and
        put ``request`` back until they are ready (``_still_growing``)."""
        placement, nodes = dict(placement), {}
        for task, node in tasks.items():
            placement[task] = self._next_worker
            if node is not None:
                nodes[self._next_worker] = node
            self._next_worker += 1
        new = [placement[t] for t in tasks]
        self.backend.add_workers(plan, placement, new, nodes or None)
        log.info("reconfiguration %d: starting worker(s) %s for %s%s", request.reconfig_id,
                 new, list(tasks), f" on {list(nodes.values())}" if nodes else "")
        self._growing = Growing(request.reconfig_id, {t: placement[t] for t in tasks}, new)
        self.reconfigs.put_back(request)

    def _grown(self) -> Growing:
        """The workers started for the request now planned: they join the job."""
        g = self._growing
        assert g is not None
        self._growing = None
        self.worker_ids += g.workers
        self.job.track(self.job.task_ids, len(self.worker_ids))
        return g

    def _still_growing(self) -> bool:
        """True while the workers of the next request are starting; refuses the request
        when they cannot start."""
        g = self._growing
        if g is None or g.ready:
            return False
        try:
            if not self.backend.workers_ready(g.workers):
                return True
        except Exception as exc:
            self._growing = None
            request = self.reconfigs.next_request()
            assert request is not None and request.reconfig_id == g.reconfig_id
            self.tables.reconfig_requested(
                request.reconfig_id, "; ".join(describe(op) for op in request.ops))
            self._finish_reconfig(request, "refused", reason=str(exc), error=exc)
            return True
        g.ready = True
        return False

    def _renumber_workers(self) -> None:
        """Before a restart on an elastic backend: workers 0..n-1 for the n that host
        tasks (released ones leave no gap)."""
        ids = sorted(set(self.placement.values()))
        number = {w: i for i, w in enumerate(ids)}
        self.placement = {t: number[w] for t, w in self.placement.items()}
        self.config = dataclasses.replace(self.config, workers=len(ids))
        self.worker_ids = list(range(len(ids)))
        self._next_worker = len(ids)
        self.job.track(self.job.task_ids, len(ids))
        self.tables.plan_changed(self.plan, self.placement)

    def _reconfigured(self, f: InFlight) -> None:
        for t in f.removed:
            self._retired[t] = 2 if self.checkpoints is not None else 0
            self._retired_on[t] = self.placement[t]
        self.plan, self.placement = f.plan, f.placement
        self.tables.plan_changed(self.plan, self.placement)
        self.tables.reconfig_progress(f.request.reconfig_id, f.moved, len(f.spec.added),
                                      len(f.spec.removed))
        if self.api is not None:
            self._task_chains = {c.task_id(i): (c.chain_id, ",".join(c.steps))
                                 for c in self.plan.chains for i in range(c.parallelism)}
        if f.remaining:  # the next stage at once: no checkpoint in between
            self._start_stage(f.request, f.remaining, f.started, first=False)
            return
        log.info("reconfiguration %d done in %.0f ms", f.request.reconfig_id,
                 f.duration_s * 1000)
        self._finish_reconfig(f.request, "done", f.duration_s)
        if self.checkpoints is not None:
            self.checkpoints.soon()  # the new configuration's first checkpoint

    def _finish_reconfig(
        self, request: Request, state: str, duration_s: float | None = None,
        reason: str | None = None, error: BaseException | None = None,
    ) -> None:
        self.tables.reconfig_done(request.reconfig_id, state, duration_s, reason)
        if request.reply.done():
            return
        if state == "done":
            request.reply.set_result({
                "reconfig_id": request.reconfig_id, "status": state,
                "duration_ms": None if duration_s is None else round(duration_s * 1000, 1),
                "reason": reason,
            })
        else:
            if error is None or not isinstance(error, ReconfigError):
                error = ReconfigError(f"reconfiguration {request.reconfig_id} {state}: {reason}")
            request.reply.set_exception(error)

    def _refuse_rest(self, reason: str) -> None:
        f = self.reconfigs.abandon()
        if f is not None:
            self._finish_reconfig(f.request, "failed", reason=reason)
        for request in self.reconfigs.drain(reason):
            self.tables.reconfig_requested(request.reconfig_id,
                                           "; ".join(describe(op) for op in request.ops))
            self._finish_reconfig(request, "refused", reason=reason)


#: An API request whose answer comes later (a reconfiguration takes a while).
_LATER = object()


def _answer(request: ApiRequest, outcome: Future[dict[str, Any]]) -> None:
    """Copy a reconfiguration's outcome to the HTTP request waiting for it."""
    if request.reply.done():
        return
    error = outcome.exception()
    if error is None:
        request.reply.set_result(outcome.result())
    elif isinstance(error, ReconfigError):
        request.reply.set_exception(ApiError(409, str(error)))
    else:
        request.reply.set_exception(error)
