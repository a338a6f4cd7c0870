"""The controller: the I/O shell around the control plane's brain.

Every decision is :class:`~rheostat.control.plane.ControlPlane`'s: the controller feeds
it the backend's events and the clock, and carries out the actions that come back —
commands to workers, sink data for the driver-side sinks, checkpoint manifests, restarts,
workers to start or release, the job's tables, the answers to reconfiguration requests.
It also serves the HTTP API and reports progress.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from rheostat.backends.base import Backend, Event, RestoreFrom, RunConfig, SinkData
from rheostat.control.autoscale import Autoscale
from rheostat.control.checkpoints import CheckpointCoordinator
from rheostat.control.http_api import (
    ApiError,
    ApiRequest,
    HttpApi,
    HttpApiInfo,
    HttpApiSettings,
    JobSnapshot,
    snapshot_metrics,
)
from rheostat.control.job import JobStateMachine
from rheostat.control.plane import (
    AbortCheckpoint,
    Action,
    AddWorkers,
    CheckpointWriteFailed,
    CheckpointWritten,
    ControlPlane,
    Deliver,
    InvariantViolated,
    JobRestarted,
    Outcome,
    PollWorkers,
    Record,
    ReleaseWorkers,
    Reply,
    RestartJob,
    RestoreFailed,
    Send,
    WorkersPolled,
    WriteCheckpoint,
    plan_metadata,
)
from rheostat.control.reconfig import ReconfigCoordinator
from rheostat.control.tables import JobTables
from rheostat.plan.physical import PhysicalPlan
from rheostat.plan.reconfig import ReconfigError
from rheostat.protocol import TaskId, TaskMetrics
from rheostat.runtime.checkpoint import CheckpointError
from rheostat.runtime.errors import JobFailed

__all__ = ["Controller", "InvariantViolated", "JobResult", "RestartPolicy", "plan_metadata"]

log = logging.getLogger("rheostat.controller")


@dataclass(frozen=True)
class RestartPolicy:
    """How often a failed job is restarted from its latest checkpoint, and how soon."""

    attempts: int = 3
    backoff_s: float = 0.5


@dataclass
class JobResult:
    """What a finished job reports: its state, timings and per-task metrics."""

    flow_name: str
    state: str
    elapsed_s: float
    plan: PhysicalPlan
    metrics: dict[str, TaskMetrics] = field(default_factory=dict)
    checkpoints: list[int] = field(default_factory=list)
    restarts: int = 0
    tables: JobTables | None = None
    http: HttpApiInfo | None = None  # where the job's HTTP API listened, and its tokens

    def sql(self, query: str) -> pa.Table:
        """Query the job's tables (jobs, steps, tasks, key_groups, checkpoints, restarts,
        metrics), e.g. ``result.sql("select * from checkpoints")``."""
        if self.tables is None:
            raise RuntimeError("this result has no tables")
        return self.tables.query(query)

    def counters(self) -> dict[str, int]:
        """Counters summed over tasks (``late``, ``skipped``, ``late_unconsumed``...)."""
        total: dict[str, int] = {}
        for m in self.metrics.values():
            for k, v in m.counters.items():
                total[k] = total.get(k, 0) + v
        return total

    def rows_in(self, chain_id: str) -> int:
        """Rows that entered the tasks of the chain headed by ``chain_id``."""
        return sum(m.rows_in for t, m in self.metrics.items() if TaskId(t).chain == chain_id)


ProgressCallback = Callable[[PhysicalPlan, dict[str, TaskMetrics], float], None]


class Controller:
    def __init__(
        self,
        plan: PhysicalPlan,
        backend: Backend,
        config: RunConfig,
        on_progress: ProgressCallback | None = None,
        checkpoint_interval_s: float | None = None,
        restart: RestartPolicy | None = None,
        restore: RestoreFrom | None = None,
        tolerable_checkpoint_failures: int = 3,
        tables: JobTables | None = None,
        http: HttpApiSettings | None = None,
        reconfig_batch_groups: int = 512,
        clock: Callable[[], float] = time.monotonic,
        autoscale: Autoscale | None = None,
    ) -> None:
        #: Seconds, for checkpoint intervals, timeouts and durations (a test's fake clock).
        self.clock = clock
        self._shut = False
        self._started = self._last_progress = 0.0
        self.backend = backend
        self.config = config
        self.on_progress = on_progress
        self.restart_policy = restart or RestartPolicy(attempts=0)
        self.restore = restore
        #: The brain: every decision about the job is its.
        self.brain = ControlPlane(
            plan, config.workers,
            checkpoint_interval_s=checkpoint_interval_s,
            first_checkpoint_id=(config.store.next_checkpoint_id()
                                 if config.store is not None else None),
            tolerable_checkpoint_failures=tolerable_checkpoint_failures,
            restart_attempts=self.restart_policy.attempts,
            reconfig_batch_groups=reconfig_batch_groups,
            elastic=backend.elastic, backend_name=type(backend).__name__,
            autoscale=autoscale,
        )
        self.tables = tables if tables is not None else JobTables(job=plan.flow_name)
        self.http_settings = http
        self.api: HttpApi | None = None
        self._cancel = threading.Event()

    # --- the brain's state, read by tests, the API and the job handle ------------------

    @property
    def plan(self) -> PhysicalPlan:
        return self.brain.plan

    @property
    def placement(self) -> dict[str, int]:
        return self.brain.placement

    @property
    def job(self) -> JobStateMachine:
        return self.brain.job

    @property
    def checkpoints(self) -> CheckpointCoordinator | None:
        return self.brain.checkpoints

    @property
    def reconfigs(self) -> ReconfigCoordinator:
        return self.brain.reconfigs

    @property
    def worker_ids(self) -> list[int]:
        return self.brain.worker_ids

    def validate(self) -> None:
        """Check the control plane's invariants between turns (``ControlPlane.validate``;
        raises ``InvariantViolated``). Tests call it after every step (``SteppedJob``)."""
        self.brain.validate()

    # --- requests from other threads ------------------------------------------------

    def reconfigure(self, ops: Sequence[Any]) -> Future[dict[str, Any]]:
        """Queue one reconfiguration of ``ops`` (thread-safe); the future gets its outcome:
        ``{"reconfig_id", "state", "duration_ms", ...}``, or the error that refused it."""
        return self.brain.submit(ops)

    def cancel(self) -> None:
        """Stop the job soon (thread-safe); ``run`` returns with state ``cancelled``."""
        self._cancel.set()

    def run(self) -> JobResult:
        """Run the job to its end: ``begin``, ``step`` until it is final, ``finish``."""
        self.begin()
        try:
            while self.step():
                pass
        except KeyboardInterrupt:
            self._execute(self.brain.cancel())
            self._shut_down()
            raise
        except BaseException:
            self._shut_down()
            raise
        return self.finish()

    def begin(self) -> None:
        """Start the workers (and the HTTP API): the job runs; ``step`` drives it."""
        self._started = self._last_progress = self.clock()
        self.tables.record_plan(self.plan, self.placement)
        try:
            self.backend.start(self.plan, self.placement, self.config, self.restore)
        except BaseException:
            self.backend.close()
            raise
        try:
            self._start_api()
        except BaseException:
            self._shut_down()
            raise

    def step(self, timeout: float = 0.05) -> bool:
        """One turn of the control loop: the backend's events (waiting up to ``timeout``
        for the first), cancellation, what is due (the next reconfiguration or
        checkpoint), the API, progress. False once the job is final (or cancelled)."""
        events = self.backend.events(timeout=timeout)
        incarnation = self.brain.incarnation  # events of workers a restart replaced: stale
        for event in events:
            self._execute(self.brain.handle(event, self.clock(), incarnation))
        if self._cancel.is_set() and not self.job.is_final:
            self._execute(self.brain.cancel())
            return False
        self._execute(self.brain.tick(self.clock()))
        self._serve_api()
        now = self.clock()
        if self.on_progress and now - self._last_progress >= self.config.metrics_interval_s:
            self._last_progress = now
            self.on_progress(self.plan, self.job.metrics, now - self._started)
        return not self.job.is_final

    def finish(self) -> JobResult:
        """Stop the workers and the API; the result (``JobFailed`` if the job failed)."""
        self._shut_down()
        elapsed = self.clock() - self._started
        if self.on_progress:
            self.on_progress(self.plan, self.job.metrics, elapsed)
        if self.job.state == "failed":
            where = f" in task {self.job.failed_task}" if self.job.failed_task else ""
            raise JobFailed(
                f"job {self.plan.flow_name!r} failed{where}: {self.job.error}"
            ) from self.job.error
        return JobResult(
            self.plan.flow_name, self.job.state, elapsed, self.plan, self.job.metrics,
            list(self.checkpoints.completed) if self.checkpoints else [], self.job.restarts,
            self.tables, self.api.info if self.api is not None else None,
        )

    def _shut_down(self) -> None:
        """Stop the workers (their last sink data is delivered) and the API; once."""
        if self._shut:
            return
        self._shut = True
        try:
            self._deliver_stopped(self.backend.stop())
            self._execute(self.brain.ended())
        finally:
            self.backend.close()
            if self.api is not None:
                self.api.close()

    def _deliver_stopped(self, events: Iterable[Event]) -> None:
        """The sink data stopped workers sent last (their other events no longer count)."""
        for event in events:
            if isinstance(event, SinkData):
                self._execute(self.brain.handle(event, self.clock()))

    # --- carrying out the brain's actions -----------------------------------------------

    def _execute(self, actions: list[Action]) -> None:
        """Carry out ``actions`` in order; an action's outcome goes back to the brain at
        once, and what it calls for is carried out before the next action."""
        for action in actions:
            outcome = self._carry_out(action)
            if outcome is not None:
                self._execute(self.brain.handle(outcome, self.clock()))

    def _carry_out(self, action: Action) -> Outcome | None:
        if isinstance(action, Send):
            self.backend.send(action.worker, action.command)
        elif isinstance(action, Deliver):
            data = action.data
            self.plan.steps[data.step_id].sink.on_driver_data(data.batch)  # type: ignore[attr-defined]
        elif isinstance(action, Record):
            getattr(self.tables, action.what)(*action.args)
        elif isinstance(action, WriteCheckpoint):
            return self._write_checkpoint(action)
        elif isinstance(action, AbortCheckpoint):
            assert self.config.store is not None
            self.config.store.abort(action.checkpoint_id)
        elif isinstance(action, RestartJob):
            return self._restart(action)
        elif isinstance(action, AddWorkers):
            try:
                self.backend.add_workers(action.plan, action.placement, action.workers,
                                         action.nodes)
            except Exception as exc:  # e.g. no such node: the request is refused
                return WorkersPolled(False, exc)
        elif isinstance(action, PollWorkers):
            try:
                return WorkersPolled(self.backend.workers_ready(action.workers))
            except Exception as exc:
                return WorkersPolled(False, exc)
        elif isinstance(action, ReleaseWorkers):
            self.backend.release_workers(action.workers)
        elif isinstance(action, Reply):
            if not action.reply.done():
                if action.error is not None:
                    action.reply.set_exception(action.error)
                else:
                    action.reply.set_result(action.result)  # type: ignore[arg-type]
        else:
            raise TypeError(f"the controller cannot carry out {action!r}")
        return None

    def _write_checkpoint(self, action: WriteCheckpoint) -> Outcome:
        done, store = action.done, self.config.store
        assert store is not None
        try:
            parts = list(done.parts) + [
                store.write_part(done.checkpoint_id, name, blob)
                for name, blob in done.inline.items()
            ]
            store.commit(done.checkpoint_id, parts, action.metadata)
        except Exception as exc:  # the brain aborts it: no manifest, no checkpoint
            return CheckpointWriteFailed(done.checkpoint_id, f"{type(exc).__name__}: {exc}")
        return CheckpointWritten(done, tuple(parts))

    def _restart(self, action: RestartJob) -> Outcome:
        kill = getattr(self.backend, "kill", None)
        if kill is not None:
            kill()
        self._deliver_stopped(self.backend.stop())
        restore = None
        store = self.config.store
        if store is not None:
            if action.abort is not None:
                store.abort(action.abort)
            try:
                point = store.latest()
            except CheckpointError as exc:  # e.g. one that does not verify: no restore
                log.error("job %r cannot restart: %s", self.plan.flow_name, exc)
                return RestoreFailed(exc)
            if point is not None:
                restore = RestoreFrom(point, point.job["parallelism"])
        self.tables.restarted(action.attempt, action.reason,
                              restore.point.checkpoint_id if restore else None)
        if action.workers != self.config.workers:
            self.config = dataclasses.replace(self.config, workers=action.workers)
        if self.restart_policy.backoff_s > 0:
            time.sleep(self.restart_policy.backoff_s)
        self.backend.start(action.plan, action.placement, self.config, restore)
        return JobRestarted()

    # --- the HTTP API -----------------------------------------------------------------

    def _start_api(self) -> None:
        if self.http_settings is None:
            return
        tokens_dir = self.tables.path.parent if self.tables.path is not None else None
        self.api = HttpApi(self.tables, self.http_settings, tokens_dir)
        self._publish()
        try:
            self.api.start(self.plan.flow_name)
        except BaseException:
            self.api.close()
            self.api = None
            raise

    def _publish(self) -> None:
        assert self.api is not None
        chains = {c.task_id(i): (c.chain_id, ",".join(c.steps))
                  for c in self.plan.chains for i in range(c.parallelism)}
        metrics = {t: TaskMetrics() for t in chains}  # every task, reported yet or not
        metrics.update(snapshot_metrics(self.job.metrics))
        self.api.publish(JobSnapshot(
            self.plan.flow_name, self.job.state, self.job.restarts,
            tuple(self.checkpoints.completed) if self.checkpoints else (), metrics, chains,
            {sid: step.kind for sid, step in self.plan.steps.items()},
        ))

    def _serve_api(self) -> None:
        """Publish what the API reads, and serve the changes it asks for."""
        if self.api is None:
            return
        self._publish()
        for request in self.api.pending():
            if not request.reply.set_running_or_notify_cancel():
                continue  # its HTTP thread gave up waiting
            try:
                answer = self._api_request(request)
                if answer is not _LATER:
                    request.reply.set_result(answer)
            except Exception as exc:
                request.reply.set_exception(exc)

    def _api_request(self, request: ApiRequest) -> Any:
        if request.kind == "savepoint":
            return self._savepoint(request.args["name"])
        if request.kind == "reconfigure":  # read, checked and imported by the HTTP thread
            reply = self.reconfigure(request.args["parsed"])
            reply.add_done_callback(lambda f: _answer(request, f))
            return _LATER
        raise ApiError(400, f"unknown request {request.kind!r}")

    def _savepoint(self, name: str) -> dict[str, Any]:
        """Keep the newest complete checkpoint of this run as savepoint ``name``."""
        if self.checkpoints is None or self.config.store is None:
            raise ApiError(409, f"job {self.plan.flow_name!r} takes no checkpoints, so it "
                                "cannot take a savepoint (run it with a checkpoint interval)")
        if not self.checkpoints.completed:
            raise ApiError(409, "no checkpoint has completed yet; try again after the first "
                                "one (see GET /v1/job)")
        checkpoint_id = self.checkpoints.completed[-1]
        store = self.config.store
        try:
            store.promote_to_savepoint(checkpoint_id, name)
        except CheckpointError as exc:
            raise ApiError(409, f"cannot keep checkpoint {checkpoint_id} as savepoint "
                                f"{name!r}: {exc}") from None
        log.info("savepoint %r holds checkpoint %d", name, checkpoint_id)
        return {"savepoint": name, "checkpoint_id": checkpoint_id,
                "path": store.savepoint_path(name)}


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
