"""The deterministic single-process backend: every task in this process, stepped in order.

Meant for tests and debugging: the same inputs give the same interleaving every run.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from rheostat.backends.base import (
    Backend,
    Command,
    Event,
    FinalCommitted,
    MetricsReport,
    PartDone,
    RestoreFrom,
    RunConfig,
    SinkData,
    StateHandedOver,
    TaskFailed,
    TaskFinished,
    carry_out,
)
from rheostat.backends.hosting import SnapshotShipper
from rheostat.plan.physical import PhysicalPlan
from rheostat.runtime.channels import InputEndpoint, LocalChannel, OutputEndpoint
from rheostat.runtime.host import TaskCrashed, TaskHost
from rheostat.runtime.snapshots import build_restores


class InlineBackend(Backend):
    def __init__(self, rounds_per_poll: int = 64) -> None:
        self.rounds_per_poll = rounds_per_poll
        self._host: TaskHost | None = None
        self._pending: list[Event] = []
        self._last_metrics = 0.0

    def start(
        self, plan: PhysicalPlan, placement: dict[str, int], config: RunConfig,
        restore: RestoreFrom | None = None,
    ) -> None:
        self.config = config
        self._pending = []
        capacity = config.channel_capacity_bytes
        channels = {c.channel_id: LocalChannel(capacity) for c in plan.channels}
        restores = None
        if restore is not None:
            restores = build_restores(plan, plan.task_ids, restore.point, restore.parallelism)
        self._host = TaskHost(
            plan, plan.task_ids, channels, channels, self._to_driver,  # type: ignore[arg-type]
            restores, config.checkpointing, isolate_tasks=True,
            on_reconfig_report=self._reconfig_reported,
        )
        self._reports = False
        self._snapshots = SnapshotShipper(config.store, self._emit, background=False)

    def fail_task(self, task_id: str, error: BaseException) -> None:
        """Report ``task_id`` as failed with ``error`` at the next poll, as if it had
        raised (for tests: the controller restarts the job from its checkpoint)."""
        self._pending.append(TaskFailed(task_id, error))

    def _reconfig_reported(self) -> None:
        self._reports = True  # return to the controller now: a stage waits for it

    def _emit(self, event: Event) -> None:
        self._pending.append(event)  # not a bound append: events() swaps the list

    def _to_driver(self, step_id: str, batch: pa.RecordBatch, key: Any = None) -> None:
        self._pending.append(SinkData(step_id, batch, key))

    def send(self, worker: int, command: Command) -> None:
        if self._host is None:
            return
        try:
            if carry_out(self._host, command, 0, self._new_channels):
                self._pending.append(FinalCommitted(0))
        except TaskCrashed as crash:
            self._pending.append(TaskFailed(crash.task_id, crash.error))
        # StopWorker: the controller stops polling; nothing runs in between

    def _new_channels(
        self, plan: PhysicalPlan, placement: dict[str, int], channel_ids: Iterable[int]
    ) -> tuple[dict[int, InputEndpoint], dict[int, OutputEndpoint]]:
        channels = {c: LocalChannel(self.config.channel_capacity_bytes) for c in channel_ids}
        return channels, channels  # type: ignore[return-value]

    def events(self, timeout: float) -> list[Event]:
        host = self._host
        assert host is not None, "start() first"
        try:
            for _ in range(self.rounds_per_poll):
                moved = host.run_round()
                if self._pending or host.done or self._reports:
                    break
                if not moved:
                    time.sleep(0.0005)  # only rate-limited sources leave nothing to do
        except TaskCrashed as crash:
            self._pending.append(TaskFailed(crash.task_id, crash.error))
        self._snapshots.ship(host.drain_snapshots())
        handoffs, done = host.drain_reconfiguration()
        self._reports = False
        self._pending += [StateHandedOver(h) for h in handoffs] + [PartDone(d) for d in done]
        events, self._pending = self._pending, []
        finished = host.newly_finished()
        now = time.monotonic()
        if finished or now - self._last_metrics >= self.config.metrics_interval_s:
            self._last_metrics = now
            events.append(MetricsReport(0, host.metrics()))  # final figures before "finished"
        return events + [TaskFinished(t) for t in finished]

    def stop(self) -> list[Event]:
        self._host = None
        events, self._pending = self._pending, []
        return events
