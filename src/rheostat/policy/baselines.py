"""The autoscalers users have today, as policies over the same snapshots, for comparison.

- :func:`ds2`: DS2 as published (OSDI 2018): parallelism = ceil(target rate / true rate per
  task), targets propagated from the sources' observed or asked rates; no utilisation
  headroom, no catch-up, no memory, and it ignores scale-downs by one.
- :func:`flink`: the Flink Kubernetes operator's autoscaler with its defaults: true rate =
  the step's input rate / busy time aggregated as the max over subtasks; sized at 0.7
  target utilisation; acts only when some step's utilisation leaves ``0.7 +/- 0.3``, and
  then resizes every step (one restart); a catch-up term for the lag plus what a 5 min
  restart adds, over 30 min; keyed steps rounded up to a divisor of the key-group count; no
  decision within 5 min of a change plus a 15 min metric window; a scale-down only after it
  has been asked for 1 h. The times are config, so a benchmark can compress them.
- :func:`ray_style`: Ray Data's actor pools: +1 task when utilisation is above 1.75, -1
  below 0.5, where utilisation is in-flight work per task (busy time plus the queued
  rows' seconds of work, as Ray counts running and queued tasks per actor).

>>> from rheostat.policy.snapshot import MetricsSnapshot, StepSample, TaskSample
>>> src = StepSample("src", 1, (TaskSample("src#0", 2000.0, 2000.0, 0.1),), is_source=True,
...                  source_rate_per_s=3000.0)
>>> work = StepSample("work", 2, (TaskSample("work#0", 1000.0, 1000.0, 1.0, queued_rows=1000),
...                               TaskSample("work#1", 1000.0, 1000.0, 1.0, queued_rows=1000)),
...                   inputs=("src",))
>>> snap = MetricsSnapshot(0.0, 1.0, {"src": src, "work": work})
>>> ds2(snap).of("work").target_parallelism, ray_style(snap).of("work").target_parallelism
(3, 3)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from rheostat.policy.decision import Decision, Evaluation, none
from rheostat.policy.snapshot import MetricsSnapshot, StepSample
from rheostat.policy.targets import target_rates


def _scalable(snapshot: MetricsSnapshot) -> list[StepSample]:
    return [snapshot.steps[s] for s in snapshot.topological() if not snapshot.steps[s].is_source]


def _sources_hold(snapshot: MetricsSnapshot, policy: str) -> list[Decision]:
    return [none(s.step_id, s.parallelism, "a source is not rescaled", policy=policy)
            for s in map(snapshot.steps.get, snapshot.topological()) if s and s.is_source]


def _rescale(step: StepSample, p: int, reason: str, **fields: object) -> Decision:
    if p == step.parallelism:
        return none(step.step_id, p, f"{reason}: no change", **fields)
    return Decision(step.step_id, "rescale", step.parallelism, p,  # type: ignore[arg-type]
                    f"{reason}: rescale {step.parallelism} -> {p}", **fields)


@dataclass(frozen=True)
class DS2Config:
    max_parallelism: int | None = None


def ds2(snapshot: MetricsSnapshot, config: DS2Config = DS2Config(),
        memory: None = None) -> Evaluation:
    """DS2 as published: one sizing from true rates, scale-downs by one ignored."""
    targets = target_rates(snapshot)
    out = _sources_hold(snapshot, "ds2")
    for step in _scalable(snapshot):
        target, rate = targets[step.step_id], step.true_rate_per_task
        fields = {"policy": "ds2", "target_rate_per_s": target}
        if rate is None:
            out.append(none(step.step_id, step.parallelism, "no useful time measured", **fields))
            continue
        hi = min(step.max_parallelism, config.max_parallelism or step.max_parallelism)
        p = min(hi, max(1, math.ceil(target / rate - 1e-9)))
        why = f"target {target:.0f} rows/s / {rate:.0f} rows/s per task = {p} tasks"
        if p == step.parallelism - 1:
            out.append(none(step.step_id, step.parallelism,
                            f"{why}: DS2 ignores a scale-down by one", ideal_parallelism=p,
                            **fields))
        else:
            out.append(_rescale(step, p, why, ideal_parallelism=p,
                                predicted_capacity_per_s=p * rate, **fields))
    return Evaluation(tuple(out))


@dataclass(frozen=True)
class FlinkConfig:
    target_utilisation: float = 0.7
    utilisation_boundary: float = 0.3
    metrics_window_s: float = 900.0
    stabilisation_s: float = 300.0
    scale_down_delay_s: float = 3600.0
    catch_up_s: float = 1800.0
    restart_s: float = 300.0
    align_to_key_groups: bool = True
    max_parallelism: int | None = None

    def time_compressed(self, factor: float) -> FlinkConfig:
        """The same rules with every duration divided by ``factor`` (for benchmarks).

        >>> FlinkConfig().time_compressed(60).stabilisation_s
        5.0
        """
        return replace(self, **{name: getattr(self, name) / factor for name in (
            "metrics_window_s", "stabilisation_s", "scale_down_delay_s", "catch_up_s",
            "restart_s")})


@dataclass(frozen=True)
class FlinkMemory:
    """When the job was first seen and last changed, and scale-downs waiting their delay."""

    last_change_s: float
    #: step id -> (first asked at, the most tasks asked for since)
    scale_down_asked: Mapping[str, tuple[float, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale_down_asked",
                           MappingProxyType(dict(self.scale_down_asked)))


def flink(snapshot: MetricsSnapshot, config: FlinkConfig = FlinkConfig(),
          memory: FlinkMemory | None = None) -> Evaluation:
    """Flink's autoscaler; the first call starts its clock at ``snapshot.time_s``."""
    now = snapshot.time_s
    memory = memory or FlinkMemory(now)
    out = _sources_hold(snapshot, "flink")
    settle = memory.last_change_s + config.stabilisation_s + config.metrics_window_s
    if now < settle:
        out += [none(s.step_id, s.parallelism, f"stabilising and filling the metric window "
                     f"until t={settle:.0f}s", policy="flink") for s in _scalable(snapshot)]
        return Evaluation(tuple(out), memory)
    targets = target_rates(snapshot, config.catch_up_s or None, config.restart_s)
    sized = {s.step_id: _flink_size(s, targets[s.step_id], config) for s in _scalable(snapshot)}
    lo, hi = (config.target_utilisation + b * config.utilisation_boundary for b in (-1, 1))
    outside = [s for s, (_, rho) in sized.items() if rho is not None and not lo <= rho <= hi]
    asked = dict(memory.scale_down_asked)
    changed = False
    for step in _scalable(snapshot):
        p, rho = sized[step.step_id]
        fields = {"policy": "flink", "target_rate_per_s": targets[step.step_id],
                  "ideal_parallelism": p, "inputs": {"utilisation": rho,
                                                     "busy_max": step.busy_max}}
        if rho is None or not outside:
            asked.pop(step.step_id, None)
            out.append(none(step.step_id, step.parallelism, "no busy time measured"
                            if rho is None else f"every step's utilisation is within "
                            f"[{lo:.0%}, {hi:.0%}]", **fields))
            continue
        why = f"utilisation {rho:.0%} of busy-max capacity; at {config.target_utilisation:.0%} " \
              f"it needs {p}"
        if p < step.parallelism:
            since, most = asked.get(step.step_id, (now, p))
            asked[step.step_id] = (since, max(most, p))
            if now - since < config.scale_down_delay_s:
                out.append(none(step.step_id, step.parallelism, f"{why}: the scale-down waits "
                                f"until t={since + config.scale_down_delay_s:.0f}s", **fields))
                continue
            p = max(most, p)
        asked.pop(step.step_id, None)
        changed |= p != step.parallelism
        out.append(_rescale(step, p, f"{why} (a step left [{lo:.0%}, {hi:.0%}])", **fields))
    return Evaluation(tuple(out), FlinkMemory(now if changed else memory.last_change_s, asked))


def _flink_size(step: StepSample, target: float, config: FlinkConfig) -> tuple[int, float | None]:
    if step.busy_max <= 0:
        return step.parallelism, None
    capacity = step.input_rate / step.busy_max
    if capacity <= 0:
        return step.parallelism, None
    hi = min(step.max_parallelism, config.max_parallelism or step.max_parallelism)
    p = min(hi, max(1, math.ceil(step.parallelism * target
                                 / (capacity * config.target_utilisation) - 1e-9)))
    if config.align_to_key_groups and step.key_group_owner is not None:
        groups = len(step.key_group_owner)
        p = next((q for q in range(p, groups // 2 + 1) if groups % q == 0), p)
    return p, target / capacity


@dataclass(frozen=True)
class RayConfig:
    up_above: float = 1.75
    down_below: float = 0.5
    min_parallelism: int = 1
    max_parallelism: int | None = None


def ray_style(snapshot: MetricsSnapshot, config: RayConfig = RayConfig(),
              memory: None = None) -> Evaluation:
    """One task more or less per decision, by in-flight work per task."""
    out = _sources_hold(snapshot, "ray")
    for step in _scalable(snapshot):
        util = sum(t.useful_fraction + (t.queued_rows / t.true_rate if t.true_rate else
                                        (math.inf if t.queued_rows else 0.0))
                   for t in step.tasks) / max(1, len(step.tasks))
        hi = min(step.max_parallelism, config.max_parallelism or step.max_parallelism)
        p = step.parallelism
        if util > config.up_above and p < hi:
            p += 1
        elif util < config.down_below and p > config.min_parallelism:
            p -= 1
        out.append(_rescale(step, p, f"in-flight work per task {util:.2f} against "
                            f"[{config.down_below}, {config.up_above}]", policy="ray",
                            inputs={"utilisation": util}))
    return Evaluation(tuple(out))
