"""One task's part in a live reconfiguration, as a pure state machine.

:class:`Handover` is told what arrives at its task (a reconfiguration's command, a marker
or an end of stream on an input, state handed here) and answers with *actions* for the
task to carry out: hand key groups or splits over, replay what waited, take state over,
release held rows, retire, report the part done. It calls nothing back, holds no channel,
operator or process, and treats rows and messages as opaque values, so a test drives it by
hand. :class:`~rheostat.runtime.task.Task` is its shell: it does the I/O and feeds the
outcomes back. The protocol is told in ``docs/architecture.md`` ("Live reconfiguration").

The task carries out each list of actions in order, and an action may feed the machine
again (a replayed watermark may be held back; :class:`Install` hands early state back
through :meth:`Handover.state_arrived`), so the machine settles its own state before it
answers.

>>> h = Handover()
>>> h.command(Part(7, index=0, aligns=True, losing={"agg": {1: (3, 5)}}), 2, ended=())
[]
>>> h.on_marker(7, 0)
[]
>>> h.on_marker(7, 1)
[HandOverGroups(reconfig_id=7, step='agg', to_index=1, groups=(3, 5))]
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rheostat.plan.ids import TaskId
from rheostat.plan.physical import PhysicalPlan
from rheostat.plan.reconfig import ReconfigSpec


@dataclass(frozen=True)
class Part:
    """What reconfiguration ``reconfig_id`` asks of task ``index`` (read off its spec by
    :func:`part_of`)."""

    reconfig_id: int
    index: int
    #: It waits for the marker on each of its old inputs before it hands anything over.
    aligns: bool = False
    retiring: bool = False
    #: This instance leaves: a new instance of the same task runs elsewhere, with the
    #: state of all its key groups and its sinks' open transactions.
    leaving: bool = False
    losing: Mapping[str, Mapping[int, Sequence[int]]] = field(default_factory=dict)
    losing_splits: Mapping[int, Sequence[int]] = field(default_factory=dict)  # new task
    gaining: Mapping[str, Mapping[int, Sequence[int]]] = field(default_factory=dict)  # old
    gaining_splits: Mapping[int, Sequence[int]] = field(default_factory=dict)  # old task
    source_step: str | None = None  # the head of a source task (its splits' step)
    #: Steps whose open transaction comes here (the new instance of a task that moved).
    transactions: Sequence[str] = ()
    #: Inputs from a source whose splits move: their watermarks start again once every
    #: marker is in (the source tasks restate theirs, which a split that moved may lower).
    restart: Collection[int] = frozenset()
    reports: bool = False  # it reports its part done (a leaving instance does not)


# --- actions: what the task carries out -----------------------------------------------


@dataclass(frozen=True)
class ExpectSplits:
    """A source task: these splits come here; read them only once their state is in."""

    splits: tuple[int, ...]


@dataclass(frozen=True)
class HandOverGroups:
    """Snapshot key groups ``groups`` of ``step``, drop them and send the state to task
    ``to_index`` of the chain."""

    reconfig_id: int
    step: str
    to_index: int
    groups: tuple[int, ...]


@dataclass(frozen=True)
class HandOverSplits:
    """A source task: stop reading ``splits``; send their states to task ``to_index``."""

    reconfig_id: int
    to_index: int
    splits: tuple[int, ...]


@dataclass(frozen=True)
class HandOverTransactions:
    """A leaving instance: hand each sink's open transaction to the task's new instance."""

    reconfig_id: int


@dataclass(frozen=True)
class Retire:
    """End like a finished task (once the outputs' new wiring is in); a leaving instance
    puts a marker first, so a consumer that has not had the command waits for it."""

    reconfig_id: int
    leaving: bool


@dataclass(frozen=True)
class RestartWatermarks:
    """Forget these inputs' watermarks: their senders state them again."""

    channels: tuple[int, ...]


@dataclass(frozen=True)
class Replay:
    """Deliver the watermarks and ends that waited behind their channel's marker, in
    this order: ``(channel, message)``."""

    messages: tuple[tuple[int, Any], ...]


@dataclass(frozen=True)
class Install:
    """State that arrived while markers were aligning, ``(step, from_task, state)`` in
    arrival order: give each back to :meth:`Handover.state_arrived` now that what waited
    has been replayed (the last one completes the part)."""

    states: tuple[tuple[str, str, Any], ...]


@dataclass(frozen=True)
class TakeOver:
    """Install ``state`` (key groups of ``step``, or a source's splits) from ``from_task``."""

    step: str
    from_task: str
    state: Any


@dataclass(frozen=True)
class Release:
    """Every state is in: process the held rows ``(rows, channel)`` in arrival order,
    then advance to the held watermark, then end, if the inputs ended meanwhile."""

    rows: tuple[tuple[Any, int], ...]
    watermark: int | None
    end: bool


@dataclass(frozen=True)
class Report:
    """This task's part in ``reconfig_id`` is done."""

    reconfig_id: int


Action = (ExpectSplits | HandOverGroups | HandOverSplits | HandOverTransactions | Retire
          | RestartWatermarks | Replay | Install | TakeOver | Release | Report)


@dataclass
class _Switch:
    """A reconfiguration whose markers the task is still aligning."""

    part: Part
    waiting: set[int]  # old inputs whose marker has not arrived
    marked: set[int]  # old inputs whose marker has arrived
    ended: set[int]  # inputs that ended
    deferred: dict[int, list[Any]] = field(default_factory=dict)  # marked inputs' watermarks, ends
    arrived: list[tuple[str, str, Any]] = field(default_factory=list)  # state handed here


class Handover:
    """The reconfiguration state of one task (see the module's docstring)."""

    def __init__(self) -> None:
        self.known = 0  # the newest reconfiguration whose command arrived
        self._early: dict[int, set[int]] = {}  # markers of reconfigurations not yet known
        self._switch: _Switch | None = None
        self._report: int | None = None  # reconfiguration to report once done
        self._awaiting: set[tuple[str, int]] = set()  # (step, old owner) states to install
        #: Key groups whose state has not arrived; their rows wait (:meth:`hold`).
        self.pending: np.ndarray | None = None
        self._held: list[tuple[Any, int]] = []  # (rows, channel), in arrival order
        self._held_watermark: int | None = None
        self._end_held = False
        self.leaving = False  # a new instance of this task runs elsewhere

    # --- what arrives -----------------------------------------------------------------

    def command(self, part: Part, inputs: int = 0, ended: Collection[int] = ()) -> list[Action]:
        """The task's part in a reconfiguration: ``inputs`` is how many inputs it had
        before the change, ``ended`` those that ended. A task the change creates joins
        with a part that only gains."""
        r = part.reconfig_id
        self.known = r
        early = self._early.pop(r, set())
        self.leaving = self.leaving or part.leaving
        actions: list[Action] = []
        if part.aligns:
            old = set(range(inputs))
            self._switch = _Switch(part, waiting=old - set(ended) - early,
                                   marked=early & old, ended=set(ended))
        actions += self._expect(part)
        if part.reports:
            self._report = r
        if part.aligns and self._switch is not None and not self._switch.waiting:
            actions += self._hand_over()
        if not part.leaving:
            actions += self._maybe_report()
        return actions

    def on_marker(self, reconfig_id: int, channel: int) -> list[Action]:
        if reconfig_id > self.known:
            # Its command has not reached this task yet: the input waits until it does.
            self._early.setdefault(reconfig_id, set()).add(channel)
        elif self._switch is not None and self._switch.part.reconfig_id == reconfig_id:
            return self._marked(channel)
        return []

    def on_end(self, channel: int) -> list[Action]:
        """Input ``channel`` ended (an end it did not defer): that counts as its marker."""
        if self._switch is None:
            return []
        self._switch.ended.add(channel)
        return self._marked(channel)

    def defer(self, channel: int, message: Any) -> bool:
        """After its marker, a channel's watermarks (and its end, a watermark at infinity)
        speak for rows routed by the new plan: they wait until this task has handed its
        leaving key groups over, so none of their windows fires early. True if it waits."""
        sw = self._switch
        if sw is None or channel not in sw.marked:
            return False
        sw.deferred.setdefault(channel, []).append(message)
        return True

    def state_arrived(self, step: str, from_task: str, state: Any) -> list[Action]:
        """State of key groups (or splits, or a transaction) this task gains.

        A task still aligning markers keeps it until its own old inputs are drained: the
        state may carry a watermark past rows of its other key groups still queued here.
        """
        if self._switch is not None:
            self._switch.arrived.append((step, from_task, state))
            return []
        actions: list[Action] = [TakeOver(step, from_task, state)]
        self._awaiting.discard((step, TaskId(from_task).index))
        if self._awaiting:
            return actions
        rows, self._held, self.pending = tuple(self._held), [], None
        watermark, self._held_watermark = self._held_watermark, None
        end, self._end_held = self._end_held, False
        if rows or watermark is not None or end:
            actions.append(Release(rows, watermark, end))
        return actions + self._maybe_report()

    # --- what waits for state on its way here -----------------------------------------

    def hold(self, rows: Any, channel: int) -> None:
        """Rows of pending key groups (the task picks them out) wait for their state."""
        assert self.pending is not None, "rows wait only for state on its way"
        self._held.append((rows, channel))

    def hold_watermark(self, value: int) -> bool:
        """True if the task's watermark must wait (held rows must not turn late)."""
        if self.pending is None:
            return False
        self._held_watermark = value
        return True

    def hold_end(self) -> bool:
        """True if the end of the task's inputs must wait for state on its way."""
        if self.pending is None:
            return False
        self._end_held = True
        return True

    @property
    def early_inputs(self) -> Collection[int]:
        """Inputs that delivered the marker of a reconfiguration whose command has not
        come: the task reads them no further until it does."""
        return set().union(*self._early.values()) if self._early else ()

    @property
    def aligning(self) -> bool:
        return self._switch is not None

    def validate(self) -> None:
        """The machine's invariants (tests check them after each step)."""
        sw = self._switch
        if sw is not None:
            assert not sw.waiting & sw.marked, (sw.waiting, sw.marked)
            assert not sw.waiting & sw.ended, (sw.waiting, sw.ended)
            assert set(sw.deferred) <= sw.marked, (sw.deferred, sw.marked)
        if self.pending is None:
            assert not self._held and self._held_watermark is None and not self._end_held
        else:
            assert self._awaiting, "key groups pending with no state awaited"

    # --- transitions ------------------------------------------------------------------

    def _expect(self, part: Part) -> list[Action]:
        self._awaiting.update((sid, part.index) for sid in part.transactions)
        actions: list[Action] = []
        for old, splits in part.gaining_splits.items():
            assert part.source_step is not None, "splits move between source tasks"
            self._awaiting.add((part.source_step, old))
            actions.append(ExpectSplits(tuple(splits)))
        groups: list[int] = []
        for sid, by_old in part.gaining.items():
            for old, gained in by_old.items():
                self._awaiting.add((sid, old))
                groups += gained
        if groups:
            self.pending = np.asarray(sorted(groups), dtype=np.int64)
        return actions

    def _marked(self, channel: int) -> list[Action]:
        sw = self._switch
        if sw is None or channel not in sw.waiting:
            return []
        sw.waiting.discard(channel)
        sw.marked.add(channel)
        return [] if sw.waiting else self._hand_over()

    def _hand_over(self) -> list[Action]:
        """Every old input has delivered the marker: no row of a key group this task
        loses can still arrive, so their state goes to the new owners. A source task
        stops reading the splits it loses and hands their positions over."""
        sw, self._switch = self._switch, None
        assert sw is not None
        part, r = sw.part, sw.part.reconfig_id
        actions: list[Action] = [HandOverSplits(r, owner, tuple(splits))
                                 for owner, splits in sorted(part.losing_splits.items())]
        for sid, by_owner in part.losing.items():
            actions += [HandOverGroups(r, sid, owner, tuple(groups))
                        for owner, groups in sorted(by_owner.items())]
        if part.leaving:
            actions.append(HandOverTransactions(r))
        if part.retiring:
            actions.append(Retire(r, part.leaving))
            return actions + self._maybe_report()
        if restart := tuple(sorted(set(part.restart) - sw.ended)):
            actions.append(RestartWatermarks(restart))
        if deferred := tuple((c, m) for c, ms in sorted(sw.deferred.items()) for m in ms):
            actions.append(Replay(deferred))
        if sw.arrived:  # installed in turn (the last one reports)
            return [*actions, Install(tuple(sw.arrived))]
        return actions + self._maybe_report()

    def _maybe_report(self) -> list[Action]:
        if self._report is not None and self._switch is None and not self._awaiting:
            r, self._report = self._report, None
            return [Report(r)]
        return []


def part_of(
    spec: ReconfigSpec, plan: PhysicalPlan, task_id: str, *, steps: Collection[str],
    source_step: str | None, input_chains: Sequence[str] = (),
    transactions: Sequence[str] = (), joining: bool = False,
) -> Part:
    """Task ``task_id``'s part in ``spec`` (``plan`` is the plan after it): ``steps`` are
    the steps it runs operators for, ``source_step`` its source, ``input_chains`` the chain
    each of its inputs (before the change) comes from, ``transactions`` its sinks' steps.
    ``joining``: the change creates this task (or its new instance)."""
    chain_id, index = TaskId(task_id).chain, TaskId(task_id).index
    r, relocated = spec.reconfig_id, task_id in spec.relocated
    losing = {sid: spec.losing(sid, index) for sid in spec.moves if sid in steps}
    losing_splits = spec.losing_splits(source_step, index) if source_step else {}
    if relocated and not joining:
        return Part(r, index, aligns=True, retiring=True, leaving=True, losing=losing,
                    losing_splits=losing_splits)
    gaining = {sid: spec.gaining(sid, index) for sid in spec.moves if sid in steps}
    gaining_splits = spec.gaining_splits(source_step, index) if source_step else {}
    if joining:
        return Part(r, index, gaining=gaining, gaining_splits=gaining_splits,
                    source_step=source_step, reports=True,
                    transactions=tuple(transactions) if relocated else ())
    if chain_id not in spec.affected_chains:
        return Part(r, index, reports=any(s in steps for s in spec.updated_steps))
    moving = {plan.chain_of(sid).chain_id for sid in spec.split_moves}
    return Part(r, index, aligns=True, retiring=task_id in spec.removed, losing=losing,
                losing_splits=losing_splits, gaining=gaining, gaining_splits=gaining_splits,
                source_step=source_step, reports=True,
                restart=frozenset(i for i, c in enumerate(input_chains) if c in moving))
