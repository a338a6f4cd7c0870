"""The rate policy: DS2-style sizing from true rates, with catch-up, dead band and a curve.

Each step's target input rate comes from the sources (:mod:`rheostat.policy.targets`), with
the sources' backlog spread over ``catch_up_s``. The step is sized in one step: the least
parallelism whose predicted capacity, at ``target_utilisation``, covers the target. The
prediction is linear (``p`` times the true rate per task, DS2) until the step's
:class:`~rheostat.policy.capacity.CapacityCurve` in :class:`RateMemory` holds two
parallelisms; then the curve. A key group that carries a share ``s`` of the step's rows
caps the step at ``true rate per task / s`` whatever its parallelism, so the policy never
sizes past that cap (the skew policy reports the key).

The dead band: scale up only when the current utilisation (target / predicted capacity
now) is above ``scale_up_above``; scale down only when the parallelism sized at the lower
``scale_down_utilisation`` is below the current one. After a scale-up the step sits at
``target_utilisation`` or below, which neither rule moves at an unchanged rate; the
default band holds still under +/-10 % noise. Limits per step and a core budget cap the
result; over the budget, cores go one at a time to the step with the least capacity per
row of target (the bottleneck). Holding a decision back in time (stabilisation) is the
loop's rule: a decision carries ``ideal_parallelism`` whatever it does.

>>> from rheostat.policy.snapshot import MetricsSnapshot, StepSample, TaskSample
>>> src = StepSample("src", 1, (TaskSample("src#0", 2000.0, 2000.0, 0.1),),
...                  is_source=True, source_rate_per_s=4000.0)
>>> work = StepSample("work", 2, (TaskSample("work#0", 1000.0, 1000.0, 1.0),
...                               TaskSample("work#1", 1000.0, 1000.0, 1.0)), inputs=("src",))
>>> out = decide(MetricsSnapshot(10.0, 1.0, {"src": src, "work": work}))
>>> [(d.step_id, d.action, d.target_parallelism) for d in out.decisions]
[('src', 'none', 1), ('work', 'rescale', 5)]
>>> print(out.decisions[1].reason)  # doctest: +NORMALIZE_WHITESPACE
target 4000 rows/s at 1000 rows/s per task (linear) needs 5 tasks at 85% utilisation;
2 run at 200%: rescale 2 -> 5
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from rheostat.policy.capacity import CapacityCurve, LinearModel
from rheostat.policy.decision import Decision, Evaluation, none
from rheostat.policy.snapshot import MetricsSnapshot, StepSample
from rheostat.policy.targets import target_rates


@dataclass(frozen=True)
class Limits:
    min_parallelism: int = 1
    max_parallelism: int | None = None


@dataclass(frozen=True)
class RateConfig:
    """How the rate policy sizes; ``limits`` maps a step id to its own :class:`Limits`."""

    target_utilisation: float = 0.85
    scale_up_above: float = 0.95
    scale_down_utilisation: float = 0.7
    catch_up_s: float | None = 30.0
    limits: Mapping[str, Limits] = field(default_factory=dict)
    default_limits: Limits = Limits()
    core_budget: int | None = None
    scale_sources: bool = False
    use_curve: bool = True
    curve_alpha: float = 0.5
    curve_max_age_s: float | None = 900.0
    min_useful_fraction: float = 0.02

    def limits_of(self, step: StepSample) -> tuple[int, int]:
        lim = self.limits.get(step.step_id, self.default_limits)
        hi = min(step.max_parallelism, lim.max_parallelism or step.max_parallelism)
        return max(1, min(lim.min_parallelism, hi)), hi


@dataclass(frozen=True)
class RateMemory:
    """What the rate policy learned: a capacity curve per step."""

    curves: Mapping[str, CapacityCurve] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "curves", MappingProxyType(dict(self.curves)))


@dataclass(frozen=True)
class _Sizing:
    step: StepSample
    target: float
    model: LinearModel | CapacityCurve
    cap: float  # rows/s no parallelism can exceed (a hot key group), inf if none
    lo: int
    hi: int
    want: int
    why: str
    idle: bool = False  # nothing measured: kept within its limits and the budget only


def decide(snapshot: MetricsSnapshot, config: RateConfig = RateConfig(),
           memory: RateMemory = RateMemory()) -> Evaluation:
    """Size every step of ``snapshot``; return its decisions and the updated memory."""
    targets = target_rates(snapshot, config.catch_up_s)
    curves = dict(memory.curves)
    sized: dict[str, _Sizing] = {}
    decisions: dict[str, Decision] = {}
    for step_id in snapshot.topological():
        step = snapshot.steps[step_id]
        if step.is_source and not config.scale_sources:
            decisions[step_id] = none(step_id, step.parallelism,
                                      f"a source is not rescaled (scale_sources is off); "
                                      f"it sets the target of {targets[step_id]:.0f} rows/s",
                                      target_rate_per_s=targets[step_id], policy="rate")
            continue
        curves[step_id] = _learn(curves.get(step_id, CapacityCurve()), step, snapshot, config)
        outcome = _size(step, targets[step_id], curves[step_id], config)
        if isinstance(outcome, Decision):
            decisions[step_id] = outcome
        else:
            sized[step_id] = outcome
    fixed = sum(snapshot.steps[s].parallelism for s in decisions)
    for step_id, p in _within_budget(sized, config.core_budget, fixed).items():
        decisions[step_id] = _decision(sized[step_id], p, config)
    order = snapshot.topological()
    return Evaluation(tuple(sorted(decisions.values(), key=lambda d: order.index(d.step_id))),
                      RateMemory(curves))


def _learn(curve: CapacityCurve, step: StepSample, snapshot: MetricsSnapshot,
           config: RateConfig) -> CapacityCurve:
    if config.curve_max_age_s is not None:
        curve = curve.forget_before(snapshot.time_s - config.curve_max_age_s)
    if step.capacity is None or step.busy_mean < config.min_useful_fraction:
        return curve
    return curve.observe(step.parallelism, step.capacity, snapshot.time_s, config.curve_alpha)


def _size(step: StepSample, target: float, curve: CapacityCurve,
          config: RateConfig) -> _Sizing | Decision:
    rate = step.true_rate_per_task
    lo, hi = config.limits_of(step)
    if rate is None or step.busy_mean < config.min_useful_fraction:
        why = (f"too little useful time measured (busy {step.busy_mean:.0%}) to size it for "
               f"{target:.0f} rows/s")
        return _Sizing(step, target, LinearModel(0.0), 0.0, lo, hi,
                       min(hi, max(lo, step.parallelism)), why, idle=True)
    model = curve if config.use_curve and curve.fitted else LinearModel(rate)
    loads = step.group_loads
    total = sum(loads.values())
    share = max(loads.values()) / total if total > 0 else 0.0
    cap = rate / share if share > 0 else math.inf
    need = min(target, cap) / config.target_utilisation
    p = model.smallest(need, lo, hi)
    why = f"needs {p} task{'s' * (p != 1)} at {config.target_utilisation:.0%} utilisation"
    if p is None:
        p = model.peak(lo, hi) if isinstance(model, CapacityCurve) else hi
        why = f"needs more than the {hi} allowed; {p} is the most that helps"
    if target > cap:
        why = (f"one key group carries {share:.0%} of its rows, so no parallelism takes more "
               f"than {cap:.0f} rows/s; {p} tasks reach that")
    rho = _utilisation(target, model.capacity(step.parallelism))
    down = model.smallest(min(target, cap) / config.scale_down_utilisation, lo, hi) or hi
    want = step.parallelism
    if (rho > config.scale_up_above and p > step.parallelism) or down < step.parallelism:
        want = p if p > step.parallelism else down
    want = min(hi, max(lo, want))
    return _Sizing(step, target, model, cap, lo, hi, want, why)


def _within_budget(sized: Mapping[str, _Sizing], budget: int | None,
                   fixed: int) -> dict[str, int]:
    """Each step's parallelism, cut to ``budget`` cores by serving the bottleneck first."""
    want = {s: z.want for s, z in sized.items()}
    if budget is None or sum(want.values()) + fixed <= budget:
        return want
    got = {s: z.lo for s, z in sized.items()}
    left = budget - fixed - sum(got.values())

    def headroom(s: str) -> float:  # capacity per row of target: the least is the bottleneck
        z = sized[s]
        return min(z.cap, z.model.capacity(got[s])) / z.target if z.target > 0 else math.inf

    heap = [(headroom(s), s) for s in got if got[s] < want[s]]
    heapq.heapify(heap)
    while left > 0 and heap:
        _, s = heapq.heappop(heap)
        got[s] += 1
        left -= 1
        if got[s] < want[s]:
            heapq.heappush(heap, (headroom(s), s))
    return got


def _decision(z: _Sizing, p: int, config: RateConfig) -> Decision:
    step, now = z.step, z.step.parallelism
    if z.idle:
        budget = f"; the core budget of {config.core_budget} allows {p}" if p != z.want else ""
        fields = {"policy": "rate", "target_rate_per_s": z.target,
                  "inputs": _inputs(step, z.target)}
        if p == now:
            return none(step.step_id, now, z.why, **fields)
        return Decision(step.step_id, "rescale", now, p,
                        f"{z.why}; limits {z.lo}..{z.hi}{budget}: rescale {now} -> {p}",
                        **fields)  # type: ignore[arg-type]
    rho = _utilisation(z.target, z.model.capacity(now))
    per_task = f"{step.true_rate_per_task or 0:.0f} rows/s per task" \
        if z.model.name == "linear" else "the measured capacity curve"
    head = f"target {z.target:.0f} rows/s at {per_task} ({z.model.name}) {z.why}; " \
           f"{now} run at {rho:.0%}"
    if p != z.want:
        head += f"; the core budget of {config.core_budget} allows {p}"
    if p == now:
        if z.want != now:
            tail = "held at the budget"
        elif rho > config.scale_up_above and now == z.hi:
            tail = f"no change: {now} is its maximum"
        elif rho > config.scale_up_above:
            tail = "no change: more tasks would not help"
        else:
            tail = (f"no change (up above {config.scale_up_above:.0%}, down when "
                    f"{config.scale_down_utilisation:.0%} needs fewer)")
        action = "none"
    else:
        tail, action = f"rescale {now} -> {p}", "rescale"
    ideal = z.model.smallest(min(z.target, z.cap) / config.target_utilisation, z.lo, z.hi)
    return Decision(step.step_id, action, now, p, f"{head}: {tail}",  # type: ignore[arg-type]
                    ideal_parallelism=ideal, policy="rate", model=z.model.name,  # type: ignore[arg-type]
                    predicted_capacity_per_s=min(z.cap, z.model.capacity(p)),
                    target_rate_per_s=z.target, inputs=_inputs(step, z.target, rho))


def _utilisation(target: float, capacity: float) -> float:
    if capacity > 0:
        return target / capacity
    return 0.0 if target <= 0 else math.inf


def _inputs(step: StepSample, target: float, rho: float | None = None) -> dict[str, float | None]:
    return {"target_rate_per_s": target, "input_rate_per_s": step.input_rate,
            "true_rate_per_task": step.true_rate_per_task, "capacity_per_s": step.capacity,
            "utilisation": rho, "busy_max": step.busy_max, "busy_mean": step.busy_mean,
            "blocked_mean": step.blocked_mean, "lag_rows": float(step.lag_rows),
            "skew_index": step.skew_index}
