"""Target input rates per step, propagated from the sources through the graph (DS2).

A source's target is the rate it is asked to deliver (``source_rate_per_s``, else the rate
it read in the window) plus, when a catch-up horizon is given, its backlog spread over that
horizon. Every other step's target input rate is the sum over its inputs of the upstream's
target input rate times the upstream's selectivity (rows out / rows in). A step whose inputs
are not in the snapshot keeps the input rate it was measured at.

>>> from rheostat.policy.snapshot import MetricsSnapshot, StepSample, TaskSample
>>> src = StepSample("src", 1, (TaskSample("src#0", 100.0, 100.0, 0.1),), is_source=True,
...                  source_rate_per_s=200.0, backlog_rows=600)
>>> flt = StepSample("flt", 1, (TaskSample("flt#0", 100.0, 50.0, 0.5),), inputs=("src",))
>>> out = StepSample("out", 1, (TaskSample("out#0", 50.0, 50.0, 0.1),), inputs=("flt",))
>>> snap = MetricsSnapshot(10.0, 1.0, {"src": src, "flt": flt, "out": out})
>>> target_rates(snap)
{'src': 200.0, 'flt': 200.0, 'out': 100.0}
>>> target_rates(snap, catch_up_s=6.0)
{'src': 300.0, 'flt': 300.0, 'out': 150.0}
"""

from __future__ import annotations

from rheostat.policy.snapshot import MetricsSnapshot, StepSample


def source_target(step: StepSample, catch_up_s: float | None = None,
                  pause_s: float = 0.0) -> float:
    """What a source should read per second: its asked rate, plus the catch-up of its
    backlog and of the rows a reconfiguration pausing it for ``pause_s`` would add."""
    rate = step.source_rate_per_s if step.source_rate_per_s is not None else step.input_rate
    if catch_up_s:
        rate += ((step.backlog_rows or 0) + rate * pause_s) / catch_up_s
    return rate


def target_rates(snapshot: MetricsSnapshot, catch_up_s: float | None = None,
                 pause_s: float = 0.0) -> dict[str, float]:
    """Each step's target input rate in rows per second, sources first."""
    targets: dict[str, float] = {}
    for step_id in snapshot.topological():
        step = snapshot.steps[step_id]
        known = [up for up in step.inputs if up in targets]
        if step.is_source:
            targets[step_id] = source_target(step, catch_up_s, pause_s)
        elif known:
            targets[step_id] = sum(targets[up] * snapshot.steps[up].selectivity for up in known)
        else:
            targets[step_id] = step.input_rate
    return targets
