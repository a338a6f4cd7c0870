"""The controller's brain: one pure object that owns the control plane's state.

:class:`ControlPlane` owns the job's state machine, the checkpoint in flight, the
reconfiguration stages, the plan and placement, the workers and the retired tasks. It
does no I/O: every input is an event (a worker's, or the outcome of an action the shell
carried out) and every output is an :data:`Action` for the shell to carry out, in order.
The :class:`~rheostat.control.controller.Controller` is the shell: it moves events from
the backend in and actions out, and writes the job's tables, checkpoints and API.

>>> from rheostat.protocol import TaskFinished
>>> from rheostat.plan.physical import lower
>>> import rheostat as rs
>>> flow = rs.Flow("doc_plane")
>>> _ = flow.source("n", rs.testing.rows([{"x": 1}])).sink("out", rs.sinks.null())
>>> plane = ControlPlane(lower(flow.steps, 1), workers=1)
>>> plane.handle(TaskFinished(plane.plan.task_ids[0]), now=0.0)
[Record(what='job_state', args=('finished', None)), Send(worker=0, command=StopWorker())]
>>> plane.job.state
'finished'
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import cloudpickle

from rheostat.control.autoscale import Autoscale, Autoscaler
from rheostat.control.checkpoints import CheckpointCoordinator, Completed
from rheostat.control.job import JobStateMachine, Restart
from rheostat.control.reconfig import InFlight, ReconfigCoordinator, Request
from rheostat.control.sensing import MetricsHistory
from rheostat.plan.keygroups import owners_digest
from rheostat.plan.logical import STATEFUL_KINDS
from rheostat.plan.physical import PhysicalPlan, assign_workers
from rheostat.plan.reconfig import (
    Place,
    ReconfigError,
    Reconfiguration,
    UpdateFunction,
    describe,
    plan_reconfiguration,
    stages,
)
from rheostat.policy.snapshot import MetricsSnapshot
from rheostat.protocol import (
    CheckpointAck,
    CheckpointFailed,
    CheckUpdate,
    Command,
    CompleteCheckpoint,
    Event,
    InstallState,
    MetricsReport,
    PartDone,
    Reconfigure,
    SinkData,
    StateHandedOver,
    TaskId,
    TriggerCheckpoint,
    UpdateChecked,
)
from rheostat.runtime.messages import FINAL_CHECKPOINT

log = logging.getLogger("rheostat.controller")


# --- actions: what the shell carries out --------------------------------------------


@dataclass(frozen=True)
class Send:
    """Send ``command`` to worker ``worker``."""

    worker: int
    command: Command


@dataclass(frozen=True)
class Deliver:
    """Hand sink data to its driver-side sink (each committed transaction once)."""

    data: SinkData


@dataclass(frozen=True)
class Record:
    """Write to the job's tables: ``JobTables.<what>(*args)``."""

    what: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class WriteCheckpoint:
    """Write ``done``'s inline parts and the manifest over all its parts; answer with
    :class:`CheckpointWritten` or :class:`CheckpointWriteFailed`."""

    done: Completed
    metadata: dict[str, Any]


@dataclass(frozen=True)
class AbortCheckpoint:
    """Remove what checkpoint ``checkpoint_id`` wrote: it will never complete."""

    checkpoint_id: int


@dataclass(frozen=True)
class RestartJob:
    """Stop every worker (killing them), abort checkpoint ``abort`` if any, and start
    the job again from the latest checkpoint with this plan, placement and number of
    workers; answer with :class:`JobRestarted`, or :class:`RestoreFailed`."""

    attempt: int
    reason: str
    abort: int | None
    plan: PhysicalPlan
    placement: dict[str, int]
    workers: int


@dataclass(frozen=True)
class AddWorkers:
    """Start workers ``workers`` (an elastic backend), optionally on named nodes; if they
    cannot even be asked for, answer with :class:`WorkersPolled` and the error."""

    plan: PhysicalPlan
    placement: dict[str, int]
    workers: list[int]
    nodes: dict[int, str] | None


@dataclass(frozen=True)
class PollWorkers:
    """Ask whether the workers being started are ready; answer with :class:`WorkersPolled`."""

    workers: list[int]


@dataclass(frozen=True)
class ReleaseWorkers:
    """Stop workers that host no task any more (an elastic backend)."""

    workers: list[int]


@dataclass(frozen=True)
class Reply:
    """Settle a reconfiguration request's future: with ``result``, or with ``error``."""

    reply: Future[dict[str, Any]]
    result: dict[str, Any] | None = None
    error: BaseException | None = None


Action = (Send | Deliver | Record | WriteCheckpoint | AbortCheckpoint | RestartJob
          | AddWorkers | PollWorkers | ReleaseWorkers | Reply)


# --- outcomes of actions: events the shell feeds back ---------------------------------


@dataclass(frozen=True)
class CheckpointWritten:
    """The manifest of checkpoint ``done`` is durable, over ``parts``."""

    done: Completed
    parts: tuple[Any, ...]


@dataclass(frozen=True)
class CheckpointWriteFailed:
    checkpoint_id: int
    reason: str


@dataclass(frozen=True)
class JobRestarted:
    """The workers run again, from the restored state."""


@dataclass(frozen=True)
class RestoreFailed:
    """The restart found no checkpoint it may restore (one that does not verify, say):
    the job fails with ``error``; its workers are stopped already."""

    error: BaseException


@dataclass(frozen=True)
class WorkersPolled:
    """The workers being started are ``ready``, or could not start (``error``)."""

    ready: bool
    error: BaseException | None = None


Outcome = (CheckpointWritten | CheckpointWriteFailed | JobRestarted | RestoreFailed
           | WorkersPolled)


@dataclass
class Growing:
    """Workers an elastic backend is starting for the tasks a request adds."""

    reconfig_id: int
    placement: dict[str, int]  # added task -> its new worker
    workers: list[int]
    ready: bool = False


def plan_metadata(plan: PhysicalPlan) -> dict[str, Any]:
    """What a manifest records about the job, to restore it and to check compatibility."""
    return {
        "flow": plan.flow_name,
        "steps": list(plan.order),
        "parallelism": {c.chain_id: c.parallelism for c in plan.chains},
        "max_parallelism": plan.max_parallelism,
        # Which task owned which key groups: a restore under other owners (after a live
        # reconfiguration) regroups keyed state across the old tasks' parts.
        "owners": {sid: owners_digest(o) for sid, o in plan.key_group_owners.items()},
    }


class InvariantViolated(AssertionError):
    """The controller's state contradicts itself (a bug in rheostat)."""


class ControlPlane:
    """The job's control state and every decision on it: ``handle(event, now)`` and
    ``tick(now)`` return the actions to carry out; ``validate()`` checks its invariants.

    ``checkpoint_interval_s`` with ``first_checkpoint_id`` turns on checkpoints;
    ``elastic``: the backend can add and release workers (Ray); ``autoscale``: the closed
    loop (:mod:`rheostat.control.autoscale`) decides rescales and key-group moves too.
    """

    def __init__(
        self,
        plan: PhysicalPlan,
        workers: int,
        *,
        checkpoint_interval_s: float | None = None,
        first_checkpoint_id: int | None = None,
        tolerable_checkpoint_failures: int = 3,
        restart_attempts: int = 0,
        reconfig_batch_groups: int = 512,
        elastic: bool = False,
        backend_name: str = "a backend that cannot",
        placement: dict[str, int] | None = None,
        autoscale: Autoscale | None = None,
    ) -> None:
        self.plan = plan
        self.placement = placement if placement is not None else assign_workers(plan, workers)
        #: How many workers the job was started with (renumbered after a restart).
        self.workers = workers
        #: The workers the job runs on now (an elastic backend adds and releases some).
        self.worker_ids = list(range(workers))
        self._next_worker = workers  # ids are never reused within a run
        self.elastic = elastic
        self.backend_name = backend_name  # for messages
        checkpointing = first_checkpoint_id is not None
        self.job = JobStateMachine(plan.task_ids, workers, restart_attempts,
                                   checkpointing=checkpointing)
        self.checkpoints = (
            CheckpointCoordinator(plan.task_ids, checkpoint_interval_s or 1.0,
                                  first_checkpoint_id,
                                  tolerable_failures=tolerable_checkpoint_failures)
            if first_checkpoint_id is not None else None
        )
        self.reconfigs = ReconfigCoordinator()
        #: Key groups one stage of a migration moves at most (0: all in one stage).
        self.reconfig_batch_groups = reconfig_batch_groups
        self.incarnation = 0  # restarts so far: events of an earlier one are stale
        self._epoch = 0
        self._delivered: set[Any] = set()  # keys of committed sink transactions
        # Tasks a reconfiguration retired -> checkpoints still to complete before their id
        # may be used again (their final state, sink transactions included, rides in
        # checkpoints until then), and the worker still holding each.
        self.retired: dict[str, int] = {}
        self.retired_on: dict[str, int] = {}
        self.growing: Growing | None = None  # workers starting for the next request
        self._final_written = False  # the final checkpoint (once the job is committing)
        self._now = 0.0
        self._out: list[Action] = []
        #: The tasks' recent metrics reports, by the time they came in (the sensors).
        self.history = MetricsHistory()
        #: The closed loop (``autoscale=``), or None: reconfigurations come from people only.
        self.autoscaler = Autoscaler(autoscale) if autoscale is not None else None

    # --- inputs -------------------------------------------------------------------------

    def handle(self, event: Event | Outcome, now: float,
               incarnation: int | None = None) -> list[Action]:
        """The actions ``event`` calls for. An event of a worker read before a restart
        (``incarnation`` older than this one) is stale and ignored, except sink data."""
        self._now = now
        if incarnation is not None and incarnation != self.incarnation \
                and not isinstance(event, SinkData):
            return []
        if isinstance(event, CheckpointWritten):
            self._checkpoint_written(event)
        elif isinstance(event, CheckpointWriteFailed):
            self._checkpoint_failed(event.checkpoint_id, event.reason)
        elif isinstance(event, JobRestarted):
            self.job.restarted()
        elif isinstance(event, RestoreFailed):
            self.job.fail(event.error)  # its StopWorker: the workers are gone already
            self._record("job_state", self.job.state, self.job.error)
        elif isinstance(event, WorkersPolled):
            self._workers_polled(event)
        else:
            self._worker_event(event)
        return self._take()

    def tick(self, now: float) -> list[Action]:
        """What is due now: the next reconfiguration stage, a checkpoint trigger."""
        self._now = now
        if self.job.state == "running":
            self._maybe_autoscale()
            self._maybe_reconfigure()
            self._maybe_trigger()
        return self._take()

    def _maybe_autoscale(self) -> None:
        """The closed loop, when it is on and an evaluation is due: every verdict is a row
        of the decisions table; what it carries out is one reconfiguration request."""
        scaler = self.autoscaler
        if scaler is None or not scaler.due(self._now):
            return
        busy = (self.reconfigs.in_flight is not None or self.reconfigs.queued
                or self.growing is not None)
        snapshot = self.metrics_snapshot(scaler.config.window_s)
        verdicts, ops = scaler.evaluate(snapshot, self._now, busy)
        for verdict in verdicts:
            self._record("decision", verdict)
        if ops:
            log.info("autoscale: %s", "; ".join(describe(op) for op in ops))
            self.reconfigs.submit(ops)  # its outcome is in the reconfigurations table

    def metrics_snapshot(self, window_s: float) -> MetricsSnapshot:
        """What every step did over the last ``window_s`` seconds (to the latest event's
        time), for the policies: ``MetricsHistory.snapshot`` over the current plan."""
        return self.history.snapshot(self.plan, self._now, window_s)

    def submit(self, ops: Sequence[Any]) -> Future[dict[str, Any]]:
        """Queue one reconfiguration of ``ops`` (thread-safe); the future gets its outcome:
        ``{"reconfig_id", "status", "duration_ms", ...}``, or the error that refused it."""
        return self.reconfigs.submit(ops)

    def cancel(self) -> list[Action]:
        """Stop the job: it ends ``cancelled``."""
        self._send_all(self.job.cancel())
        return self._take()

    def ended(self) -> list[Action]:
        """The workers are stopped: record the final state, refuse what is still queued."""
        self._record("job_state", self.job.state, self.job.error)
        self._refuse_rest(f"the job ended ({self.job.state}) before it ran")
        return self._take()

    def _take(self) -> list[Action]:
        out, self._out = self._out, []
        return out

    def _record(self, what: str, *args: Any) -> None:
        self._out.append(Record(what, args))

    def _send_all(self, commands: Sequence[Any]) -> None:
        for command in commands:
            if isinstance(command, Restart):
                self._restart(command)
                continue
            for worker in self.worker_ids:
                self._out.append(Send(worker, command))

    # --- worker events ------------------------------------------------------------------

    def _worker_event(self, event: Event) -> None:
        if isinstance(event, SinkData):
            if event.key is not None:
                if event.key in self._delivered:
                    return  # a transaction committed again after a restore
                self._delivered.add(event.key)
            self._out.append(Deliver(event))
            return
        if isinstance(event, CheckpointAck):
            final = event.checkpoint_id == FINAL_CHECKPOINT
            if self.checkpoints is not None and (
                    self.job.state == "running" or (self.job.state == "committing" and final)):
                done = self.checkpoints.on_ack(event.task_id, event.checkpoint_id,
                                               event.parts, event.inline)
                if done is not None and self.job.state == "running":
                    self._out.append(WriteCheckpoint(done, plan_metadata(self.plan)))
        elif isinstance(event, CheckpointFailed):
            self._checkpoint_failed(event.checkpoint_id, event.reason)
        elif isinstance(event, MetricsReport):
            self._record("metrics", event.tasks)
            self.history.add(event.tasks, self._now)
        elif isinstance(event, StateHandedOver):
            f = self.reconfigs.in_flight
            if f is not None and f.epoch == event.handoff.reconfig_id:
                h = event.handoff
                log.debug("reconfiguration %d: +%.0f ms %s hands %s to %s", h.reconfig_id,
                          (self._now - f.started) * 1000, h.from_task, h.step_id, h.to_task)
                self._out.append(Send(f.placement[h.to_task], InstallState(h)))
        elif isinstance(event, PartDone) and isinstance(event.done, UpdateChecked):
            self._update_checked(event.done)
        elif isinstance(event, PartDone):
            f = self.reconfigs.part_done(event.done.reconfig_id, event.done.task_id, self._now)
            if f is not None:
                self._reconfigured(f)
        was = self.job.state
        commands = self.job.handle(event)
        if self.job.state != was:
            self._record("job_state", self.job.state, self.job.error)
        self._maybe_write_final()
        self._send_all(commands)

    def _maybe_write_final(self) -> None:
        """Every running task has finished: the last checkpoint, of every final snapshot,
        once a task a reconfiguration retired has sent its own too (then every worker's
        sinks commit it)."""
        c = self.checkpoints
        if self.job.state == "committing" and not self._final_written \
                and c is not None and c.all_final:
            self._final_written = True
            self._out.append(WriteCheckpoint(c.final(), plan_metadata(self.plan)))

    # --- checkpoints --------------------------------------------------------------------

    def _maybe_trigger(self) -> None:
        if self.checkpoints is None or self.reconfigs.in_flight is not None:
            return
        stale = self.checkpoints.timed_out(self._now)
        if stale is not None:
            self._checkpoint_failed(stale, "timed out")
        checkpoint_id = self.checkpoints.due(self._now)
        if checkpoint_id is not None:
            self._record("checkpoint_triggered", checkpoint_id)
            self._send_all([TriggerCheckpoint(checkpoint_id)])

    def _checkpoint_written(self, event: CheckpointWritten) -> None:
        done = event.done
        log.info("checkpoint %d complete", done.checkpoint_id)
        assert self.checkpoints is not None
        self.checkpoints.written(done.checkpoint_id)
        for t in self.retired:
            self.retired[t] -= 1
        if not done.final:
            self._release_retired()
            self._release_idle_workers()
        self._record("checkpoint_done", done.checkpoint_id, "completed", len(event.parts),
                     sum(getattr(p, "size", 0) for p in event.parts))
        notify = FINAL_CHECKPOINT if done.final else done.checkpoint_id
        self._send_all([CompleteCheckpoint(notify, done.finals)])

    def _checkpoint_failed(self, checkpoint_id: int, reason: str) -> None:
        assert self.checkpoints is not None
        verdict = self.checkpoints.failed(checkpoint_id)
        if verdict is None:
            return  # already counted (several tasks report the same failed checkpoint)
        log.warning("checkpoint %d failed: %s", checkpoint_id, reason)
        self._record("checkpoint_done", checkpoint_id, "failed", 0, 0, reason)
        self._out.append(AbortCheckpoint(checkpoint_id))
        if verdict:
            self._send_all(self.job.fail(RuntimeError(
                f"{self.checkpoints.consecutive_failures} checkpoints failed in a row, more "
                f"than tolerated (last: {checkpoint_id}: {reason})"
            )))

    # --- recovery -----------------------------------------------------------------------

    def _restart(self, command: Restart) -> None:
        log.warning("restarting job %r (attempt %d): %s", self.plan.flow_name,
                    command.attempt, command.reason)
        in_flight = None
        if self.checkpoints is not None:
            in_flight = self.checkpoints.abort()
            self.checkpoints.restart(self.plan.task_ids)
        self.retired.clear()  # the restored job starts without them
        self._final_written = False
        self.retired_on.clear()
        self.growing = None  # the backend stops them too
        if self.elastic:
            self._renumber_workers()
        self.incarnation += 1
        abandoned = self.reconfigs.abandon()
        if abandoned is not None:
            self._finish_reconfig(abandoned.request, "failed", reason=(
                "a task failed during it; the job restarted with the configuration of its "
                f"last completed stage, in the tables ({command.reason})"))
        self.job.track(self.plan.task_ids)
        self._out.append(RestartJob(command.attempt, command.reason, in_flight, self.plan,
                                    dict(self.placement), self.workers))

    def _renumber_workers(self) -> None:
        """Before a restart on an elastic backend: workers 0..n-1 for the n that host
        tasks (released ones leave no gap)."""
        ids = sorted(set(self.placement.values()))
        number = {w: i for i, w in enumerate(ids)}
        self.placement = {t: number[w] for t, w in self.placement.items()}
        self.workers = len(ids)
        self.worker_ids = list(range(len(ids)))
        self._next_worker = len(ids)
        self.job.track(self.job.task_ids, len(ids))
        self._record("plan_changed", self.plan, dict(self.placement))

    # --- reconfigurations ---------------------------------------------------------------

    def _maybe_reconfigure(self) -> None:
        """Start the next queued reconfiguration, never while a checkpoint is in flight."""
        if self.checkpoints is not None and self.checkpoints.in_flight is not None:
            return
        if self.reconfigs.in_flight is None:
            self._release_retired()
            self._release_idle_workers()
        g = self.growing
        if g is not None and not g.ready:
            self._out.append(PollWorkers(list(g.workers)))
            return
        request = self.reconfigs.next_request()
        if request is None:
            return
        try:
            request = self._placed_on_nodes(request)
            if request is None:
                return
            for op in request.ops:
                if isinstance(op, Place) and op.worker not in self.worker_ids:
                    raise ReconfigError(f"there is no worker {op.worker}: the job runs on "
                                        f"workers {self.worker_ids}")
            parts = stages(self.plan, self.placement, self.workers, request.ops,
                           self.reconfig_batch_groups)
        except Exception as exc:
            self._record("reconfig_requested", request.reconfig_id, _text(request))
            self._finish_reconfig(request, "refused", reason=str(exc), error=exc)
            return
        self._start_stage(request, parts, self._now, first=True)

    def _workers_polled(self, event: WorkersPolled) -> None:
        g = self.growing
        if g is None or g.ready:
            return
        if event.error is not None:
            self.growing = None
            request = self.reconfigs.next_request()
            assert request is not None and request.reconfig_id == g.reconfig_id
            self._record("reconfig_requested", request.reconfig_id, _text(request))
            self._finish_reconfig(request, "refused", reason=str(event.error),
                                  error=event.error)
        elif event.ready:
            g.ready = True
            if self.job.state == "running":
                self._maybe_reconfigure()

    def _start_stage(
        self, request: Request, parts: list[list[Any]], started: float, first: bool
    ) -> None:
        """Plan and start the first of ``parts`` (the stages left of ``request``)."""
        try:
            r = plan_reconfiguration(self.plan, self.placement, self.workers, parts[0],
                                     self._next_epoch(),
                                     allow_idle_tasks=len(parts) > 1 or not first,
                                     finished=self.job.finished_tasks)
            blob = cloudpickle.dumps(r.plan)
        except Exception as exc:
            if first:
                self._record("reconfig_requested", request.reconfig_id, _text(request))
            self._finish_reconfig(request, "refused" if first else "failed", reason=str(exc),
                                  error=exc)
            return
        spec = r.spec
        self._release_retired()
        if any(t in self.retired for t in spec.added):
            self.reconfigs.put_back(request)  # until their predecessors are committed
            return
        if spec.added and self.elastic:
            grown = self._grow(request, r)
            if grown is None:
                return
            r = grown
        if first:
            self._record("reconfig_requested", request.reconfig_id, _text(request))
        touched = set(spec.affected_chains) | {
            r.plan.chain_of(s).chain_id for s in spec.updated_steps}
        expected = {t for t in set(self.plan.task_ids) | set(r.plan.task_ids)
                    if TaskId(t).chain in touched}
        if first:
            log.info("reconfiguration %d: %s (%d stages)", request.reconfig_id,
                     _text(request), len(parts))
            self._record("reconfig_started", request.reconfig_id, len(parts))
        checked = tuple(op.step for op in request.ops if isinstance(op, UpdateFunction)
                        and r.plan.steps[op.step].kind in STATEFUL_KINDS)
        checkers = {t for t in self.plan.task_ids if t not in self.job.finished_tasks
                    and any(s in self.plan.chain_of(TaskId(t).chain).steps
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
            done = self.reconfigs.part_done(f.epoch, "", self._now)
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
        for t, left in list(self.retired.items()):
            if left <= 0 and t in self.job.finished_tasks:
                del self.retired[t]
                self.retired_on.pop(t, None)
                self.job.forget(t)
                if self.checkpoints is not None:
                    self.checkpoints.forget(t)

    def _release_idle_workers(self) -> None:
        """Stop the workers of an elastic backend that host no task (live or retired),
        between reconfigurations."""
        if (not self.elastic or self.job.state != "running"
                or self.reconfigs.in_flight is not None or self.growing is not None):
            return
        busy = set(self.placement.values()) | set(self.retired_on.values())
        idle = [w for w in self.worker_ids if w not in busy]
        if idle:
            log.info("releasing worker(s) %s: they host no task any more", idle)
            self._out.append(ReleaseWorkers(idle))
            self.worker_ids = [w for w in self.worker_ids if w not in idle]
            self.job.track(self.job.task_ids, len(self.worker_ids))

    def _grow(self, request: Request, r: Reconfiguration) -> Reconfiguration | None:
        """On an elastic backend each task ``r`` adds gets a worker of its own: the first
        call starts them and puts ``request`` back (the job runs on meanwhile); once
        they are ready, ``r`` with them in its placement."""
        g = self.growing
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
        g = self.growing
        if g is not None and g.reconfig_id == request.reconfig_id and g.ready:
            placed = self._grown().placement
            return dataclasses.replace(request, ops=[
                Place(op.task, placed[op.task])
                if isinstance(op, Place) and op.node is not None else op
                for op in request.ops])
        if not self.elastic:
            raise ReconfigError(f"placing a task on a node needs a backend that starts "
                                f"workers (Ray); this job runs on {self.backend_name}")
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
        put ``request`` back until they are ready (:class:`WorkersPolled`)."""
        placement, nodes = dict(placement), {}
        for task, node in tasks.items():
            placement[task] = self._next_worker
            if node is not None:
                nodes[self._next_worker] = node
            self._next_worker += 1
        new = [placement[t] for t in tasks]
        self._out.append(AddWorkers(plan, placement, new, nodes or None))
        log.info("reconfiguration %d: starting worker(s) %s for %s%s", request.reconfig_id,
                 new, list(tasks), f" on {list(nodes.values())}" if nodes else "")
        self.growing = Growing(request.reconfig_id, {t: placement[t] for t in tasks}, new)
        self.reconfigs.put_back(request)

    def _grown(self) -> Growing:
        """The workers started for the request now planned: they join the job."""
        g = self.growing
        assert g is not None
        self.growing = None
        self.worker_ids += g.workers
        self.job.track(self.job.task_ids, len(self.worker_ids))
        return g

    def _reconfigured(self, f: InFlight) -> None:
        for t in f.removed:
            self.retired[t] = 2 if self.checkpoints is not None else 0
            self.retired_on[t] = self.placement[t]
        self.plan, self.placement = f.plan, f.placement
        self._record("plan_changed", self.plan, dict(self.placement))
        self._record("reconfig_progress", f.request.reconfig_id, f.moved, len(f.spec.added),
                     len(f.spec.removed))
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
        self._record("reconfig_done", request.reconfig_id, state, duration_s, reason)
        if state == "done":
            self._out.append(Reply(request.reply, result={
                "reconfig_id": request.reconfig_id, "status": state,
                "duration_ms": None if duration_s is None else round(duration_s * 1000, 1),
                "reason": reason,
            }))
            return
        if error is None or not isinstance(error, ReconfigError):
            error = ReconfigError(f"reconfiguration {request.reconfig_id} {state}: {reason}")
        self._out.append(Reply(request.reply, error=error))

    def _refuse_rest(self, reason: str) -> None:
        f = self.reconfigs.abandon()
        if f is not None:
            self._finish_reconfig(f.request, "failed", reason=reason)
        for request in self.reconfigs.drain(reason):
            self._record("reconfig_requested", request.reconfig_id, _text(request))
            self._finish_reconfig(request, "refused", reason=reason)

    # --- invariants ---------------------------------------------------------------------

    def validate(self) -> None:
        """Check the invariants between inputs; raises ``InvariantViolated`` naming each
        broken one. Tests call it after every step (``SteppedJob`` does)."""
        broken = []
        f = self.reconfigs.in_flight
        applying = f is not None and f.phase == "apply"
        c = self.checkpoints
        if c is not None and c.in_flight is not None and applying:
            broken.append(f"checkpoint {c.in_flight.checkpoint_id} and reconfiguration stage "
                          f"{f.epoch} are in flight together")
        live = f.plan.task_ids if applying and f is not None else self.plan.task_ids
        if not self.job.is_final and self.job.state != "restarting" \
                and list(self.job.task_ids) != list(live):
            broken.append(f"the job tracks tasks {self.job.task_ids}, the plan has {live}")
        if set(self.placement) != set(self.plan.task_ids):
            broken.append(f"placement covers {sorted(self.placement)}, the plan has "
                          f"{sorted(self.plan.task_ids)}")
        hosts = set(self.placement.values()) | set(self.retired_on.values())
        if not hosts <= set(self.worker_ids) and self.growing is None:
            broken.append(f"tasks are placed on workers {sorted(hosts)}, the job has "
                          f"{self.worker_ids}")
        if back := sorted(set(self.retired) & set(self.plan.task_ids)):
            broken.append(f"retired task(s) {back} are in the plan again before their final "
                          "state was committed")
        if c is not None:
            extra = set(c.task_ids) - set(self.plan.task_ids) - set(self.retired)
            if applying and f is not None:
                extra -= set(f.plan.task_ids) | set(f.removed)
            if extra:
                broken.append(f"checkpoints wait for task(s) {sorted(extra)} that neither "
                              "run nor are retired")
            if missing := sorted(set(live) - set(c.task_ids)):
                broken.append(f"checkpoints do not wait for running task(s) {missing}")
        if broken:
            raise InvariantViolated("; ".join(broken))


def _text(request: Request) -> str:
    return "; ".join(describe(op) for op in request.ops)
