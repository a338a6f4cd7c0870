"""The closed loop's rules: which policy decisions to carry out, and when.

The policies (:mod:`rheostat.policy`) are pure functions of one metrics snapshot; they
say what each step needs and why. :class:`Autoscaler` adds what only the loop can know —
time and what is already happening — and turns an evaluation into the operations of one
reconfiguration request:

- **Skew before size.** The skew policy runs first; a step that gets key-group moves
  this round keeps its parallelism this round (moving may be all it needed), and a key
  group hotter than one task is reported, never scaled for.
- **Stabilisation.** After a step changed, it is left alone for ``cooldown_s`` (its
  new rates must be measured first). A scale-up is carried out at once; a scale-down
  only once every evaluation for ``scale_down_after_s`` wanted one (a dip is not a drop).
- **People first.** While a reconfiguration is queued or running — a person's or the
  loop's own — the loop still evaluates and records, but carries out nothing: it never
  races a request, and folds nothing into it. The next evaluation sees the new shape.

Every evaluation is a list of :class:`Verdict` rows, "none" included: the decision, and
what the loop did with it (``done``: "carried out", or "held: <why>").

>>> from rheostat.policy.snapshot import MetricsSnapshot, StepSample, TaskSample
>>> src = StepSample("src", 1, (TaskSample("src#0", 2000.0, 2000.0, 0.1),),
...                  is_source=True, source_rate_per_s=4000.0)
>>> work = StepSample("work", 2, tuple(TaskSample(f"work#{i}", 1000.0, 1000.0, 1.0)
...                                    for i in range(2)), inputs=("src",))
>>> scaler = Autoscaler(Autoscale())
>>> verdicts, ops = scaler.evaluate(MetricsSnapshot(10.0, 1.0, {"src": src, "work": work}),
...                                 now=10.0, busy=False)
>>> ops
[Rescale(step='work', parallelism=5)]
>>> [(v.decision.step_id, v.done) for v in verdicts if v.decision.policy == "rate"]
[('src', 'nothing to do'), ('work', 'carried out')]
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from rheostat.plan.reconfig import MoveKeyGroups, Operation, Rescale
from rheostat.policy import rate, skew
from rheostat.policy.decision import Decision
from rheostat.policy.rate import RateConfig, RateMemory
from rheostat.policy.skew import SkewConfig
from rheostat.policy.snapshot import MetricsSnapshot


@dataclass(frozen=True)
class Autoscale:
    """Turns the closed loop on: ``rs.run(flow, autoscale=rs.Autoscale(...))`` (or
    ``autoscale=True`` for these defaults).

    ``interval_s``: seconds between evaluations; ``window_s``: the metrics window each
    evaluation reads; ``cooldown_s``, ``scale_down_after_s``: the stabilisation rules
    (module docstring); ``rate``, ``skew``: the policies' own settings (limits per step
    and a core budget are in ``rate``); ``move_key_groups``: run the skew policy.
    """

    interval_s: float = 2.0
    window_s: float = 2.0
    cooldown_s: float = 4.0
    scale_down_after_s: float = 10.0
    rate: RateConfig = field(default_factory=RateConfig)
    skew: SkewConfig = field(default_factory=SkewConfig)
    move_key_groups: bool = True

    def __post_init__(self) -> None:
        for name in ("interval_s", "window_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Autoscale.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("cooldown_s", "scale_down_after_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"Autoscale.{name} must be >= 0, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class Verdict:
    """One decision of one evaluation and what the loop did with it.

    ``follows``: the time of this step's last carried-out change, when this is the first
    evaluation at least ``cooldown_s`` after it; ``observed_capacity_per_s`` is then what
    the step measured since (the follow-up of that change's predicted capacity).
    """

    time_s: float
    decision: Decision
    done: str
    follows: float | None = None
    observed_capacity_per_s: float | None = None


class Autoscaler:
    """The loop's state between evaluations: the rate policy's memory, when each step
    last changed, and since when each step has wanted to scale down."""

    def __init__(self, config: Autoscale) -> None:
        self.config = config
        self.memory = RateMemory()
        self.changed_at: dict[str, float] = {}
        self.down_since: dict[str, float] = {}
        self.unchecked: dict[str, float] = {}  # step -> a change not followed up yet
        self.last_evaluation: float | None = None

    def due(self, now: float) -> bool:
        """Whether an evaluation is due at ``now`` (the first one interval in)."""
        if self.last_evaluation is None:
            self.last_evaluation = now
            return False
        return now - self.last_evaluation >= self.config.interval_s

    def evaluate(
        self, snapshot: MetricsSnapshot, now: float, busy: bool
    ) -> tuple[list[Verdict], list[Operation]]:
        """The verdicts of one evaluation at ``now`` and the operations to request
        (one request; empty when nothing is carried out). ``busy``: a reconfiguration
        is queued or running."""
        self.last_evaluation = now
        verdicts: list[Verdict] = []
        ops: list[Operation] = []
        moved: set[str] = set()
        if self.config.move_key_groups:
            for d in skew.decide(snapshot, self.config.skew).decisions:
                done = self._rule(d, now, busy, moved)
                if done == "carried out":
                    moved.add(d.step_id)
                    ops += _moves(d)
                verdicts.append(Verdict(now, d, done))
        evaluation = rate.decide(snapshot, self.config.rate, self.memory)
        self.memory = evaluation.memory
        for d in evaluation.decisions:
            done = self._rule(d, now, busy, moved)
            if done == "carried out":
                ops.append(Rescale(d.step_id, d.target_parallelism))
            follows, observed = self._follow_up(d.step_id, snapshot, now)
            verdicts.append(Verdict(now, d, done, follows, observed))
        for op in ops:
            self.changed_at[op.step] = now
            self.unchecked[op.step] = now
            self.down_since.pop(op.step, None)
        return verdicts, ops

    def _follow_up(self, step_id: str, snapshot: MetricsSnapshot, now: float
                   ) -> tuple[float | None, float | None]:
        """The change of ``step_id`` this evaluation follows up, and the capacity seen."""
        since = self.unchecked.get(step_id)
        step = snapshot.steps.get(step_id)
        if since is None or step is None or now - since < self.config.cooldown_s:
            return None, None
        del self.unchecked[step_id]
        return since, step.capacity

    def _rule(self, d: Decision, now: float, busy: bool, moved: set[str]) -> str:
        """What the loop does with ``d``: "carried out", or why not."""
        down = d.action == "rescale" and d.target_parallelism < d.parallelism
        if not down and d.policy == "rate":
            self.down_since.pop(d.step_id, None)
        if not d.changes:
            return "nothing to do"
        if busy:
            return "held: a reconfiguration is queued or running"
        if d.step_id in moved:
            return "held: its key groups move this round; the next evaluation sizes it"
        last = self.changed_at.get(d.step_id)
        if last is not None and now - last < self.config.cooldown_s:
            return f"held: it changed {now - last:.1f} s ago (cooldown {self.config.cooldown_s} s)"
        if down:
            since = self.down_since.setdefault(d.step_id, now)
            if now - since < self.config.scale_down_after_s:
                return (f"held: a scale-down is carried out once wanted for "
                        f"{self.config.scale_down_after_s} s ({now - since:.1f} s so far)")
        return "carried out"


def _moves(d: Decision) -> list[Operation]:
    """``d``'s key-group moves as one operation per new owner."""
    by_owner: dict[int, list[int]] = defaultdict(list)
    for group, owner in sorted(d.moves.items()):
        by_owner[owner].append(group)
    return [MoveKeyGroups(d.step_id, tuple(groups), owner)
            for owner, groups in sorted(by_owner.items())]
