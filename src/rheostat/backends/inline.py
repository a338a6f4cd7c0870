"""The deterministic single-process backend: every task in this process, stepped in order.

Meant for tests and debugging: the same inputs give the same interleaving every run.
"""

from __future__ import annotations

import time

import pyarrow as pa

from rheostat.backends.base import (
    Backend,
    Command,
    Event,
    MetricsReport,
    RunConfig,
    SinkData,
    TaskFailed,
    TaskFinished,
)
from rheostat.plan.physical import PhysicalPlan
from rheostat.runtime.channels import LocalChannel
from rheostat.runtime.host import TaskCrashed, TaskHost


class InlineBackend(Backend):
    def __init__(self, rounds_per_poll: int = 64) -> None:
        self.rounds_per_poll = rounds_per_poll
        self._host: TaskHost | None = None
        self._pending: list[Event] = []
        self._last_metrics = 0.0

    def start(self, plan: PhysicalPlan, placement: dict[str, int], config: RunConfig) -> None:
        self.config = config
        capacity = config.channel_capacity_bytes
        channels = {c.channel_id: LocalChannel(capacity) for c in plan.channels}
        self._host = TaskHost(
            plan, plan.task_ids, channels, channels, self._to_driver,  # type: ignore[arg-type]
            isolate_tasks=True,
        )

    def _to_driver(self, step_id: str, batch: pa.RecordBatch) -> None:
        self._pending.append(SinkData(step_id, batch))

    def send(self, worker: int, command: Command) -> None:
        pass  # StopWorker: the controller stops polling; nothing runs in between

    def events(self, timeout: float) -> list[Event]:
        host = self._host
        assert host is not None, "start() first"
        try:
            for _ in range(self.rounds_per_poll):
                moved = host.run_round()
                if self._pending or host.done:
                    break
                if not moved:
                    time.sleep(0.0005)  # only rate-limited sources leave nothing to do
        except TaskCrashed as crash:
            self._pending.append(TaskFailed(crash.task_id, crash.error))
        events, self._pending = self._pending, []
        finished = host.newly_finished()
        now = time.monotonic()
        if finished or now - self._last_metrics >= self.config.metrics_interval_s:
            self._last_metrics = now
            events.append(MetricsReport(0, host.metrics()))  # final figures before "finished"
        return events + [TaskFinished(t) for t in finished]

    def stop(self) -> None:
        self._host = None
