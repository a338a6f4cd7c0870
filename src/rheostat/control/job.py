"""The job's lifecycle as a pure state machine: ``handle(event) -> commands``.

It runs without processes: tests feed it events and check the commands and the state.

>>> job = JobStateMachine(task_ids=["a#0"], workers=1)  # no checkpoints
>>> job.handle(TaskFinished("a#0"))
[StopWorker()]
>>> job.state
'finished'
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rheostat.backends.base import (
    Command,
    Event,
    FinalCommitted,
    MetricsReport,
    SinkData,
    StopWorker,
    TaskFailed,
    TaskFinished,
    WorkerDied,
)
from rheostat.protocol import TaskMetrics

# Legal transitions; finished, failed and cancelled are final.
TRANSITIONS = {
    "running": {"finished", "committing", "failed", "cancelled", "restarting"},
    # every task has finished; the final checkpoint is committed; sinks are committing it
    "committing": {"finished", "failed", "cancelled", "restarting"},
    "restarting": {"running", "failed", "cancelled"},
    "finished": set(),
    "failed": set(),
    "cancelled": set(),
}


@dataclass(frozen=True)
class Restart:
    """Command: restore the latest checkpoint and start the tasks again."""

    attempt: int
    reason: str


JobCommand = Command | Restart


@dataclass
class JobStateMachine:
    task_ids: list[str]
    workers: int
    #: How many times a failed job is restarted before it fails for good.
    restart_attempts: int = 0
    #: With checkpoints, a job ends only once every worker's sinks committed the last one.
    checkpointing: bool = False
    state: str = "running"
    restarts: int = 0
    committed_workers: set[int] = field(default_factory=set)
    finished_tasks: set[str] = field(default_factory=set)
    metrics: dict[str, TaskMetrics] = field(default_factory=dict)
    error: BaseException | None = None
    failed_task: str | None = None

    def _to(self, state: str) -> list[JobCommand]:
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"illegal job transition {self.state} -> {state}")
        self.state = state
        return [StopWorker()]

    @property
    def is_final(self) -> bool:
        return not TRANSITIONS[self.state]

    def handle(self, event: Event) -> list[JobCommand]:
        if isinstance(event, MetricsReport):  # final figures may arrive after the end
            self.metrics.update(event.tasks)
            return []
        if self.is_final:
            return []
        if isinstance(event, TaskFinished) and self.state == "running":
            self.finished_tasks.add(event.task_id)
            if self.finished_tasks >= set(self.task_ids):
                if self.checkpointing:
                    self.state = "committing"
                    return []
                return self._to("finished")
        elif isinstance(event, FinalCommitted) and self.state == "committing":
            self.committed_workers.add(event.worker)
            if len(self.committed_workers) == self.workers:
                return self._to("finished")
        elif isinstance(event, TaskFailed) and self.state in ("running", "committing"):
            self.error, self.failed_task = event.error, event.task_id
            return self._fail_or_restart()
        elif isinstance(event, WorkerDied) and self.state in ("running", "committing"):
            self.error = RuntimeError(
                f"worker {event.worker} died (exit code {event.exitcode}) while the job ran"
            )
            self.failed_task = None
            return self._fail_or_restart()
        elif isinstance(event, SinkData):
            pass  # delivered by the controller to the driver-side sink
        return []

    def _fail_or_restart(self) -> list[JobCommand]:
        if self.restarts >= self.restart_attempts:
            return self._to("failed")
        self.restarts += 1
        self.state = "restarting"
        return [Restart(self.restarts, str(self.error).splitlines()[0])]

    def restarted(self) -> None:
        """The tasks run again from the restored state."""
        if self.state != "restarting":
            raise RuntimeError(f"illegal job transition {self.state} -> running")
        self.state = "running"
        self.finished_tasks.clear()
        self.committed_workers.clear()
        self.error = self.failed_task = None

    def track(self, task_ids: list[str], workers: int | None = None) -> None:
        """The job runs these tasks now (a reconfiguration changed them), on ``workers``."""
        self.task_ids = list(task_ids)
        if workers is not None:
            self.workers = workers

    def forget(self, task_id: str) -> None:
        """A retired task is gone for good: it no longer counts as finished."""
        self.finished_tasks.discard(task_id)

    def fail(self, error: BaseException) -> list[JobCommand]:
        """Fail the job for a reason of the controller's own (not a task's)."""
        if self.is_final:
            return []
        self.error = error
        return self._to("failed")

    def cancel(self) -> list[JobCommand]:
        return [] if self.is_final else self._to("cancelled")
