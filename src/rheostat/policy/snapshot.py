"""The one immutable input of every policy: what each step and task did in a window.

The definitions follow DS2 (Kalavri et al., OSDI 2018). In one window of ``window_s``
seconds a task reports its rows in and out per second and its **useful time**: the
fraction of each second it spent processing and serialising (not waiting for input, not
blocked on output credit). From these:

- **true processing rate** of a task = rows in per second / useful fraction: the rows per
  second it would take if it never waited. It does not depend on how loaded the task is,
  which is why one observation sizes a step (DS2's point).
- **true output rate** = rows out per second / useful fraction; **selectivity** = rows out /
  rows in (the useful time cancels).
- **capacity** of a step at its parallelism = the sum of its tasks' true processing rates.
- **busy** = useful fraction (Flink's ``busyTimeMsPerSecond`` / 1000), max and mean over
  the step's tasks.
- **skew index** = the most loaded task's key-group rows / the mean over tasks (1.0 is
  even): the factor by which the hottest task sees more than its share.
- **lag** = rows behind: a source's backlog, otherwise the rows queued at the step's inputs;
  ``lag_s`` is that in seconds of the step's input rate.

>>> t = TaskSample("map#0", rows_in_per_s=500.0, rows_out_per_s=250.0, useful_fraction=0.25)
>>> t.true_rate, t.selectivity
(2000.0, 0.5)
>>> s = StepSample("map", parallelism=1, tasks=(t,), inputs=("src",))
>>> s.capacity, s.busy_max
(2000.0, 0.25)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

_EMPTY: Mapping = MappingProxyType({})


def frozen_mapping(m: Mapping | None) -> Mapping | None:
    """A read-only copy of ``m`` (``None`` stays ``None``), so a snapshot cannot change."""
    return None if m is None else MappingProxyType(dict(m))


@dataclass(frozen=True)
class TaskSample:
    """One task's rates over the window (a source task's rows in are the rows it read).

    ``key_group_rows`` maps each key group the task owns to its rows per second, and
    ``state_bytes_per_group`` to its keyed state's size; both are ``None`` for steps that
    are not keyed or when the sensors did not count them.
    """

    task_id: str
    rows_in_per_s: float
    rows_out_per_s: float
    useful_fraction: float
    blocked_fraction: float = 0.0
    queued_rows: int = 0
    key_group_rows: Mapping[int, float] | None = None
    state_bytes_per_group: Mapping[int, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_group_rows", frozen_mapping(self.key_group_rows))
        object.__setattr__(self, "state_bytes_per_group",
                           frozen_mapping(self.state_bytes_per_group))

    @property
    def true_rate(self) -> float | None:
        """Rows in per second of useful time; ``None`` when the task did no useful work."""
        return self.rows_in_per_s / self.useful_fraction if self.useful_fraction > 0 else None

    @property
    def true_output_rate(self) -> float | None:
        """Rows out per second of useful time; ``None`` when the task did no useful work."""
        return self.rows_out_per_s / self.useful_fraction if self.useful_fraction > 0 else None

    @property
    def selectivity(self) -> float:
        """Rows out per row in (1.0 when nothing came in)."""
        return self.rows_out_per_s / self.rows_in_per_s if self.rows_in_per_s > 0 else 1.0

    @property
    def key_group_load(self) -> float:
        """Rows per second over the key groups it owns (its rows in when not counted)."""
        if self.key_group_rows is None:
            return self.rows_in_per_s
        return float(sum(self.key_group_rows.values()))


@dataclass(frozen=True)
class StepSample:
    """One step: its tasks (``tasks[i]`` is task index ``i``) and its place in the graph.

    ``source_rate_per_s`` is, for a source, the rate it is asked to deliver (the paced or
    offered rate); ``backlog_rows`` the rows it is behind, where it knows. ``key_group_owner``
    is the owner table (key group -> task index) of a keyed step.
    """

    step_id: str
    parallelism: int
    tasks: tuple[TaskSample, ...]
    inputs: tuple[str, ...] = ()
    is_source: bool = False
    source_rate_per_s: float | None = None
    backlog_rows: int | None = None
    max_parallelism: int = 4096
    key_group_owner: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if self.key_group_owner is not None:
            object.__setattr__(self, "key_group_owner", tuple(self.key_group_owner))

    @property
    def input_rate(self) -> float:
        """Rows per second into the step (read, for a source)."""
        return sum(t.rows_in_per_s for t in self.tasks)

    @property
    def output_rate(self) -> float:
        return sum(t.rows_out_per_s for t in self.tasks)

    @property
    def selectivity(self) -> float:
        """Rows out per row in over the whole step (1.0 when nothing came in)."""
        rows_in = self.input_rate
        return self.output_rate / rows_in if rows_in > 0 else 1.0

    @property
    def true_rates(self) -> tuple[float | None, ...]:
        """Each task's true processing rate (``None`` for a task with no useful time)."""
        return tuple(t.true_rate for t in self.tasks)

    @property
    def true_rate_per_task(self) -> float | None:
        """The mean true rate of the tasks that did useful work; ``None`` if none did."""
        rates = [r for r in self.true_rates if r is not None]
        return sum(rates) / len(rates) if rates else None

    @property
    def capacity(self) -> float | None:
        """Rows per second the step could take at its parallelism, evenly loaded."""
        rate = self.true_rate_per_task
        return None if rate is None else rate * self.parallelism

    @property
    def busy_max(self) -> float:
        return max((t.useful_fraction for t in self.tasks), default=0.0)

    @property
    def busy_mean(self) -> float:
        return sum(t.useful_fraction for t in self.tasks) / len(self.tasks) if self.tasks else 0.0

    @property
    def blocked_mean(self) -> float:
        return sum(t.blocked_fraction for t in self.tasks) / len(self.tasks) if self.tasks else 0.0

    @property
    def group_loads(self) -> Mapping[int, float]:
        """Rows per second of every counted key group, over all tasks."""
        loads: dict[int, float] = {}
        for t in self.tasks:
            loads.update(t.key_group_rows or _EMPTY)
        return loads

    @property
    def skew_index(self) -> float:
        """The most loaded task's key-group rows / the mean over tasks (1.0: even or idle)."""
        loads = [t.key_group_load for t in self.tasks]
        mean = sum(loads) / len(loads) if loads else 0.0
        return max(loads) / mean if mean > 0 else 1.0

    @property
    def lag_rows(self) -> int:
        """A source's backlog; otherwise the rows queued at the step's inputs."""
        if self.backlog_rows is not None:
            return self.backlog_rows
        return sum(t.queued_rows for t in self.tasks)

    @property
    def lag_s(self) -> float:
        """The lag in seconds of the current input rate (``inf`` when rows wait, none flow)."""
        lag = self.lag_rows
        if lag == 0:
            return 0.0
        rate = self.input_rate
        return lag / rate if rate > 0 else float("inf")


@dataclass(frozen=True)
class MetricsSnapshot:
    """Every step's sample over the window ``[time_s - window_s, time_s]``."""

    time_s: float
    window_s: float
    steps: Mapping[str, StepSample] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", MappingProxyType(dict(self.steps)))

    def topological(self) -> tuple[str, ...]:
        """Step ids, every step after its inputs (inputs not in the snapshot are skipped).

        >>> snap = MetricsSnapshot(0.0, 1.0, {
        ...     "b": StepSample("b", 1, (), inputs=("a",)),
        ...     "a": StepSample("a", 1, (), is_source=True)})
        >>> snap.topological()
        ('a', 'b')
        """
        order: list[str] = []
        seen: set[str] = set()

        def visit(step_id: str, path: frozenset[str]) -> None:
            if step_id in seen or step_id not in self.steps:
                return
            if step_id in path:
                raise ValueError(f"the steps form a cycle through {step_id!r}")
            for up in self.steps[step_id].inputs:
                visit(up, path | {step_id})
            seen.add(step_id)
            order.append(step_id)

        for step_id in sorted(self.steps):
            visit(step_id, frozenset())
        return tuple(order)
