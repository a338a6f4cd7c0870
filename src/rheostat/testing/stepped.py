"""A whole job stepped in the calling thread, deterministically.

Every task runs in this process (the inline backend, one round of every task per turn)
and the controller's time is a :class:`~rheostat.testing.clock.FakeClock` that moves a
fixed tick per turn, so the same flow and the same calls give the same interleaving of
batches, checkpoints, reconfigurations and failures every run. Tests of a flow or of the
engine's protocols use it to put a checkpoint, a rescale or a crash at an exact point.

>>> import rheostat as rs
>>> flow = rs.Flow("doc_stepped")
>>> out = rs.sinks.collect()
>>> (flow.source("n", rs.testing.rows([{"k": i % 5, "x": i} for i in range(20_000)],
...                                    batch_size=10))
...      .key_by("k").process(rs.stateful_map(lambda s, r: ((s or 0) + 1, r)), name="count")
...      .sink("out", out))
>>> job = SteppedJob(flow, parallelism=2)
>>> job.step(5)
>>> job.settle(job.rescale("count", 3))["status"]
'done'
>>> job.finish().state, len(out)
('finished', 20000)
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from rheostat.api.flow import Flow
from rheostat.backends.inline import InlineBackend
from rheostat.control.controller import JobResult, RestartPolicy
from rheostat.launch import controller_for
from rheostat.plan.reconfig import MoveKeyGroups, Operation, Rescale
from rheostat.testing.clock import FakeClock


class SteppedJob:
    """``flow`` started at ``parallelism``; nothing moves until :meth:`step` is called.

    ``checkpoint_interval`` (seconds of fake time) and ``checkpoint_dir`` turn on
    checkpoints; each turn advances the clock by ``tick`` seconds, then checks the
    controller's invariants (``Controller.validate``; ``validate=False`` skips it).
    ``restart_attempts``: how often a failed job restarts from its latest checkpoint.
    Other options go to ``rs.run``'s (``max_parallelism``, ``reconfig_batch_groups``...).
    """

    def __init__(
        self,
        flow: Flow,
        *,
        parallelism: int = 1,
        checkpoint_interval: float | None = None,
        checkpoint_dir: str | None = None,
        tick: float = 0.001,
        restart_attempts: int = 3,
        max_turns: int = 200_000,
        validate: bool = True,
        **options: Any,
    ) -> None:
        self.clock = FakeClock()
        self.validate = validate
        self.tick = tick
        self.max_turns = max_turns
        self.backend = InlineBackend(rounds_per_poll=1)
        checkpoints: dict[str, Any] = {}
        if checkpoint_interval is not None:
            checkpoints = {"checkpoint_interval": f"{checkpoint_interval * 1000}ms",
                           "checkpoint_dir": checkpoint_dir}
        self.controller = controller_for(
            flow, parallelism=parallelism, backend=self.backend, clock=self.clock,
            restart=RestartPolicy(attempts=restart_attempts, backoff_s=0.0),
            **checkpoints, **options)
        self.turns = 0
        self._result: JobResult | None = None
        self.controller.begin()

    # --- moving -----------------------------------------------------------------------

    def step(self, turns: int = 1) -> None:
        """``turns`` turns of the control loop (each steps every task once)."""
        for _ in range(turns):
            if self.done:
                return
            self.clock.advance(self.tick)
            self.turns += 1
            self.controller.step(timeout=0)
            if self.validate:
                self.controller.validate()

    def run_until(self, condition: Callable[[], bool], what: str = "the condition") -> None:
        """Step until ``condition()`` holds; raises if the job ends or ``max_turns`` pass."""
        for _ in range(self.max_turns):
            if condition():
                return
            if self.done:
                break
            self.step()
        if not condition():
            raise AssertionError(f"{what} did not happen within {self.max_turns} turns "
                                 f"(job {self.state})")

    def settle(self, reply: Future[dict[str, Any]]) -> dict[str, Any]:
        """Step until the reconfiguration behind ``reply`` is done; its outcome (raises
        ``ReconfigError`` when it was refused or failed, or the job ended first)."""
        self.run_until(lambda: reply.done() or self.done, "the reconfiguration")
        if not reply.done():
            self.finish()  # refuses what is left
        return reply.result()

    def checkpoint(self) -> int:
        """Take a checkpoint now and step until it completes; its id."""
        coordinator = self.controller.checkpoints
        if coordinator is None:
            raise ValueError("this job takes no checkpoints: give checkpoint_interval")
        before = len(coordinator.completed)
        coordinator.soon()
        self.run_until(lambda: len(coordinator.completed) > before, "a checkpoint")
        return coordinator.completed[-1]

    def finish(self) -> JobResult:
        """Step until the job ends; its result."""
        if self._result is None:
            self.run_until(lambda: self.done, "the end of the job")
            self._result = self.controller.finish()
        return self._result

    # --- changing ---------------------------------------------------------------------

    def reconfigure(self, *ops: Operation) -> Future[dict[str, Any]]:
        """Ask for a reconfiguration; it runs in the coming turns (see :meth:`settle`)."""
        return self.controller.reconfigure(ops)

    def rescale(self, step: str, parallelism: int) -> Future[dict[str, Any]]:
        return self.reconfigure(Rescale(step, parallelism))

    def move_key_groups(self, step: str, groups: Any, to_task: int) -> Future[dict[str, Any]]:
        return self.reconfigure(MoveKeyGroups(step, tuple(groups), to_task))

    def fail(self, task_id: str, error: BaseException | None = None) -> None:
        """Crash ``task_id`` (as if it raised): the job restarts from its checkpoint."""
        self.backend.fail_task(task_id, error or RuntimeError(f"{task_id} was killed"))

    # --- reading ----------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self.controller.job.state

    @property
    def done(self) -> bool:
        return self.controller.job.is_final

    @property
    def task_ids(self) -> list[str]:
        return list(self.controller.plan.task_ids)

    @property
    def restarts(self) -> int:
        return self.controller.job.restarts
