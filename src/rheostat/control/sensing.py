"""The controller's sensors: a bounded history of task reports, and the snapshot a policy reads.

Tasks report cumulative counters (``TaskMetrics``: rows in and out, useful and blocked
seconds, rows routed per key group) and gauges (rows queued at their inputs, a source's
backlog). :class:`MetricsHistory` keeps each task's recent reports with the times the
controller received them (times are passed in: it reads no clock), bounded by count and
by age. :meth:`MetricsHistory.snapshot` differences the counters over a window into rates
(``policy.snapshot``'s DS2 definitions) and builds one :class:`StepSample` per chain.

Definitions chosen:

- **Window**: the rates of a task span from its last report at or before ``now -
  window_s`` (or, without one, its first report in the window) to its last report at or
  before ``now``: rates are increases / that span, so a report that arrives late does not
  bias them. A task needs two reports over a span longer than zero to have rates.
- **Restarts**: a counter that went down means the task started again (a job restart, a
  moved task's new instance, an index reused after a rescale): its increase across that
  report is the new value, counted from zero (Prometheus's ``increase``).
- **Chains, not steps**: a task runs a chain of fused steps and its useful time is spent
  on all of them; its counters cannot be split between the steps. A chain also rescales as
  one (``Rescale(step)`` rescales the steps fused with it). So the snapshot has one
  :class:`StepSample` per chain, under the chain's *head* step id (the step a policy
  rescales): its rows in are the head's, its rows out what leaves the chain, its inputs the
  head steps of the chains that feed it, its key-group owner table the head's.
- **Key-group loads** are counted where the routing already hashes them (the router of the
  sending task, one ``bincount`` per batch; the receiver would hash every row again) and
  attributed here to the receiving task that owns each group now (``plan.key_group_owners``).
- **A source's asked rate** is the sum of its tasks' ``paced_rate_per_s`` as last
  reported (a rate schedule changes it over time), else the step's constant ``rate``.
- **Incomplete steps**: a step some of whose tasks have no rates in the window (just added,
  not reported twice yet) is left out of the snapshot, so no policy decides on part of a
  step; ``partial=True`` keeps it with zero samples for those tasks instead.

>>> from rheostat.plan.logical import Input, Port, SinkStep, SourceStep
>>> from rheostat.plan.physical import lower
>>> from rheostat.protocol import TaskMetrics
>>> plan = lower((SourceStep("s", ()), SinkStep("o", (Input(Port("s")),))), parallelism=1)
>>> h = MetricsHistory()
>>> h.add({"s#0": TaskMetrics(rows_in=0)}, at=0.0)
>>> h.add({"s#0": TaskMetrics(rows_in=1000, rows_out=1000, busy_s=0.5)}, at=2.0)
>>> step = h.snapshot(plan, now=2.0, window_s=5.0).steps["s"]
>>> step.input_rate, step.busy_max, step.capacity
(500.0, 0.25, 2000.0)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rheostat.plan.logical import SourceStep
from rheostat.plan.physical import Chain, PhysicalPlan
from rheostat.policy.snapshot import MetricsSnapshot, StepSample, TaskSample
from rheostat.protocol import TaskMetrics

_COUNTERS = ("rows_in", "rows_out", "batches_in", "busy_s", "backpressure_s")


@dataclass(frozen=True)
class Report:
    """One task's metrics as the controller received them at ``at`` (seconds)."""

    at: float
    metrics: TaskMetrics


@dataclass(frozen=True)
class _Rates:
    """One task over a window: increases over ``span_s`` and its last gauges."""

    span_s: float
    increase: dict[str, float]
    key_groups: dict[str, dict[int, int]]  # keyed step -> group -> rows routed in the window
    queued_rows: int
    backlog_rows: int | None
    paced_rate_per_s: float | None = None


class MetricsHistory:
    """The last reports of every task: at most ``max_reports`` each, none older than
    ``keep_s`` before the newest report of any task (a task that stopped reporting is
    forgotten then).

    >>> h = MetricsHistory(max_reports=2)
    >>> for t in range(3):
    ...     h.add({"a#0": TaskMetrics(rows_in=t)}, at=float(t))
    >>> [r.at for r in h.reports("a#0")]
    [1.0, 2.0]
    """

    def __init__(self, keep_s: float = 120.0, max_reports: int = 512) -> None:
        if keep_s <= 0 or max_reports < 2:
            raise ValueError("keep_s must be > 0 and max_reports >= 2 (rates need two reports)")
        self.keep_s = keep_s
        self.max_reports = max_reports
        self._reports: dict[str, deque[Report]] = {}
        self.latest: float | None = None  # the newest report's time

    def add(self, tasks: Mapping[str, TaskMetrics], at: float) -> None:
        """A worker's report of ``tasks``, received at ``at``. A task's report older than
        its last one is ignored (reports of a task come in order)."""
        for task_id, metrics in tasks.items():
            q = self._reports.setdefault(task_id, deque(maxlen=self.max_reports))
            if q and at < q[-1].at:
                continue
            q.append(Report(at, metrics))
        if self.latest is None or at > self.latest:
            self.latest = at
        self._expire()

    def _expire(self) -> None:
        assert self.latest is not None
        horizon = self.latest - self.keep_s
        for task_id in list(self._reports):
            q = self._reports[task_id]
            # Keep one report at or before the horizon: the baseline of the longest window.
            while len(q) > 1 and q[1].at <= horizon:
                q.popleft()
            if q[-1].at < horizon:
                del self._reports[task_id]

    @property
    def task_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._reports))

    def reports(self, task_id: str) -> tuple[Report, ...]:
        return tuple(self._reports.get(task_id, ()))

    # --- the snapshot -----------------------------------------------------------------

    def rates(self, task_id: str, now: float, window_s: float) -> _Rates | None:
        """``task_id``'s increases over the window ending at ``now``; ``None`` without two
        reports over a span longer than zero."""
        q = self._reports.get(task_id)
        if not q:
            return None
        start = now - window_s
        reports = [r for r in q if r.at <= now]
        base = next((i for i in range(len(reports) - 1, -1, -1) if reports[i].at <= start), 0)
        reports = reports[base:]
        if len(reports) < 2 or reports[-1].at <= reports[0].at:
            return None
        increase = dict.fromkeys(_COUNTERS, 0.0)
        groups: dict[str, dict[int, int]] = {}
        for first, last in _segments([r.metrics for r in reports]):
            for name in _COUNTERS:
                increase[name] += getattr(last, name) - (getattr(first, name) if first else 0)
            for step_id, rows in last.key_group_rows.items():
                before = first.key_group_rows.get(step_id, {}) if first else {}
                acc = groups.setdefault(step_id, {})
                for g, n in rows.items():
                    if (d := n - before.get(g, 0)) > 0:
                        acc[g] = acc.get(g, 0) + d
        m = reports[-1].metrics
        return _Rates(reports[-1].at - reports[0].at, increase, groups, m.queued_rows,
                      m.backlog_rows, m.paced_rate_per_s)

    def snapshot(
        self, plan: PhysicalPlan, now: float, window_s: float, *, partial: bool = False
    ) -> MetricsSnapshot:
        """Every chain of ``plan`` over ``[now - window_s, now]`` (see the module's
        definitions); a chain with a task without rates is left out unless ``partial``."""
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        rates = {t: r for t in self._reports if (r := self.rates(t, now, window_s)) is not None}
        head_of = {sid: c.steps[0] for c in plan.chains for sid in c.steps}
        steps: dict[str, StepSample] = {}
        for chain in plan.chains:
            sample = self._step(plan, chain, rates, head_of, partial)
            if sample is not None:
                steps[sample.step_id] = sample
        return MetricsSnapshot(now, window_s, steps)

    def _step(
        self, plan: PhysicalPlan, chain: Chain, rates: Mapping[str, _Rates],
        head_of: Mapping[str, str], partial: bool,
    ) -> StepSample | None:
        head = chain.steps[0]
        ids = [chain.task_id(i) for i in range(chain.parallelism)]
        if not partial and any(t not in rates for t in ids):
            return None
        owners = plan.key_group_owners.get(head)
        loads = _group_loads(head, owners, chain.parallelism, rates.values())
        tasks = tuple(_task_sample(t, rates.get(t), loads[i] if loads else None)
                      for i, t in enumerate(ids))
        inputs = list(dict.fromkeys(
            head_of[e.src_step] for e in plan.edges
            if e.dst_step in chain.steps and e.src_step not in chain.steps))
        step = plan.steps[head]
        is_source = isinstance(step, SourceStep)
        backlogs = [r.backlog_rows if (r := rates.get(t)) else None for t in ids]
        backlog = (sum(b for b in backlogs if b is not None)
                   if is_source and all(b is not None for b in backlogs) else None)
        return StepSample(
            head, chain.parallelism, tasks, inputs=tuple(inputs), is_source=is_source,
            source_rate_per_s=_asked_rate(step, [rates.get(t) for t in ids]),
            backlog_rows=backlog, max_parallelism=plan.max_parallelism,
            key_group_owner=owners)


def _asked_rate(step: object, rates: list[_Rates | None]) -> float | None:
    """What a source step is asked to read per second now: the sum of its tasks' paced
    rates as they last reported them (a schedule moves it), else its constant ``rate``;
    ``None`` for an unpaced source or any other step."""
    if not isinstance(step, SourceStep) or step.rate is None:
        return None
    paced = [r.paced_rate_per_s if r is not None else None for r in rates]
    if paced and all(p is not None for p in paced):
        return float(sum(paced))  # type: ignore[arg-type]
    return step.rate if isinstance(step.rate, (int, float)) else None


def _segments(
    reports: list[TaskMetrics],
) -> list[tuple[TaskMetrics | None, TaskMetrics]]:
    """The runs of reports between restarts: (first report or ``None`` for zero, last)."""
    out: list[tuple[TaskMetrics | None, TaskMetrics]] = []
    first: TaskMetrics | None = reports[0]
    prev = reports[0]
    for m in reports[1:]:
        if any(getattr(m, c) < getattr(prev, c) for c in _COUNTERS):  # it started again
            out.append((first, prev))
            first = None
        prev = m
    out.append((first, prev))
    return out


def _group_loads(
    step_id: str, owners: tuple[int, ...] | None, parallelism: int, senders: Iterable[_Rates],
) -> list[dict[int, float]] | None:
    """Rows per second of each key group of ``step_id``, per owning task index; ``None``
    when no sender counted the step's groups (not keyed, or nothing reported yet)."""
    if owners is None:
        return None
    per_task: list[dict[int, float]] = [{} for _ in range(parallelism)]
    counted = False
    for r in senders:
        rows = r.key_groups.get(step_id)
        if rows is None:
            continue
        counted = True
        for g, n in rows.items():
            owned = per_task[owners[g]]
            owned[g] = owned.get(g, 0.0) + n / r.span_s
    return per_task if counted else None


def _task_sample(task_id: str, r: _Rates | None, groups: dict[int, float] | None) -> TaskSample:
    if r is None:
        return TaskSample(task_id, 0.0, 0.0, 0.0, key_group_rows=groups)
    inc, span = r.increase, r.span_s
    return TaskSample(
        task_id,
        rows_in_per_s=inc["rows_in"] / span,
        rows_out_per_s=inc["rows_out"] / span,
        useful_fraction=min(1.0, inc["busy_s"] / span),
        blocked_fraction=min(1.0, inc["backpressure_s"] / span),
        queued_rows=r.queued_rows,
        key_group_rows=groups,
    )
