"""A paced source's rate as data: rows per second, constant or following a schedule.

``flow.source(..., rate=...)`` takes rows per second, or a schedule: a list of
``(from_s, rows_per_s)`` steps, the rate holding from each ``from_s`` (seconds since the
source task's first read) until the next step's. The first step starts at 0. A rate of 0
is a stall. A list, not a callable: the flow is data (it pickles to worker processes and
prints in plans), and a step function integrates exactly, so the rows a source has read
by any time are known, not sampled.

Time counts per source task, from its first read; a task that starts again (recovery)
starts its schedule again. A live rescale of the source keeps its tasks' clocks.

>>> s = RateSchedule.of([(0, 100), (10, 200), (20, 50)])
>>> s.at(5), s.at(10), s.at(25)
(100.0, 200.0, 50.0)
>>> s.rows_by(15)  # 10 s at 100 + 5 s at 200
2000.0
>>> RateSchedule.of(300).steps
((0.0, 300.0),)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RateSchedule:
    """Rows per second over time: ``steps`` are ``(from_s, rows_per_s)``, ascending from 0."""

    steps: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not self.steps or self.steps[0][0] != 0:
            raise ValueError(f"a rate schedule starts at 0 s, got {list(self.steps)!r}")
        for (a, _), (b, _) in zip(self.steps, self.steps[1:]):
            if not b > a:
                raise ValueError(f"a rate schedule's steps go forward in time, got {a} then {b}")
        if any(r < 0 for _, r in self.steps) or not any(r > 0 for _, r in self.steps):
            raise ValueError(f"a rate schedule's rates are >= 0 and not all 0, got "
                             f"{[r for _, r in self.steps]}")

    @classmethod
    def of(cls, rate: float | Sequence[tuple[float, float]] | RateSchedule) -> RateSchedule:
        """A schedule from rows per second (constant) or ``(from_s, rows_per_s)`` steps."""
        if isinstance(rate, RateSchedule):
            return rate
        if isinstance(rate, (int, float)):
            if not rate > 0:
                raise ValueError(f"a rate must be positive, got {rate!r}")
            return cls(((0.0, float(rate)),))
        return cls(tuple((float(t), float(r)) for t, r in rate))

    @property
    def constant(self) -> bool:
        return len(self.steps) == 1

    @property
    def least(self) -> float:
        """The smallest rate above 0 (sizes a paced source's batches)."""
        return min(r for _, r in self.steps if r > 0)

    def at(self, t: float) -> float:
        """Rows per second at ``t`` seconds."""
        rate = self.steps[0][1]
        for start, r in self.steps:
            if start > t:
                break
            rate = r
        return rate

    def rows_by(self, t: float) -> float:
        """Rows due from 0 to ``t`` seconds (the rate's integral)."""
        total = 0.0
        for i, (start, r) in enumerate(self.steps):
            if start >= t:
                break
            end = self.steps[i + 1][0] if i + 1 < len(self.steps) else t
            total += r * (min(end, t) - start)
        return total
