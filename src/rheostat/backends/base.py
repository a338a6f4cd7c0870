"""The seam between the controller and whatever runs the tasks.

A backend starts workers hosting the plan's tasks, delivers commands to them, reports
what happens as events, and stops them. The controller never learns whether the workers
are threads, processes or Ray actors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import pyarrow as pa

from rheostat.plan.physical import PhysicalPlan
from rheostat.runtime.task import TaskMetrics


@dataclass(frozen=True)
class RunConfig:
    workers: int = 1
    channel_capacity_bytes: int = 8 << 20
    metrics_interval_s: float = 0.5


# --- events: worker -> controller ---------------------------------------------------


@dataclass(frozen=True)
class TaskFinished:
    task_id: str


@dataclass(frozen=True)
class TaskFailed:
    task_id: str
    error: BaseException


@dataclass(frozen=True)
class WorkerDied:
    worker: int
    exitcode: int | None


@dataclass(frozen=True)
class MetricsReport:
    worker: int
    tasks: dict[str, TaskMetrics] = field(default_factory=dict)


@dataclass(frozen=True)
class SinkData:
    step_id: str
    batch: pa.RecordBatch


Event = TaskFinished | TaskFailed | WorkerDied | MetricsReport | SinkData


# --- commands: controller -> worker -------------------------------------------------


@dataclass(frozen=True)
class StopWorker:
    """Stop hosting tasks and exit."""


Command = StopWorker


class Backend(ABC):
    @abstractmethod
    def start(self, plan: PhysicalPlan, placement: dict[str, int], config: RunConfig) -> None:
        """Start ``config.workers`` workers; task ``t`` runs on worker ``placement[t]``."""

    @abstractmethod
    def send(self, worker: int, command: Command) -> None: ...

    @abstractmethod
    def events(self, timeout: float) -> list[Event]:
        """Events since the last call; waits up to ``timeout`` seconds for the first."""

    @abstractmethod
    def stop(self) -> None:
        """Stop every worker (idempotent); no process is left behind."""
