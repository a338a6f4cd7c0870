"""A task: one running instance of a chain of fused steps.

The task owns no thread and no process. Its host (a backend's worker) calls
:meth:`Task.step` repeatedly; each call moves a bounded amount of work and says whether
anything moved. Inside, batches go from operator to operator by direct calls and leave
the chain through routers into outboxes; a task whose outboxes wait for credit takes no
new input, which is how backpressure reaches the sources.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from rheostat.plan.keygroups import groups_of
from rheostat.plan.logical import STATEFUL_KINDS, SourceStep
from rheostat.plan.physical import Channel, PhysicalPlan
from rheostat.plan.reconfig import ReconfigSpec
from rheostat.protocol import TaskId, TaskMetrics
from rheostat.runtime.channels import InputEndpoint, Outbox, OutputEndpoint
from rheostat.runtime.errors import UserFunctionError, describe_batch
from rheostat.runtime.handover import (
    Action,
    ExpectSplits,
    Handover,
    HandOverGroups,
    HandOverSplits,
    HandOverTransactions,
    Install,
    Release,
    Replay,
    Report,
    RestartWatermarks,
    Retire,
    TakeOver,
    part_of,
)
from rheostat.runtime.keys import key_groups
from rheostat.runtime.messages import (
    FINAL_CHECKPOINT,
    Barrier,
    Batch,
    EndOfStream,
    Marker,
    Message,
    Watermark,
)
from rheostat.runtime.operator import (
    KeyedStateOperator,
    Operator,
    OperatorContext,
    TransactionalOperator,
    build_operator,
    keep_key_groups,
)
from rheostat.runtime.reconfig import StateHandoff, TaskReconfigured, UpdateChecked
from rheostat.runtime.routing import HashRouter
from rheostat.runtime.source import SourceDriver, SplitState
from rheostat.runtime.watermarks import InputWatermarks
from rheostat.runtime.wiring import (
    NextOp,
    hash_keys,
    replace_operator,
    rewire_outputs,
    wire_outputs,
)


class StepError(RuntimeError):
    """An operator failed; names the step and what it was handling."""


@dataclass
class TaskSnapshot:
    """What a task contributes to checkpoint ``checkpoint_id``."""

    task_id: str
    checkpoint_id: int
    states: dict[str, Any]  # step id -> operator state, for operators that have one
    sources: dict[int, SplitState] | None  # split id -> its state, for a source task
    watermark: int | None


@dataclass
class TaskRestore:
    """What a task starts from after a restore: the states of the step's old tasks."""

    states: dict[str, list[Any]] = field(default_factory=dict)
    #: The states of the source's splits in the checkpoint (all of them: the task's
    #: source driver keeps those it reads at its parallelism).
    sources: dict[int, SplitState] | None = None
    watermark: int | None = None


class Task:
    def __init__(
        self,
        plan: PhysicalPlan,
        task_id: str,
        inputs: dict[int, InputEndpoint],
        outputs: dict[int, OutputEndpoint],
        send_to_driver: Callable[..., None] = lambda step, batch, key=None: None,
        restore: TaskRestore | None = None,
        checkpointing: bool = False,
    ) -> None:
        tid = TaskId(task_id)
        self.task_id = tid
        self.plan = plan
        self.chain = plan.chain_of(tid.chain)
        self.index = tid.index
        self.metrics = TaskMetrics()
        self.finished = False
        head = plan.steps[self.chain.steps[0]]
        self.source = (
            SourceDriver(head, self.index, self.chain.parallelism,
                         restore.sources if restore else None)
            if isinstance(head, SourceStep) else None
        )
        op_steps = self.chain.steps[1:] if self.source else self.chain.steps
        self.ops = {sid: build_operator(plan.steps[sid]) for sid in op_steps}
        self._targets, self._edges = wire_outputs(
            plan, task_id, self.index, self.ops, self.chain.steps, outputs)
        self.outboxes = [o for e in self._edges for o in e.outboxes.values()]
        # Inputs: (endpoint, head step input index, position in the watermark tracker)
        in_channels: list[Channel] = sorted(
            plan.inputs_of(task_id), key=lambda c: c.channel_id
        )
        self.inputs = [(inputs[c.channel_id], c.edge.dst_input) for c in in_channels]
        self._input_keys = [hash_keys(c.edge) for c in in_channels]
        self._input_chains = [TaskId(c.src_task).chain for c in in_channels]
        self.input_watermarks = InputWatermarks(len(self.inputs))
        self._ended_inputs: set[int] = set()
        self._turn = 0
        self._blocked_since: float | None = None  # when it last became blocked on credit
        self.checkpointing = checkpointing
        self.snapshots: list[TaskSnapshot] = []  # drained by the host
        self._barrier: int | None = None  # the checkpoint being aligned
        self._aligned: set[int] = set()  # inputs that delivered its barrier: held back
        # Hold inputs back only if some step here needs exactly-once (the default).
        self._align = not all(plan.steps[s].at_least_once for s in self.chain.steps)
        # Live reconfiguration: the protocol's state is the handover's; this task carries
        # out its actions (see reconfigure()).
        self.handover = Handover()
        self.handoffs: list[StateHandoff] = []  # drained by the host
        self.reconfigured: list[TaskReconfigured | UpdateChecked] = []  # drained by the host
        self._ops_ended = False
        self._retired = False
        self._draining: list[Outbox] = []  # outboxes to retired tasks, flushing a marker
        self._rewire_at_end: Any = None  # a retiring task's new wiring, for when it leaves
        for sid, op in self.ops.items():
            op.open(OperatorContext(
                step=plan.steps[sid],
                task_index=self.index,
                parallelism=self.chain.parallelism,
                max_parallelism=plan.max_parallelism,
                key_group_owners=plan.key_group_owners.get(sid),
                emit_to=self._emitter(sid),
                send_to_driver=lambda batch, key=None, sid=sid: send_to_driver(sid, batch, key),
                checkpointing=checkpointing,
            ))
        if restore is not None:
            self._restore(plan, restore)

    def _restore(self, plan: PhysicalPlan, restore: TaskRestore) -> None:
        for sid, parts in restore.states.items():
            owners = plan.key_group_owners.get(sid)
            if plan.steps[sid].kind in STATEFUL_KINDS and owners is not None:
                owned = set(groups_of(owners, self.index))
                parts = [keep_key_groups(p, owned) for p in parts]
            self._call(self.ops[sid], "restore", parts)
        if restore.watermark is not None:
            self.input_watermarks.current = restore.watermark
            for op in self.ops.values():
                op.ctx.watermark = restore.watermark

    # --- wiring ---------------------------------------------------------------------

    def _emitter(self, step_id: str) -> Callable[[pa.RecordBatch, str], None]:
        def emit(batch: pa.RecordBatch, port: str) -> None:
            self._dispatch(step_id, port, batch)
        return emit

    def _dispatch(self, step_id: str, port: str, batch: pa.RecordBatch) -> None:
        targets = self._targets.get((step_id, port))
        if not targets:
            # A side output nobody consumes: counted, never silently lost.
            key = f"{port}_unconsumed"
            self.metrics.counters[key] = self.metrics.counters.get(key, 0) + batch.num_rows
            return
        for target in targets:
            if isinstance(target, NextOp):
                self._call(target.op, "on_batch", batch, target.input_index)
            else:
                self.metrics.rows_out += batch.num_rows
                for dest, part in target.router.route(batch):
                    target.outboxes[dest].put(Batch(part))

    def _call(self, op: Operator, hook: str, *args: Any) -> None:
        try:
            getattr(op, hook)(*args)
        except (UserFunctionError, StepError):
            raise
        except Exception as exc:
            what = describe_batch(args[0]) if hook == "on_batch" else hook
            raise StepError(
                f"step {op.step.step_id!r} (task {self.task_id}) failed in {hook} on {what}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _broadcast(self, message: Message) -> None:
        for box in self.outboxes:
            box.put(message)

    # --- running --------------------------------------------------------------------

    def step(self, budget: int = 8) -> bool:
        """Do up to ``budget`` units of work; True if anything moved."""
        if self.finished:
            return False
        started = time.perf_counter()
        if self._blocked_since is not None:  # blocked since the last step: until its flush
            self.metrics.backpressure_s += started - self._blocked_since
            self._blocked_since = None
        moved = self._flush()
        if not self._blocked():
            for _ in range(budget):
                if not self._pull_one():
                    break
                moved = True
                if self._blocked():
                    break
        if self._blocked():
            # Blocked on credit from the end of this step (the whole step, if nothing
            # moved) until the next one: wall time, apart from the busy time.
            self._blocked_since = time.perf_counter() if moved else started
        elif self._ended() and not self.finished:
            self.finished = True
            # The state to keep once this task is gone (a moved task's new instance has it).
            if self.checkpointing and not self.relocated_away:
                self._take_snapshot(FINAL_CHECKPOINT)
            for op in self.ops.values():
                op.close()
            moved = True
        if moved:  # useful time: steps that moved work, none spent waiting or blocked
            self.metrics.busy_s += (self._blocked_since or time.perf_counter()) - started
        return moved

    def _flush(self) -> bool:
        moved = False
        if self._draining:
            self._draining = [box for box in self._draining if not box.flush()]
        for box in self.outboxes:
            if box.pending:
                before = len(box.pending)
                box.flush()
                moved = moved or len(box.pending) < before
        return moved

    def _blocked(self) -> bool:
        return any(box.pending for box in self.outboxes)

    def _ended(self) -> bool:
        if self._retired:  # once what it still owes the channels the new plan dropped is out
            return not self._draining
        if self.source is not None:
            return self.source.done
        return (self.input_watermarks.all_ended and len(self._ended_inputs) == len(self.inputs)
                and self._ops_ended)

    def _pull_one(self) -> bool:
        if self.source is not None:
            messages = self.source.poll()
            for m in messages:
                self._on_message(m, None)
            return bool(messages)
        n = len(self.inputs)
        early = self.handover.early_inputs
        for k in range(n):
            i = (self._turn + k) % n
            if i in self._ended_inputs or (self._align and i in self._aligned) or i in early:
                continue
            message = self.inputs[i][0].poll()
            if message is not None:
                self._turn = i + 1
                self._on_message(message, i)
                return True
        return False

    def _on_message(self, message: Message, channel: int | None) -> None:
        if isinstance(message, Batch):
            self.metrics.rows_in += message.data.num_rows
            self.metrics.batches_in += 1
            if channel is None:  # from the source driver
                self._dispatch(self.chain.steps[0], "main", message.data)
            else:
                self._to_head(message.data, channel)
        elif (isinstance(message, Watermark | EndOfStream) and channel is not None
              and self.handover.defer(channel, message)):
            return
        elif isinstance(message, Watermark):
            if channel is None:
                advanced = None if message.idle else message.value
                if message.idle:
                    self._broadcast(message)
            elif message.idle:
                advanced = self.input_watermarks.set_idle(channel)
                if advanced is None and self.input_watermarks.all_idle:
                    self._broadcast(Watermark(self.input_watermarks.current, idle=True))
            else:
                advanced = self.input_watermarks.update(channel, message.value)
            if advanced is not None:
                self._advance_watermark(advanced)
        elif isinstance(message, Barrier):
            assert channel is not None, "sources inject barriers through trigger_checkpoint"
            self._barrier = message.checkpoint_id
            self._aligned.add(channel)
            self._maybe_aligned()
        elif isinstance(message, Marker):
            assert channel is not None, "markers travel on channels"
            self._carry_out(self.handover.on_marker(message.reconfig_id, channel))
        elif isinstance(message, EndOfStream):
            if channel is not None:
                self._ended_inputs.add(channel)
                self._maybe_aligned()
                self._carry_out(self.handover.on_end(channel))  # it counts as the marker
                advanced = self.input_watermarks.end(channel)
                if advanced is not None:
                    self._advance_watermark(advanced)
            if ((channel is None or len(self._ended_inputs) == len(self.inputs))
                    and not self.handover.hold_end()):  # else once the state it waits for is in
                self._end_ops()

    def _end_ops(self) -> None:
        if self._ops_ended:
            return
        self._ops_ended = True
        for op in self.ops.values():
            self._call(op, "on_end")
        self._broadcast(EndOfStream())

    def _to_head(self, batch: pa.RecordBatch, channel: int) -> None:
        """Into the chain's first operator; rows of key groups whose state is on its way
        here wait for it."""
        pending = self.handover.pending
        if pending is not None and (keys := self._input_keys[channel]) is not None:
            waiting = np.isin(key_groups(batch, keys, self.plan.max_parallelism), pending)
            if waiting.any():
                self.handover.hold(batch.filter(pa.array(waiting)), channel)
                self.metrics.counters["reconfig_held_rows"] = (
                    self.metrics.counters.get("reconfig_held_rows", 0) + int(waiting.sum()))
                batch = batch.filter(pa.array(~waiting))
                if not batch.num_rows:
                    return
        head = self.ops[self.chain.steps[0]]
        self._call(head, "on_batch", batch, self.inputs[channel][1])

    # --- checkpoints ----------------------------------------------------------------

    def trigger_checkpoint(self, checkpoint_id: int) -> None:
        """At a source task: snapshot now, between batches, and send the barrier on."""
        if self.source is None or self.finished:
            return
        self._take_snapshot(checkpoint_id)
        self._broadcast(Barrier(checkpoint_id))

    def _maybe_aligned(self) -> None:
        """Once every live input has delivered the barrier: snapshot, forward, resume."""
        if self._barrier is None:
            return
        if all(i in self._aligned or i in self._ended_inputs for i in range(len(self.inputs))):
            checkpoint_id, self._barrier = self._barrier, None
            self._aligned.clear()
            self._take_snapshot(checkpoint_id)
            self._broadcast(Barrier(checkpoint_id))

    def _take_snapshot(self, checkpoint_id: int) -> None:
        states: dict[str, Any] = {}
        for sid, op in self.ops.items():
            try:
                state = op.checkpoint(checkpoint_id)
            except Exception as exc:
                raise StepError(
                    f"step {sid!r} (task {self.task_id}) failed to snapshot its state: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if state is not None:
                states[sid] = state
        self.snapshots.append(TaskSnapshot(
            self.task_id, checkpoint_id, states,
            self.source.snapshot() if self.source is not None else None,
            self.metrics.watermark,
        ))

    def checkpoint_complete(self, checkpoint_id: int) -> None:
        for op in self.ops.values():
            self._call(op, "checkpoint_complete", checkpoint_id)

    def _advance_watermark(self, value: int) -> None:
        if self.handover.hold_watermark(value):  # rows held back must not turn late
            return
        self.metrics.watermark = value
        for op in self.ops.values():  # chain order: upstream results reach downstream first
            op.ctx.watermark = value
            self._call(op, "on_watermark", value)
        self._broadcast(Watermark(value))

    def snapshot_metrics(self) -> TaskMetrics:
        counters = dict(self.metrics.counters)
        for op in self.ops.values():
            for k, v in op.ctx.counters.items():
                counters[k] = counters.get(k, 0) + v
        m = self.metrics
        backpressure = m.backpressure_s
        if self._blocked_since is not None:  # blocked now: up to now
            backpressure += time.perf_counter() - self._blocked_since
        return TaskMetrics(
            m.rows_in, m.rows_out, m.batches_in, m.busy_s, backpressure, m.watermark, counters,
            queued_rows=sum(endpoint.queued_rows() for endpoint, _ in self.inputs),
            backlog_rows=self.source.backlog() if self.source is not None else None,
            key_group_rows=self._key_group_rows(),
            paced_rate_per_s=self.source.rate_per_task if self.source is not None else None,
        )

    def _key_group_rows(self) -> dict[str, dict[int, int]]:
        """Rows this task routed per key group, per keyed step downstream (non-zero only)."""
        totals: dict[str, np.ndarray] = {}
        for edge in self._edges:
            router = edge.router
            if isinstance(router, HashRouter):
                sid = edge.edge.dst_step
                totals[sid] = totals[sid] + router.group_rows if sid in totals \
                    else router.group_rows
        out: dict[str, dict[int, int]] = {}
        for sid, rows in totals.items():
            groups = np.flatnonzero(rows)
            out[sid] = dict(zip(groups.tolist(), rows[groups].tolist(), strict=True))
        return out

    # --- live reconfiguration: carrying out the handover's actions ----------------------

    @property
    def relocated_away(self) -> bool:
        """A ``Place`` moved this task: another instance runs it, this one drains."""
        return self.handover.leaving

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
        part = part_of(spec, plan, self.task_id, steps=self.ops, source_step=self._source_step,
                       input_chains=self._input_chains)
        old_inputs = len(self.inputs)
        if not part.leaving:
            self.plan = plan
            self.chain = plan.chain_of(self.chain.chain_id)
            if self.task_id in spec.removed:
                # The rows still on its inputs were routed here under the old plan: they go
                # on under it too, and its markers follow them when it retires.
                self._rewire_at_end = (plan, spec, outputs)
            else:
                self._rewire(plan, spec, outputs)
            for c in sorted(plan.inputs_of(self.task_id), key=lambda c: c.channel_id):
                if c.channel_id in spec.new_channels:
                    self.inputs.append((inputs[c.channel_id], c.edge.dst_input))
                    self._input_keys.append(hash_keys(c.edge))
                    self._input_chains.append(TaskId(c.src_task).chain)
                    self.input_watermarks.add_input()
            for sid in [s for s in spec.updated_steps if s in self.ops]:
                self._swap_operator(sid, plan)
            if part.aligns and self.source is not None:
                self.source.restate()  # consumers forget this task's watermark now
            self._check_gains(part.gaining_splits, spec)
        self._carry_out(self.handover.command(part, old_inputs, self._ended_inputs))

    def join_reconfiguration(self, spec: ReconfigSpec) -> None:
        """A task the reconfiguration created: wait for the state of its key groups."""
        part = part_of(spec, self.plan, self.task_id, steps=self.ops, joining=True,
                       source_step=self._source_step,
                       transactions=[sid for sid, op in self.ops.items()
                                     if isinstance(op, TransactionalOperator)])
        self._check_gains(part.gaining_splits, spec)
        self._carry_out(self.handover.command(part))

    def install_state(self, step_id: str, from_task: str, state: Any) -> None:
        """State of key groups (or splits) this task gains, handed over by their old owner."""
        self._carry_out(self.handover.state_arrived(step_id, from_task, state))

    @property
    def _source_step(self) -> str | None:
        return self.chain.steps[0] if self.source is not None else None

    def _check_gains(self, gaining_splits: Mapping[int, Any], spec: ReconfigSpec) -> None:
        if gaining_splits and self.source is not None and self.source.done \
                and self.task_id not in spec.relocated:
            # It finished after the controller planned this: its end of stream and final
            # state are out, so it cannot read more. Failing restarts the job from its
            # checkpoint with the plan before this change.
            raise RuntimeError(
                f"source task {self.task_id} had finished reading its splits when "
                f"reconfiguration {spec.reconfig_id} gave it splits of task(s) "
                f"{sorted(gaining_splits)}; the job goes back to its last checkpoint")

    def _carry_out(self, actions: list[Action]) -> None:
        """Do what the handover asks, in order (an action may feed it again)."""
        for action in actions:
            match action:
                case ExpectSplits(splits):
                    assert self.source is not None
                    self.source.expect(splits)
                case HandOverGroups(r, sid, owner, groups):
                    op = self.ops[sid]
                    if isinstance(op, KeyedStateOperator):
                        self._send_state(r, sid, owner, op.snapshot_state(list(groups)))
                        op.drop_state(list(groups))
                    else:  # a stateless step behind a key_by: only its routing moves, but
                        self._send_state(r, sid, owner, None)  # its new owner waits for this
                case HandOverSplits(r, owner, splits):
                    assert self.source is not None
                    self._send_state(r, self.chain.steps[0], owner, self.source.release(splits))
                case HandOverTransactions(r):  # sinks hand their open transaction over
                    for sid, op in self.ops.items():
                        if isinstance(op, TransactionalOperator):
                            self.handoffs.append(StateHandoff(
                                r, sid, self.task_id, self.task_id, op.hand_over(r)))
                case Retire(r, leaving):
                    self._retire(r, leaving)
                case RestartWatermarks(channels):
                    for channel in channels:
                        self.input_watermarks.restart(channel)
                case Replay(messages):
                    for channel, message in messages:
                        self._on_message(message, channel)
                case Install(states):
                    for sid, from_task, state in states:
                        self.install_state(sid, from_task, state)
                case TakeOver(sid, _, state):
                    if self.source is not None and sid == self.chain.steps[0]:
                        self.source.adopt(state)  # splits: read on from where they were left
                    elif state is not None or isinstance(self.ops[sid], KeyedStateOperator):
                        self._call(self.ops[sid], "take_over", state)  # keyed state, a sink's
                    # else: a stateless step's groups carry no state (None) to take over
                case Release(rows, watermark, end):
                    for batch, channel in rows:  # in the order they arrived
                        self._to_head(batch, channel)
                    if watermark is not None:
                        self._advance_watermark(watermark)
                    if end:
                        self._end_ops()
                case Report(r):
                    self.reconfigured.append(TaskReconfigured(r, self.task_id))
                case _:
                    raise AssertionError(f"unknown action {action!r}")

    def _send_state(self, reconfig_id: int, step_id: str, owner: int, state: Any) -> None:
        self.handoffs.append(StateHandoff(
            reconfig_id, step_id, self.task_id, self.chain.task_id(owner), state))

    def _retire(self, reconfig_id: int, leaving: bool) -> None:
        """End like a finished task; what it still owes the channels the new plan dropped
        goes out first."""
        if self.finished:
            return
        if self._rewire_at_end is not None:
            self._rewire(*self._rewire_at_end)
            self._rewire_at_end = None
        if not self._ops_ended:
            if leaving:  # consumers that do not know of it yet wait
                self._broadcast(Marker(reconfig_id))
            self._end_ops()
            for box in self._draining:  # channels the new plan dropped end too
                box.put(EndOfStream())
        self._retired = True

    def _rewire(
        self, plan: PhysicalPlan, spec: ReconfigSpec, outputs: dict[int, OutputEndpoint]
    ) -> None:
        self._draining += rewire_outputs(self._edges, plan, self.task_id, self.index, spec,
                                         outputs, self._ops_ended)
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
        replace_operator(self._targets, old, new)
