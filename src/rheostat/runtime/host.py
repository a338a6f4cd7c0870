"""Hosting tasks: the loop every worker runs, whatever backend created it.

``TaskHost.run_round`` steps every unfinished task once, in a fixed order, so a host that
holds all tasks of a job is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import cloudpickle

from rheostat.plan.physical import PhysicalPlan
from rheostat.plan.reconfig import ReconfigSpec
from rheostat.runtime.channels import InputEndpoint, OutputEndpoint
from rheostat.runtime.messages import FINAL_CHECKPOINT
from rheostat.runtime.reconfig import StateHandoff, TaskReconfigured, UpdateChecked
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
        on_reconfig_report: Callable[[], None] | None = None,
        between_tasks: Callable[[], None] | None = None,
    ) -> None:
        """``isolate_tasks``: give each task its own copy of the plan, as if it ran in its
        own process, so tasks sharing this host share no user object."""
        restores = restores or {}
        #: Called as soon as a task has state to hand over or a part done, mid-round: the
        #: tasks waiting for it should not wait for the rest of the round.
        self.on_reconfig_report = on_reconfig_report
        #: Called after each task's step (a worker carries out commands that came in).
        self.between_tasks = between_tasks
        self.send_to_driver = send_to_driver
        self.checkpointing = checkpointing
        self.isolate_tasks = isolate_tasks
        copies = self._plan_copies(plan)
        self.tasks = [
            Task(next(copies), t, inputs, outputs, send_to_driver, restores.get(t), checkpointing)
            for t in task_ids
        ]
        self._reported_finished: set[str] = set()

    def _plan_copies(self, plan: PhysicalPlan) -> Iterator[PhysicalPlan]:
        """One plan per task: a private copy each when tasks are isolated."""
        blob = cloudpickle.dumps(plan) if self.isolate_tasks else None
        while True:
            yield cloudpickle.loads(blob) if blob else plan

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
            if self.on_reconfig_report is not None and (task.handoffs or task.reconfigured):
                self.on_reconfig_report()
            if self.between_tasks is not None:
                self.between_tasks()
        return moved

    def newly_finished(self) -> list[str]:
        """Tasks that finished since the last call. The old instance of a task that moved
        to another worker is dropped once it has finished, unreported: the task runs on."""
        left = [t for t in self.tasks if t.finished and t.relocated_away and not t.handoffs]
        if left:
            self.tasks = [t for t in self.tasks if t not in left]
        out = [t.task_id for t in self.tasks
               if t.finished and t.task_id not in self._reported_finished]
        self._reported_finished.update(out)
        return out

    def trigger_checkpoint(self, checkpoint_id: int) -> None:
        for task in self.tasks:
            self._guarded(task, task.trigger_checkpoint, checkpoint_id)

    def checkpoint_complete(self, checkpoint_id: int, finals: tuple[str, ...] = ()) -> None:
        """Checkpoint ``checkpoint_id`` is durable; the finished tasks in ``finals`` had
        their final snapshot in it, so what that snapshot staged commits now too."""
        for task in self.tasks:
            self._guarded(task, task.checkpoint_complete, checkpoint_id)
            if task.finished and task.task_id in finals:
                self._guarded(task, task.checkpoint_complete, FINAL_CHECKPOINT)

    def drain_snapshots(self) -> list[TaskSnapshot]:
        out = [s for t in self.tasks for s in t.snapshots]
        for t in self.tasks:
            t.snapshots.clear()
        return out

    # --- live reconfiguration -------------------------------------------------------

    def reconfigure(
        self, plan: PhysicalPlan, spec: ReconfigSpec, my_tasks: list[str],
        inputs: dict[int, InputEndpoint], outputs: dict[int, OutputEndpoint],
    ) -> None:
        """Carry out ``spec`` here: ``my_tasks`` are the tasks this host holds in ``plan``;
        ``inputs``/``outputs`` are the endpoints of the new channels they touch."""
        copies = self._plan_copies(plan)
        # A retired task of an id this change adds again lingers here, finished; the new
        # one may run on another worker (an elastic backend's): the old one goes now.
        self.tasks = [t for t in self.tasks if not (t.finished and t.task_id in spec.added)]
        for task in self.tasks:
            self._guarded(task, task.reconfigure, next(copies), spec, inputs, outputs)
        for task_id in my_tasks:
            if task_id not in spec.added and task_id not in spec.relocated:
                continue
            # A retired task of this id may linger, finished: the new one replaces it. One
            # still running would be dropped with the rows it took: that is a bug, loudly.
            if task_id in spec.added and any(
                    t.task_id == task_id and not t.finished for t in self.tasks):
                raise TaskCrashed(task_id, RuntimeError(
                    f"reconfiguration {spec.reconfig_id} adds task {task_id}, which still "
                    "runs here; replacing it would lose its rows (a bug in rheostat)"))
            self.tasks = [t for t in self.tasks if t.task_id != task_id]
            self._reported_finished.discard(task_id)
            try:
                task = Task(next(copies), task_id, inputs, outputs, self.send_to_driver,
                            None, self.checkpointing)
                task.join_reconfiguration(spec)
            except Exception as exc:
                raise TaskCrashed(task_id, exc) from exc
            self.tasks.append(task)

    def check_update(self, plan: PhysicalPlan, reconfig_id: int, steps: tuple[str, ...]) -> None:
        for task in self.tasks:
            if not task.finished:
                self._guarded(task, task.check_update, plan, reconfig_id, steps)

    def install_state(self, task_id: str, step_id: str, from_task: str, state: Any) -> None:
        for task in self.tasks:
            if task.task_id == task_id:
                self._guarded(task, task.install_state, step_id, from_task, state)
                return
        raise KeyError(f"no task {task_id} here")

    def drain_reconfiguration(
        self,
    ) -> tuple[list[StateHandoff], list[TaskReconfigured | UpdateChecked]]:
        """State handed over and parts done since the last call."""
        handoffs = [h for t in self.tasks for h in t.handoffs]
        done = [d for t in self.tasks for d in t.reconfigured]
        for t in self.tasks:
            t.handoffs.clear()
            t.reconfigured.clear()
        return handoffs, done

    @staticmethod
    def _guarded(task: Task, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            raise TaskCrashed(task.task_id, exc) from exc

    def metrics(self) -> dict[str, TaskMetrics]:
        return {t.task_id: t.snapshot_metrics() for t in self.tasks}
