"""The skew policy: move key groups between a step's tasks before adding tasks.

A step is imbalanced when ``(max - min) / max`` of its tasks' key-group loads (rows per
second) reaches ``threshold`` (Elasticutor's rule, 0.2). Then, greedily and with as few
moves as it can: take the most loaded task and the least loaded one; move the largest key
group that fits (at most half their gap, so the receiver does not end above the giver),
else the one that overshoots least (still under the gap, so the pair's maximum falls); of
equal loads, the one with less state (fewer bytes to migrate). Repeat until under the
threshold, or until the most loaded task is within the threshold of the largest key group
(no task can get lighter than that), or until it has nothing that fits; a group moves at
most once per decision. Only the most loaded task gives: a move that only lifts the least
loaded one would not raise the step's throughput, which the most loaded task bounds.

A key group hotter than one task can serve (its rows above ``hot_group_utilisation`` of
its owner's true rate) is **reported**, not scaled: more tasks cannot split a group. It is
pinned where it is, and the other groups move around it.

>>> from rheostat.policy.snapshot import MetricsSnapshot, StepSample, TaskSample
>>> a = TaskSample("agg#0", 900.0, 900.0, 0.9, key_group_rows={0: 500.0, 1: 300.0, 2: 100.0})
>>> b = TaskSample("agg#1", 100.0, 100.0, 0.1, key_group_rows={3: 100.0})
>>> step = StepSample("agg", 2, (a, b), inputs=("src",), key_group_owner=(0, 0, 0, 1))
>>> d = decide(MetricsSnapshot(1.0, 1.0, {"agg": step})).of("agg")
>>> d.action, dict(d.moves)
('move', {1: 1})
>>> print(d.reason)  # doctest: +NORMALIZE_WHITESPACE
imbalance 89% >= 20%: move 1 key group (300 rows/s, 0 state bytes) from the most loaded
tasks; imbalance after 33% (the most loaded task is within 20% of the largest key group,
500 rows/s, and cannot get much lighter)
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rheostat.policy.decision import Decision, Evaluation, none
from rheostat.policy.snapshot import MetricsSnapshot, StepSample


@dataclass(frozen=True)
class SkewConfig:
    threshold: float = 0.2
    hot_group_utilisation: float = 0.9
    max_moves: int | None = None


def imbalance(loads: Sequence[float]) -> float:
    """``(max - min) / max`` (0.0 when nothing is loaded).

    >>> imbalance([10.0, 8.0, 5.0])
    0.5
    """
    top = max(loads, default=0.0)
    return (top - min(loads)) / top if top > 0 else 0.0


def plan_moves(groups: Sequence[Mapping[int, float]], threshold: float,
               state_bytes: Mapping[int, int] | None = None, pinned: frozenset[int] = frozenset(),
               max_moves: int | None = None) -> dict[int, int]:
    """Key group -> new owner index that brings ``imbalance`` under ``threshold``.

    ``groups[i]`` maps the key groups task ``i`` owns to their rows per second.

    >>> plan_moves([{0: 4.0, 1: 4.0, 2: 4.0}, {}], threshold=0.2)
    {0: 1}
    """
    sizes = state_bytes or {}
    # each task's movable groups as (rows/s, -state bytes, -group), ascending: the largest
    # group under a bound, of the least state (then lowest id) among equals, sits just left
    # of a bisection
    movable = [sorted((w, -sizes.get(g, 0), -g) for g, w in gs.items()
                      if w > 0 and g not in pinned) for gs in groups]
    load = [sum(gs.values()) for gs in groups]
    floor = max((w for gs in groups for w in gs.values()), default=0.0)  # no task gets lighter
    moves: dict[int, int] = {}
    while (imbalance(load) >= threshold and (max(load) - floor) >= threshold * max(load)
           and (max_moves is None or len(moves) < max_moves)):
        to = min(range(len(load)), key=lambda i: load[i])
        giver = max(range(len(load)), key=lambda i: load[i])
        gap, cands = load[giver] - load[to], movable[giver]
        pick = None
        under = bisect.bisect_right(cands, (gap / 2, math.inf, 0))
        over = bisect.bisect_left(cands, (gap / 2, -math.inf, 0))
        if under:
            pick = under - 1
        elif over < len(cands) and cands[over][0] < gap:  # overshoots least, of least state
            pick = max(k for k in range(over, len(cands)) if cands[k][0] == cands[over][0])
        if pick is None:
            break
        w, _, minus_g = movable[giver].pop(pick)
        g = -minus_g
        load[giver] -= w
        load[to] += w
        moves[g] = to
    return moves


def decide(snapshot: MetricsSnapshot, config: SkewConfig = SkewConfig(),
           memory: None = None) -> Evaluation:
    """A decision per step: "move", "report_hot_key" or "none", each with its reason."""
    return Evaluation(tuple(_decide_step(snapshot.steps[s], config)
                            for s in snapshot.topological()))


def _decide_step(step: StepSample, config: SkewConfig) -> Decision:
    p = step.parallelism
    if not any(t.key_group_rows for t in step.tasks):
        return none(step.step_id, p, "no key-group rows counted (not keyed, or idle)",
                    policy="skew")
    groups = [t.key_group_rows or {} for t in step.tasks]
    sizes = {g: b for t in step.tasks for g, b in (t.state_bytes_per_group or {}).items()}
    load = [sum(g.values()) for g in groups]
    mean_rate = step.true_rate_per_task
    hot: dict[int, float] = {}
    for t, gs in zip(step.tasks, groups):
        bound = config.hot_group_utilisation * (t.true_rate or mean_rate or float("inf"))
        hot.update((g, w) for g, w in gs.items() if w > bound)
    moves = plan_moves(groups, config.threshold, sizes, frozenset(hot), config.max_moves)
    after = list(load)
    owner = {g: i for i, gs in enumerate(groups) for g in gs}
    for g, to in moves.items():
        w = groups[owner[g]][g]
        after[owner[g]] -= w
        after[to] += w
    before_i, after_i = imbalance(load), imbalance(after)
    inputs = {"imbalance": before_i, "imbalance_after": after_i, "skew_index": step.skew_index,
              "groups_moved": float(len(moves)), "hot_groups": float(len(hot)),
              "state_bytes_moved": float(sum(sizes.get(g, 0) for g in moves)),
              "true_rate_per_task": mean_rate, "busy_max": step.busy_max}
    total = sum(load)
    capacity = mean_rate * total / max(after) if mean_rate and max(after) > 0 else None
    rows = sum(groups[owner[g]][g] for g in moves)
    moved = (f"move {len(moves)} key group{'s' * (len(moves) != 1)} ({rows:.0f} rows/s, "
             f"{inputs['state_bytes_moved']:.0f} state bytes) from the most loaded tasks; "
             f"imbalance after {after_i:.0%}")
    floor = max(step.group_loads.values())
    if after_i >= config.threshold and max(after) - floor < config.threshold * max(after):
        moved += (f" (the most loaded task is within {config.threshold:.0%} of the largest key "
                  f"group, {floor:.0f} rows/s, and cannot get much lighter)")
    fields = {"moves": moves, "predicted_capacity_per_s": capacity, "policy": "skew",
              "inputs": inputs}
    if hot:
        g, w = max(hot.items(), key=lambda kv: kv[1])
        why = (f"key group {g} carries {w:.0f} rows/s, more than "
               f"{config.hot_group_utilisation:.0%} of what one task serves "
               f"({(step.tasks[owner[g]].true_rate or mean_rate or 0):.0f} rows/s): more tasks "
               f"cannot split it, so it is reported, not scaled")
        return Decision(step.step_id, "report_hot_key", p, p,
                        f"{why}; {moved}" if moves else why, **fields)  # type: ignore[arg-type]
    if before_i < config.threshold:
        return none(step.step_id, p, f"imbalance {before_i:.0%} is under {config.threshold:.0%}",
                    **fields)
    if not moves:
        return none(step.step_id, p, f"imbalance {before_i:.0%} >= {config.threshold:.0%}, but "
                    "no key group move lowers it (one group dominates its task)", **fields)
    return Decision(step.step_id, "move", p, p,
                    f"imbalance {before_i:.0%} >= {config.threshold:.0%}: {moved}",
                    **fields)  # type: ignore[arg-type]
