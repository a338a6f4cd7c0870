"""A task's part in live reconfiguration (see ``docs/architecture.md``).

:class:`LiveReconfiguration` is mixed into :class:`~rheostat.runtime.task.Task`: it
rewires the task's outputs at a reconfiguration's marker, aligns the markers on its old
inputs, hands over the state of the key groups it loses, installs the state of those it
gains (holding their rows back until then), and checks or swaps a step's function. A
source task hands the splits it loses to their new task (their positions and watermark
state travel like key-group state) and reads the splits it gains from where they were
left. The plain data the task and this module share (its output edges, its in-chain
successors, a reconfiguration in progress) lives here too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from rheostat.plan.physical import Edge, PhysicalPlan
from rheostat.plan.reconfig import ReconfigSpec
from rheostat.runtime.channels import InputEndpoint, Outbox, OutputEndpoint
from rheostat.runtime.messages import EndOfStream, Marker, Message
from rheostat.runtime.operator import (
    KeyedStateOperator,
    Operator,
    TransactionalOperator,
    build_operator,
)
from rheostat.runtime.reconfig import StateHandoff, TaskReconfigured, UpdateChecked
from rheostat.runtime.routing import Router, make_router

if TYPE_CHECKING:
    from rheostat.plan.physical import Chain
    from rheostat.runtime.source import SourceDriver
    from rheostat.runtime.task import TaskMetrics
    from rheostat.runtime.watermarks import InputWatermarks


@dataclass
class _Edge:
    edge: Edge
    router: Router
    outboxes: dict[int, Outbox]  # downstream task index -> outbox


@dataclass
class _Switch:
    """This task's part in a reconfiguration whose markers it is still aligning."""

    reconfig_id: int
    waiting: set[int]  # inputs whose marker has not arrived
    losing: dict[str, dict[int, list[int]]]  # step -> new owner index -> key groups
    retiring: bool
    losing_splits: dict[int, list[int]] = field(default_factory=dict)  # new owner -> splits
    #: Inputs from a source whose splits move: their watermarks start again once every
    #: marker is in (the source tasks restate theirs, which a split that moved may lower).
    restart: set[int] = field(default_factory=set)
    marked: set[int] = field(default_factory=set)  # inputs whose marker has arrived
    deferred: dict[int, list[Message]] = field(default_factory=dict)  # their watermarks, ends
    arrived: list[tuple[str, str, Any]] = field(default_factory=list)  # state handed here


@dataclass
class _Next:
    op: Operator
    input_index: int


class LiveReconfiguration:
    """The reconfiguration half of a task (state it uses is set up by ``Task``)."""

    task_id: str
    plan: PhysicalPlan
    chain: Chain
    index: int
    finished: bool
    metrics: TaskMetrics
    ops: dict[str, Operator]
    inputs: list[tuple[InputEndpoint, int]]
    source: SourceDriver | None
    _input_chains: list[str]  # the chain each input comes from
    input_watermarks: InputWatermarks
    outboxes: list[Outbox]
    handoffs: list[StateHandoff]
    reconfigured: list[TaskReconfigured | UpdateChecked]
    _edges: list[_Edge]
    _targets: dict[tuple[str, str], list[_Edge | _Next]]
    _input_keys: list[tuple[str, ...] | None]
    _ended_inputs: set[int]
    _known_reconfig: int
    _early: dict[int, set[int]]
    _switch: _Switch | None
    _report: int | None
    _awaiting: set[tuple[str, int]]
    _pending: np.ndarray | None
    _held: list[tuple[pa.RecordBatch, int]]
    _held_watermark: int | None
    _end_deferred: bool
    _ops_ended: bool
    _retired: bool
    _relocated_away: bool
    _draining: list[Outbox]
    _rewire_at_end: tuple[PhysicalPlan, ReconfigSpec, dict[int, OutputEndpoint]] | None

    # Provided by Task.
    def _call(self, op: Operator, hook: str, *args: Any) -> None: ...
    def _to_head(self, batch: pa.RecordBatch, channel: int) -> None: ...
    def _advance_watermark(self, value: int) -> None: ...
    def _end_ops(self) -> None: ...
    def _on_message(self, message: Message, channel: int | None) -> None: ...

    def reconfigure(
        self, plan: PhysicalPlan, spec: ReconfigSpec,
        inputs: dict[int, InputEndpoint], outputs: dict[int, OutputEndpoint],
    ) -> None:
        """Take part in reconfiguration ``spec`` (the plan after it is ``plan``).

        Called between messages. Outputs into a changed step get a marker on each old
        channel and then route by the new plan; new input channels join the inputs; a
        swapped function takes over now; and a task of a changed keyed step starts
        waiting for markers on its old inputs, holding back rows of the key groups it
        gains until their state arrives.
        """
        r = spec.reconfig_id
        self._known_reconfig = r
        early = self._early.pop(r, set())
        old_inputs = len(self.inputs)
        if self.task_id in spec.relocated:  # this instance leaves; a new one takes over
            self._relocated_away = True
            losing = {sid: spec.losing(sid, self.index) for sid in spec.moves
                      if sid in self.ops}
            self._switch = _Switch(r, set(range(old_inputs)) - self._ended_inputs - early,
                                   losing, True, self._losing_splits(spec),
                                   marked=early & set(range(old_inputs)))
            if not self._switch.waiting:
                self._hand_over()
            return
        self.plan = plan
        self.chain = plan.chain_of(self.chain.chain_id)
        if self.task_id in spec.removed:
            # The rows still on its inputs were routed here under the old plan: they go
            # on under it too, and its markers follow them when it leaves (_hand_over).
            self._rewire_at_end = (plan, spec, outputs)
        else:
            self._rewire_outputs(plan, spec, outputs)
        for c in sorted(plan.inputs_of(self.task_id), key=lambda c: c.channel_id):
            if c.channel_id in spec.new_channels:
                self.inputs.append((inputs[c.channel_id], c.edge.dst_input))
                self._input_keys.append(_hash_keys(c.edge))
                self._input_chains.append(c.src_task.rsplit("#", 1)[0])
                self.input_watermarks.add_input()
        updated = [s for s in spec.updated_steps if s in self.ops]
        for sid in updated:
            self._swap_operator(sid, plan)
        if self.chain.chain_id in spec.affected_chains:
            waiting = set(range(old_inputs)) - self._ended_inputs - early
            losing = {sid: spec.losing(sid, self.index) for sid in spec.moves
                      if sid in self.ops}
            moving = {plan.chain_of(sid).chain_id for sid in spec.split_moves}
            restart = {i for i in range(old_inputs) if self._input_chains[i] in moving}
            self._switch = _Switch(r, waiting, losing, self.task_id in spec.removed,
                                   self._losing_splits(spec),
                                   marked=early & set(range(old_inputs)), restart=restart)
            if self.source is not None:
                self.source.restate()  # consumers forget this task's watermark now
            self._expect_state(spec)
            self._report = r
            if not waiting:
                self._hand_over()
        elif updated:
            self._report = r
        self._maybe_reconfigured()

    def join_reconfiguration(self, spec: ReconfigSpec) -> None:
        """A task the reconfiguration created: wait for the state of its key groups."""
        self._known_reconfig = spec.reconfig_id
        self._expect_state(spec)
        self._report = spec.reconfig_id
        self._maybe_reconfigured()

    def install_state(self, step_id: str, from_task: str, state: Any) -> None:
        """State of key groups this task gains, handed over by their old owner.

        A task still aligning markers keeps it until its own old inputs are drained: the
        state may carry a watermark past rows of its other key groups still queued here.
        """
        if self._switch is not None:
            self._switch.arrived.append((step_id, from_task, state))
            return
        if self.source is not None and step_id == self.chain.steps[0]:
            self.source.adopt(state)  # splits: read them on from where they were left
        else:
            self._call(self.ops[step_id], "take_over", state)
        self._awaiting.discard((step_id, int(from_task.rsplit("#", 1)[1])))
        if self._awaiting:
            return
        held, self._held, self._pending = self._held, [], None
        for batch, channel in held:  # in the order they arrived
            self._to_head(batch, channel)
        if self._held_watermark is not None:
            value, self._held_watermark = self._held_watermark, None
            self._advance_watermark(value)
        if self._end_deferred:
            self._end_deferred = False
            self._end_ops()
        self._maybe_reconfigured()

    def _expect_state(self, spec: ReconfigSpec) -> None:
        if self.task_id in spec.relocated:  # the new instance of a task that moved here
            self._awaiting.update((sid, self.index) for sid, op in self.ops.items()
                                  if isinstance(op, TransactionalOperator))
        if self.source is not None:
            head = self.chain.steps[0]
            gaining = spec.gaining_splits(head, self.index)
            if gaining and self.source.done and self.task_id not in spec.relocated:
                # It finished after the controller planned this: its end of stream and
                # final state are out, so it cannot read more. Failing restarts the job
                # from its checkpoint with the plan before this change.
                raise RuntimeError(
                    f"source task {self.task_id} had finished reading its splits when "
                    f"reconfiguration {spec.reconfig_id} gave it splits of task(s) "
                    f"{sorted(gaining)}; the job goes back to its last checkpoint")
            for old, splits in gaining.items():
                self._awaiting.add((head, old))
                self.source.expect(splits)
        groups: list[int] = []
        for sid in spec.moves:
            if sid in self.ops:
                for old, gained in spec.gaining(sid, self.index).items():
                    self._awaiting.add((sid, old))
                    groups += gained
        if groups:
            self._pending = np.asarray(sorted(groups), dtype=np.int64)

    def _rewire_outputs(
        self, plan: PhysicalPlan, spec: ReconfigSpec, outputs: dict[int, OutputEndpoint]
    ) -> None:
        mine = plan.outputs_of(self.task_id)
        marker = Marker(spec.reconfig_id)
        for out in self._edges:
            chans = [c for c in mine if c.edge == out.edge]
            into_changed = plan.chain_of(out.edge.dst_step).chain_id in spec.affected_chains
            if not into_changed and not any(c.channel_id in spec.new_channels for c in chans):
                continue
            boxes: dict[int, Outbox] = {}
            for c in chans:
                if c.channel_id in spec.new_channels:
                    boxes[c.dst_index] = Outbox(outputs[c.channel_id])
                    if self._ops_ended:  # its end of stream went out already
                        boxes[c.dst_index].put(EndOfStream())
                else:
                    boxes[c.dst_index] = out.outboxes[c.dst_index]
            for dst, box in out.outboxes.items():
                if into_changed and not self._ops_ended:  # an end of stream counts as one
                    box.put(marker)
                if dst not in boxes or boxes[dst] is not box:
                    self._draining.append(box)
            out.outboxes = boxes
            out.router = make_router(
                out.edge.routing, self.index, plan.parallelism[out.edge.dst_step],
                plan.key_group_owners.get(out.edge.dst_step), plan.max_parallelism,
            )
        self.outboxes = [o for e in self._edges for o in e.outboxes.values()]

    def check_update(self, plan: PhysicalPlan, reconfig_id: int, steps: tuple[str, ...]) -> None:
        """Before a function update: would the new version take this task's state? It is
        built aside and given a copy of the state; nothing here changes."""
        for sid in steps:
            if sid not in self.ops:
                continue
            old = self.ops[sid]
            refusal = None
            try:
                trial = build_operator(plan.steps[sid])
                trial.open(dataclasses.replace(old.ctx, step=plan.steps[sid],
                                               emit_to=lambda batch, port: None))
                old.check_update(trial)
            except Exception as exc:
                refusal = (f"the new function of step {sid!r} does not accept the state of "
                           f"task {self.task_id}: {type(exc).__name__}: {exc}")
            self.reconfigured.append(UpdateChecked(reconfig_id, self.task_id, refusal))

    def _swap_operator(self, step_id: str, plan: PhysicalPlan) -> None:
        """Run the step's new function (or knobs) from here on, with the state it has."""
        old = self.ops[step_id]
        new = build_operator(plan.steps[step_id])
        new.open(dataclasses.replace(old.ctx, step=plan.steps[step_id]))
        self._call(new, "adopt", old)  # checked before the switch (check_update)
        self.ops[step_id] = new
        for targets in self._targets.values():
            for i, t in enumerate(targets):
                if isinstance(t, _Next) and t.op is old:
                    targets[i] = _Next(new, t.input_index)

    def _on_marker(self, reconfig_id: int, channel: int) -> None:
        if reconfig_id > self._known_reconfig:
            # Its command has not reached this task yet: hold the input until it does.
            self._early.setdefault(reconfig_id, set()).add(channel)
        elif self._switch is not None and self._switch.reconfig_id == reconfig_id:
            self._marker_done(channel)

    def _marker_done(self, channel: int) -> None:
        if self._switch is not None and channel in self._switch.waiting:
            self._switch.waiting.discard(channel)
            self._switch.marked.add(channel)
            if not self._switch.waiting:
                self._hand_over()

    def _losing_splits(self, spec: ReconfigSpec) -> dict[int, list[int]]:
        if self.source is None:
            return {}
        return spec.losing_splits(self.chain.steps[0], self.index)

    def _hand_over(self) -> None:
        """Every old input has delivered the marker: no row of a key group this task
        loses can still arrive, so their state goes to the new owners. A source task
        stops reading the splits it loses and hands their positions over."""
        switch = self._switch
        assert switch is not None
        self._switch = None
        for owner, splits in sorted(switch.losing_splits.items()):
            assert self.source is not None
            self.handoffs.append(StateHandoff(
                switch.reconfig_id, self.chain.steps[0], self.task_id,
                self.chain.task_id(owner), self.source.release(splits)))
        for sid, by_owner in switch.losing.items():
            op = self.ops[sid]
            assert isinstance(op, KeyedStateOperator), f"step {sid!r} moves key groups"
            for owner, groups in sorted(by_owner.items()):
                state = op.snapshot_state(groups)
                self.handoffs.append(StateHandoff(
                    switch.reconfig_id, sid, self.task_id, self.chain.task_id(owner), state))
            op.drop_state([g for gs in by_owner.values() for g in gs])
        if self._relocated_away:  # sinks hand their open transaction to the new instance
            for sid, op in self.ops.items():
                if isinstance(op, TransactionalOperator):
                    self.handoffs.append(StateHandoff(
                        switch.reconfig_id, sid, self.task_id, self.task_id,
                        op.hand_over(switch.reconfig_id)))
        if switch.retiring and not self.finished:
            if self._rewire_at_end is not None:
                self._rewire_outputs(*self._rewire_at_end)
                self._rewire_at_end = None
            if not self._ops_ended:
                if self._relocated_away:  # consumers that do not know of it yet wait
                    self._broadcast(Marker(switch.reconfig_id))
                self._end_ops()
                for box in self._draining:  # channels the new plan dropped end too
                    box.put(EndOfStream())
            self._retired = True
        else:
            for channel in switch.restart - self._ended_inputs:
                self.input_watermarks.restart(channel)
            for channel, marks in sorted(switch.deferred.items()):
                for mark in marks:
                    self._on_message(mark, channel)
            for step_id, from_task, state in switch.arrived:
                self.install_state(step_id, from_task, state)
        self._maybe_reconfigured()

    def _maybe_reconfigured(self) -> None:
        """Report this task's part done (a relocated task's new instance reports it)."""
        if self._report is not None and self._switch is None and not self._awaiting:
            self.reconfigured.append(TaskReconfigured(self._report, self.task_id))
            self._report = None


def _hash_keys(edge: Edge) -> tuple[str, ...] | None:
    return edge.routing.keys if edge.routing.kind == "hash" else None
