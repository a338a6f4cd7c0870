"""A tiny pure simulation for policy tests: a paced source feeding one costed step.

``capacity(p)`` is the step's true capacity at parallelism ``p`` (rows per second). A
snapshot shows what the sensors would: the step takes ``min(rate, capacity)``; when it
cannot keep up its tasks are fully busy with a full input queue and the source's backlog
grows by the difference over the window.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from itertools import pairwise

from rheostat.policy.decision import Evaluation
from rheostat.policy.snapshot import MetricsSnapshot, StepSample, TaskSample

WORK = "work"


def snapshot(rate: float, p: int, capacity: Callable[[int], float], *, time_s: float = 0.0,
             backlog: int = 0, window_s: float = 1.0, queue_s: float = 1.0,
             group_rows: Mapping[int, float] | None = None) -> MetricsSnapshot:
    """The window's snapshot: source at ``rate``, the work step at ``p`` tasks."""
    cap = capacity(p)
    took = min(rate, cap)
    per_task = took / p
    full = rate > cap
    tasks = tuple(
        TaskSample(f"{WORK}#{i}", per_task, per_task, useful_fraction=took / cap,
                   blocked_fraction=0.0, queued_rows=int(queue_s * cap / p) if full else 0)
        for i in range(p))
    src = StepSample("src", 1, (TaskSample("src#0", took, took, 0.05,
                                           blocked_fraction=0.9 if full else 0.0),),
                     is_source=True, source_rate_per_s=rate, backlog_rows=backlog)
    work = StepSample(WORK, p, tasks, inputs=("src",))
    return MetricsSnapshot(time_s, window_s, {"src": src, WORK: work})


def run(policy: Callable[..., Evaluation], rates: list[float], p: int,
        capacity: Callable[[int], float], *, config: object = None, memory: object = None,
        window_s: float = 1.0) -> list[int]:
    """Feed each decision back as the next window's parallelism; the parallelisms seen."""
    seen, backlog = [p], 0
    for i, rate in enumerate(rates):
        snap = snapshot(rate, p, capacity, time_s=i * window_s, backlog=backlog,
                        window_s=window_s)
        args = () if config is None else (config,)
        out = policy(snap, *args, memory=memory) if memory is not None else policy(snap, *args)
        memory = out.memory
        backlog = max(0, backlog + int((rate - capacity(p)) * window_s))
        p = out.of(WORK).target_parallelism
        seen.append(p)
    return seen


def changes(seen: list[int]) -> int:
    """How many decisions changed the parallelism."""
    return sum(a != b for a, b in pairwise(seen))
