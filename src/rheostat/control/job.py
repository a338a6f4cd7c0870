"""The job's lifecycle as a pure state machine: ``handle(event) -> commands``.

It runs without processes: tests feed it events and check the commands and the state.

>>> job = JobStateMachine(task_ids=["a#0"], workers=1)
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
    MetricsReport,
    SinkData,
    StopWorker,
    TaskFailed,
    TaskFinished,
    WorkerDied,
)
from rheostat.runtime.task import TaskMetrics

# Legal transitions: running -> finished | failed | cancelled; the last three are final.
TRANSITIONS = {
    "running": {"finished", "failed", "cancelled"},
    "finished": set(),
    "failed": set(),
    "cancelled": set(),
}


@dataclass
class JobStateMachine:
    task_ids: list[str]
    workers: int
    state: str = "running"
    finished_tasks: set[str] = field(default_factory=set)
    metrics: dict[str, TaskMetrics] = field(default_factory=dict)
    error: BaseException | None = None
    failed_task: str | None = None

    def _to(self, state: str) -> list[Command]:
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"illegal job transition {self.state} -> {state}")
        self.state = state
        return [StopWorker()]

    @property
    def is_final(self) -> bool:
        return not TRANSITIONS[self.state]

    def handle(self, event: Event) -> list[Command]:
        if isinstance(event, MetricsReport):  # final figures may arrive after the end
            self.metrics.update(event.tasks)
            return []
        if self.is_final:
            return []
        if isinstance(event, TaskFinished):
            self.finished_tasks.add(event.task_id)
            if self.finished_tasks >= set(self.task_ids):
                return self._to("finished")
        elif isinstance(event, TaskFailed):
            self.error, self.failed_task = event.error, event.task_id
            return self._to("failed")
        elif isinstance(event, WorkerDied):
            self.error = RuntimeError(
                f"worker {event.worker} died (exit code {event.exitcode}) while the job ran"
            )
            return self._to("failed")
        elif isinstance(event, SinkData):
            pass  # delivered by the controller to the driver-side sink
        return []

    def cancel(self) -> list[Command]:
        return [] if self.is_final else self._to("cancelled")
