"""The controller: owns the physical plan, drives the job through a backend.

It feeds the backend's events to the job state machine and the checkpoint coordinator,
carries out the commands that come back (triggers, manifest commits, restarts), hands
sink data to the driver-side sinks — each committed transaction once — and reports
progress.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from rheostat.backends.base import (
    Backend,
    CheckpointAck,
    CheckpointFailed,
    CompleteCheckpoint,
    Event,
    InstallState,
    MetricsReport,
    PartDone,
    RestoreFrom,
    RunConfig,
    SinkData,
    StateHandedOver,
    TriggerCheckpoint,
)
from rheostat.control.checkpoints import CheckpointCoordinator, Completed
from rheostat.control.http_api import (
    ApiError,
    ApiRequest,
    HttpApi,
    HttpApiInfo,
    HttpApiSettings,
    JobSnapshot,
    snapshot_metrics,
)
from rheostat.control.job import JobStateMachine, Restart
from rheostat.control.reconfig import ReconfigCoordinator
from rheostat.control.reconfigurer import _LATER, Growing, LiveReconfigurer, _answer
from rheostat.control.tables import JobTables
from rheostat.plan.keygroups import owners_digest
from rheostat.plan.physical import PhysicalPlan, assign_workers
from rheostat.runtime.checkpoint import CheckpointError
from rheostat.runtime.errors import JobFailed
from rheostat.runtime.messages import FINAL_CHECKPOINT
from rheostat.runtime.reconfig import UpdateChecked
from rheostat.runtime.task import TaskMetrics

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
        return sum(m.rows_in for t, m in self.metrics.items() if t.rsplit("#", 1)[0] == chain_id)


class InvariantViolated(AssertionError):
    """The controller's state contradicts itself (a bug in rheostat)."""


ProgressCallback = Callable[[PhysicalPlan, dict[str, TaskMetrics], float], None]


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


class Controller(LiveReconfigurer):
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
    ) -> None:
        self.plan = plan
        #: Seconds, for checkpoint intervals, timeouts and durations (a test's fake clock).
        self.clock = clock
        self._shut = False
        self._started = self._last_progress = 0.0
        self.backend = backend
        self.config = config
        self.on_progress = on_progress
        self.restart_policy = restart or RestartPolicy(attempts=0)
        self.restore = restore
        self.job = JobStateMachine(plan.task_ids, config.workers, self.restart_policy.attempts,
                                   checkpointing=config.store is not None)
        self.checkpoints = (
            CheckpointCoordinator(plan.task_ids, checkpoint_interval_s or 1.0,
                                  config.store.next_checkpoint_id(),
                                  tolerable_failures=tolerable_checkpoint_failures)
            if config.store is not None else None
        )
        self._delivered: set[Any] = set()  # keys of committed sink transactions
        self.tables = tables if tables is not None else JobTables(job=plan.flow_name)
        self.http_settings = http
        self.api: HttpApi | None = None
        self.reconfigs = ReconfigCoordinator()
        #: Key groups one stage of a migration moves at most (0: all in one stage).
        self.reconfig_batch_groups = reconfig_batch_groups
        self._epoch = 0
        self._incarnation = 0  # restarts so far: events of an earlier one are stale
        self.placement = assign_workers(plan, config.workers)
        #: The workers the job runs on now (an elastic backend adds and releases some).
        self.worker_ids = list(range(config.workers))
        self._next_worker = config.workers  # ids are never reused within a run
        self._retired_on: dict[str, int] = {}  # retired task -> the worker still holding it
        self._growing: Growing | None = None  # workers starting for the next request
        self._cancel = threading.Event()
        # Tasks a reconfiguration retired -> checkpoints still to complete before their id
        # may be used again (their final state, sink transactions included, rides in
        # checkpoints until then).
        self._retired: dict[str, int] = {}

    # --- requests from other threads ------------------------------------------------

    def reconfigure(self, ops: Sequence[Any]) -> Future[dict[str, Any]]:
        """Queue one reconfiguration of ``ops`` (thread-safe); the future gets its outcome:
        ``{"reconfig_id", "state", "duration_ms", ...}``, or the error that refused it."""
        reply = self.reconfigs.submit(ops)
        return reply

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
            self._send_all(self.job.cancel())
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
        for the first), cancellation, the next reconfiguration or checkpoint, the API,
        progress. False once the job is final (or cancelled)."""
        self._handle(self.backend.events(timeout=timeout))
        if self._cancel.is_set() and not self.job.is_final:
            self._send_all(self.job.cancel())
            return False
        if self.job.state == "running":
            self._maybe_reconfigure()
            self._maybe_trigger()
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
            self._deliver(self.backend.stop())
            self.tables.job_state(self.job.state, self.job.error)
            self._refuse_rest(f"the job ended ({self.job.state}) before it ran")
        finally:
            self.backend.close()
            if self.api is not None:
                self.api.close()

    def validate(self) -> None:
        """Check the controller's invariants between turns; raises ``InvariantViolated``
        naming each broken one. Tests call it after every step (``SteppedJob`` does)."""
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
        hosts = set(self.placement.values()) | set(self._retired_on.values())
        if not hosts <= set(self.worker_ids) and self._growing is None:
            broken.append(f"tasks are placed on workers {sorted(hosts)}, the job has "
                          f"{self.worker_ids}")
        if back := sorted(set(self._retired) & set(self.plan.task_ids)):
            broken.append(f"retired task(s) {back} are in the plan again before their final "
                          "state was committed")
        if c is not None:
            extra = set(c.task_ids) - set(self.plan.task_ids) - set(self._retired)
            if applying and f is not None:
                extra -= set(f.plan.task_ids) | set(f.removed)
            if extra:
                broken.append(f"checkpoints wait for task(s) {sorted(extra)} that neither "
                              "run nor are retired")
            if missing := sorted(set(live) - set(c.task_ids)):
                broken.append(f"checkpoints do not wait for running task(s) {missing}")
        if broken:
            raise InvariantViolated("; ".join(broken))

    # --- the HTTP API -----------------------------------------------------------------

    def _start_api(self) -> None:
        if self.http_settings is None:
            return
        tokens_dir = self.tables.path.parent if self.tables.path is not None else None
        self._task_chains = {c.task_id(i): (c.chain_id, ",".join(c.steps))
                             for c in self.plan.chains for i in range(c.parallelism)}
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
        chains = self._task_chains
        metrics = {t: TaskMetrics() for t in chains}  # every task, reported yet or not
        metrics.update(snapshot_metrics(self.job.metrics))
        self.api.publish(JobSnapshot(
            self.plan.flow_name, self.job.state, self.job.restarts,
            tuple(self.checkpoints.completed) if self.checkpoints else (), metrics, chains,
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
        if request.kind == "reconfigure":
            from rheostat.control.reconfig_json import ops_from_json

            try:
                ops = ops_from_json(request.args["ops"])
            except (ValueError, TypeError) as exc:
                raise ApiError(400, str(exc)) from None
            reply = self.reconfigure(ops)
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

    # --- events -----------------------------------------------------------------------

    def _handle(self, events: Iterable[Event]) -> None:
        incarnation = self._incarnation
        for event in events:
            if self._incarnation != incarnation and not isinstance(event, SinkData):
                continue  # sent by the workers a restart in this batch replaced

            if isinstance(event, SinkData):
                self._deliver([event])
            elif isinstance(event, CheckpointAck):
                if self.checkpoints is not None and self.job.state == "running":
                    done = self.checkpoints.on_ack(
                        event.task_id, event.checkpoint_id, event.parts, event.inline
                    )
                    if done is not None:
                        self._commit(done)
            elif isinstance(event, CheckpointFailed):
                self._checkpoint_failed(event.checkpoint_id, event.reason)
            elif isinstance(event, MetricsReport):
                self.tables.metrics(event.tasks)
            elif isinstance(event, StateHandedOver):
                f = self.reconfigs.in_flight
                if f is not None and f.epoch == event.handoff.reconfig_id:
                    h = event.handoff
                    log.debug("reconfiguration %d: +%.0f ms %s hands %s to %s (%s bytes)",
                              h.reconfig_id, (self.clock() - f.started) * 1000,
                              h.from_task, h.step_id, h.to_task, len(h.state)
                              if isinstance(h.state, bytes) else "?")
                    self.backend.send(f.placement[h.to_task], InstallState(h))
            elif isinstance(event, PartDone) and isinstance(event.done, UpdateChecked):
                self._update_checked(event.done)
            elif isinstance(event, PartDone):
                if self.reconfigs.in_flight is not None:
                    log.debug("reconfiguration %d: +%.0f ms %s done", event.done.reconfig_id,
                              (self.clock() - self.reconfigs.in_flight.started) * 1000,
                              event.done.task_id)
                f = self.reconfigs.part_done(event.done.reconfig_id, event.done.task_id,
                                             self.clock())
                if f is not None:
                    self._reconfigured(f)
            was = self.job.state
            commands = self.job.handle(event)
            if self.job.state != was:
                self.tables.job_state(self.job.state, self.job.error)
            if was == "running" and self.job.state == "committing":
                assert self.checkpoints is not None
                self._commit(self.checkpoints.final())  # then every worker's sinks commit
            self._execute(commands)

    def _deliver(self, events: Iterable[Event]) -> None:
        for event in events:
            if not isinstance(event, SinkData):
                continue
            if event.key is not None:
                if event.key in self._delivered:
                    continue  # a transaction committed again after a restore
                self._delivered.add(event.key)
            self.plan.steps[event.step_id].sink.on_driver_data(event.batch)  # type: ignore[attr-defined]

    def _execute(self, commands: list) -> None:
        for command in commands:
            if isinstance(command, Restart):
                self._restart(command)
            else:
                self._send_all([command])

    def _send_all(self, commands: list) -> None:
        for command in commands:
            for worker in self.worker_ids:
                self.backend.send(worker, command)

    # --- checkpoints ------------------------------------------------------------------

    def _maybe_trigger(self) -> None:
        assert self.job.state == "running"
        if self.checkpoints is None or self.reconfigs.in_flight is not None:
            return
        now = self.clock()
        stale = self.checkpoints.timed_out(now)
        if stale is not None:
            self._checkpoint_failed(stale, "timed out")
        checkpoint_id = self.checkpoints.due(now)
        if checkpoint_id is not None:
            self.tables.checkpoint_triggered(checkpoint_id)
            self._send_all([TriggerCheckpoint(checkpoint_id)])

    def _commit(self, done: Completed) -> None:
        store = self.config.store
        try:
            parts = list(done.parts) + [
                store.write_part(done.checkpoint_id, name, blob)
                for name, blob in done.inline.items()
            ]
            store.commit(done.checkpoint_id, parts, plan_metadata(self.plan))
        except Exception as exc:  # _checkpoint_failed aborts it: no manifest, no checkpoint
            self._checkpoint_failed(done.checkpoint_id, f"{type(exc).__name__}: {exc}")
            return
        log.info("checkpoint %d complete", done.checkpoint_id)
        for t in self._retired:
            self._retired[t] -= 1
        if not done.final:
            self._release_retired()
            self._release_idle_workers()
        self.tables.checkpoint_done(done.checkpoint_id, "completed", len(parts),
                                    sum(getattr(p, "size", 0) for p in parts))
        notify = FINAL_CHECKPOINT if done.final else done.checkpoint_id
        self._send_all([CompleteCheckpoint(notify, done.finals)])

    def _checkpoint_failed(self, checkpoint_id: int, reason: str) -> None:
        assert self.checkpoints is not None
        verdict = self.checkpoints.failed(checkpoint_id)
        if verdict is None:
            return  # already counted (several tasks report the same failed checkpoint)
        log.warning("checkpoint %d failed: %s", checkpoint_id, reason)
        self.tables.checkpoint_done(checkpoint_id, "failed", reason=reason)
        self.config.store.abort(checkpoint_id)
        if verdict:
            self._send_all(self.job.fail(RuntimeError(
                f"{self.checkpoints.consecutive_failures} checkpoints failed in a row, more "
                f"than tolerated (last: {checkpoint_id}: {reason})"
            )))

    # --- recovery ---------------------------------------------------------------------

    def _restart(self, command: Restart) -> None:
        log.warning("restarting job %r (attempt %d): %s", self.plan.flow_name,
                    command.attempt, command.reason)
        kill = getattr(self.backend, "kill", None)
        if kill is not None:
            kill()
        self._deliver(self.backend.stop())
        restore = None
        if self.checkpoints is not None:
            in_flight = self.checkpoints.abort()
            if in_flight is not None:
                self.config.store.abort(in_flight)
            self.checkpoints.restart(self.plan.task_ids)
            point = self.config.store.latest()
            if point is not None:
                restore = RestoreFrom(point, point.job["parallelism"])
        self.tables.restarted(command.attempt, command.reason,
                              restore.point.checkpoint_id if restore else None)
        self._retired.clear()  # the restored job starts without them
        self._retired_on.clear()
        self._growing = None  # the backend stopped them too
        if self.backend.elastic:
            self._renumber_workers()
        self._incarnation += 1
        abandoned = self.reconfigs.abandon()
        if abandoned is not None:
            self._finish_reconfig(abandoned.request, "failed", reason=(
                "a task failed during it; the job restarted with the configuration of its "
                f"last completed stage, in the tables ({command.reason})"))
        self.job.track(self.plan.task_ids)
        if self.restart_policy.backoff_s > 0:
            time.sleep(self.restart_policy.backoff_s)
        self.backend.start(self.plan, self.placement, self.config, restore)
        self.job.restarted()
