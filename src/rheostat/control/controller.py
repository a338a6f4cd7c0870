"""The controller: owns the physical plan, drives the job through a backend.

It feeds the backend's events to the job state machine, carries out the commands that
come back, hands sink data to the driver-side sinks, and reports progress.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rheostat.backends.base import Backend, RunConfig, SinkData, StopWorker
from rheostat.control.job import JobStateMachine
from rheostat.plan.physical import PhysicalPlan, assign_workers
from rheostat.runtime.errors import JobFailed
from rheostat.runtime.task import TaskMetrics


@dataclass
class JobResult:
    """What a finished job reports: its state, timings and per-task metrics."""

    flow_name: str
    state: str
    elapsed_s: float
    plan: PhysicalPlan
    metrics: dict[str, TaskMetrics] = field(default_factory=dict)

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


ProgressCallback = Callable[[PhysicalPlan, dict[str, TaskMetrics], float], None]


class Controller:
    def __init__(
        self,
        plan: PhysicalPlan,
        backend: Backend,
        config: RunConfig,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.plan = plan
        self.backend = backend
        self.config = config
        self.on_progress = on_progress
        self.job = JobStateMachine(plan.task_ids, config.workers)

    def run(self) -> JobResult:
        placement = assign_workers(self.plan, self.config.workers)
        started = time.monotonic()
        last_progress = started
        self.backend.start(self.plan, placement, self.config)
        try:
            while not self.job.is_final:
                for event in self.backend.events(timeout=0.1):
                    if isinstance(event, SinkData):
                        self.plan.steps[event.step_id].sink.on_driver_data(event.batch)  # type: ignore[attr-defined]
                    self._execute(self.job.handle(event))
                now = time.monotonic()
                if self.on_progress and now - last_progress >= self.config.metrics_interval_s:
                    last_progress = now
                    self.on_progress(self.plan, self.job.metrics, now - started)
        except KeyboardInterrupt:
            self._execute(self.job.cancel())
            raise
        finally:
            self.backend.stop()
        elapsed = time.monotonic() - started
        if self.on_progress:
            self.on_progress(self.plan, self.job.metrics, elapsed)
        if self.job.state == "failed":
            where = f" in task {self.job.failed_task}" if self.job.failed_task else ""
            raise JobFailed(
                f"job {self.plan.flow_name!r} failed{where}: {self.job.error}"
            ) from self.job.error
        return JobResult(self.plan.flow_name, self.job.state, elapsed, self.plan, self.job.metrics)

    def _execute(self, commands: list) -> None:
        for command in commands:
            if isinstance(command, StopWorker):
                for worker in range(self.config.workers):
                    self.backend.send(worker, command)
