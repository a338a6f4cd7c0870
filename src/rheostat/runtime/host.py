"""Hosting tasks: the loop every worker runs, whatever backend created it.

``TaskHost.run_round`` steps every unfinished task once, in a fixed order, so a host that
holds all tasks of a job is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cloudpickle

from rheostat.plan.physical import PhysicalPlan
from rheostat.runtime.channels import InputEndpoint, OutputEndpoint
from rheostat.runtime.task import Task, TaskMetrics, TaskRestore, TaskSnapshot


class TaskCrashed(Exception):
    """A hosted task raised; carries its id and the error."""

    def __init__(self, task_id: str, error: BaseException) -> None:
        super().__init__(task_id, error)
        self.task_id = task_id
        self.error = error


class TaskHost:
    def __init__(
        self,
        plan: PhysicalPlan,
        task_ids: list[str],
        inputs: dict[int, InputEndpoint],
        outputs: dict[int, OutputEndpoint],
        send_to_driver: Callable[..., None],
        restores: dict[str, TaskRestore] | None = None,
        checkpointing: bool = False,
        isolate_tasks: bool = False,
    ) -> None:
        """``isolate_tasks``: give each task its own copy of the plan, as if it ran in its
        own process, so tasks sharing this host share no user object."""
        restores = restores or {}
        blob = cloudpickle.dumps(plan) if isolate_tasks else None
        self.tasks = [
            Task(cloudpickle.loads(blob) if blob else plan, t, inputs, outputs, send_to_driver,
                 restores.get(t), checkpointing)
            for t in task_ids
        ]
        self._reported_finished: set[str] = set()

    @property
    def done(self) -> bool:
        return all(t.finished for t in self.tasks)

    def run_round(self) -> bool:
        """Step every unfinished task once; True if anything moved."""
        moved = False
        for task in self.tasks:
            if task.finished:
                continue
            try:
                moved = task.step() or moved
            except Exception as exc:
                raise TaskCrashed(task.task_id, exc) from exc
        return moved

    def newly_finished(self) -> list[str]:
        out = [t.task_id for t in self.tasks
               if t.finished and t.task_id not in self._reported_finished]
        self._reported_finished.update(out)
        return out

    def trigger_checkpoint(self, checkpoint_id: int) -> None:
        for task in self.tasks:
            self._guarded(task, task.trigger_checkpoint, checkpoint_id)

    def checkpoint_complete(self, checkpoint_id: int) -> None:
        for task in self.tasks:
            self._guarded(task, task.checkpoint_complete, checkpoint_id)

    def drain_snapshots(self) -> list[TaskSnapshot]:
        out = [s for t in self.tasks for s in t.snapshots]
        for t in self.tasks:
            t.snapshots.clear()
        return out

    @staticmethod
    def _guarded(task: Task, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            raise TaskCrashed(task.task_id, exc) from exc

    def metrics(self) -> dict[str, TaskMetrics]:
        return {t.task_id: t.snapshot_metrics() for t in self.tasks}
