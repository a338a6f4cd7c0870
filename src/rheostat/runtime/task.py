"""A task: one running instance of a chain of fused steps.

The task owns no thread and no process. Its host (a backend's worker) calls
:meth:`Task.step` repeatedly; each call moves a bounded amount of work and says whether
anything moved. Inside, batches go from operator to operator by direct calls and leave
the chain through routers into outboxes; a task whose outboxes wait for credit takes no
new input, which is how backpressure reaches the sources.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from rheostat.plan.keygroups import groups_of
from rheostat.plan.logical import STATEFUL_KINDS, SourceStep
from rheostat.plan.physical import Channel, PhysicalPlan
from rheostat.protocol import TaskMetrics
from rheostat.runtime.channels import InputEndpoint, Outbox, OutputEndpoint
from rheostat.runtime.errors import UserFunctionError, describe_batch
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
from rheostat.runtime.operator import Operator, OperatorContext, build_operator, keep_key_groups
from rheostat.runtime.reconfig import StateHandoff, TaskReconfigured, UpdateChecked
from rheostat.runtime.routing import make_router
from rheostat.runtime.source import SourceDriver, SplitState
from rheostat.runtime.task_reconfig import LiveReconfiguration, _Edge, _hash_keys, _Next, _Switch
from rheostat.runtime.watermarks import InputWatermarks


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


class Task(LiveReconfiguration):
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
        chain_id, index = task_id.rsplit("#", 1)
        self.task_id = task_id
        self.plan = plan
        self.chain = plan.chain_of(chain_id)
        self.index = int(index)
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
        self._targets: dict[tuple[str, str], list[_Edge | _Next]] = {}
        self._edges: list[_Edge] = []
        self._wire_outputs(plan, outputs)
        self.outboxes = [o for e in self._edges for o in e.outboxes.values()]
        # Inputs: (endpoint, head step input index, position in the watermark tracker)
        in_channels: list[Channel] = sorted(
            plan.inputs_of(task_id), key=lambda c: c.channel_id
        )
        self.inputs = [(inputs[c.channel_id], c.edge.dst_input) for c in in_channels]
        self._input_keys = [_hash_keys(c.edge) for c in in_channels]
        self._input_chains = [c.src_task.rsplit("#", 1)[0] for c in in_channels]
        self.input_watermarks = InputWatermarks(len(self.inputs))
        self._ended_inputs: set[int] = set()
        self._turn = 0
        self.checkpointing = checkpointing
        self.snapshots: list[TaskSnapshot] = []  # drained by the host
        self._barrier: int | None = None  # the checkpoint being aligned
        self._aligned: set[int] = set()  # inputs that delivered its barrier: held back
        # Hold inputs back only if some step here needs exactly-once (the default).
        self._align = not all(plan.steps[s].at_least_once for s in self.chain.steps)
        # Live reconfiguration (see reconfigure()).
        self.handoffs: list[StateHandoff] = []  # drained by the host
        self.reconfigured: list[TaskReconfigured | UpdateChecked] = []  # drained by the host
        self._known_reconfig = 0  # the newest reconfiguration whose command arrived
        self._early: dict[int, set[int]] = {}  # markers of reconfigurations not yet known
        self._switch: _Switch | None = None
        self._report: int | None = None  # reconfiguration to report once done
        self._awaiting: set[tuple[str, int]] = set()  # (step, old owner) handoffs to install
        self._pending: np.ndarray | None = None  # key groups whose state has not arrived
        self._held: list[tuple[pa.RecordBatch, int]] = []  # their rows, in arrival order
        self._held_watermark: int | None = None
        self._end_deferred = False
        self._ops_ended = False
        self._retired = False
        self._relocated_away = False  # a Place moved this task: another instance runs it
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

    def _wire_outputs(self, plan: PhysicalPlan, outputs: dict[int, OutputEndpoint]) -> None:
        my_channels = plan.outputs_of(self.task_id)
        for sid in self.chain.steps:
            for edge in [e for e in plan.edges if e.src_step == sid]:
                targets = self._targets.setdefault((sid, edge.src_port), [])
                if edge.dst_step in self.chain.steps:
                    targets.append(_Next(self.ops[edge.dst_step], edge.dst_input))
                    continue
                chans = [c for c in my_channels if c.edge == edge]
                router = make_router(
                    edge.routing, self.index, plan.parallelism[edge.dst_step],
                    plan.key_group_owners.get(edge.dst_step), plan.max_parallelism,
                )
                out = _Edge(edge, router,
                            {c.dst_index: Outbox(outputs[c.channel_id]) for c in chans})
                targets.append(out)
                self._edges.append(out)

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
            if isinstance(target, _Next):
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
        moved = self._flush()
        if not self._blocked():
            for _ in range(budget):
                if not self._pull_one():
                    break
                moved = True
                if self._blocked():
                    break
        if self._blocked():
            self.metrics.backpressure_s += time.perf_counter() - started
        elif self._ended() and not self.finished:
            self.finished = True
            # The state to keep once this task is gone (a moved task's new instance has it).
            if self.checkpointing and not self._relocated_away:
                self._take_snapshot(FINAL_CHECKPOINT)
            for op in self.ops.values():
                op.close()
            moved = True
        if moved:
            self.metrics.busy_s += time.perf_counter() - started
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
        early = set().union(*self._early.values()) if self._early else ()
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
        elif isinstance(message, Watermark | EndOfStream) and self._defer(message, channel):
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
            self._on_marker(message.reconfig_id, channel)
        elif isinstance(message, EndOfStream):
            if channel is not None:
                self._ended_inputs.add(channel)
                self._maybe_aligned()
                self._marker_done(channel)
                advanced = self.input_watermarks.end(channel)
                if advanced is not None:
                    self._advance_watermark(advanced)
            if channel is None or len(self._ended_inputs) == len(self.inputs):
                if self._pending is not None:
                    self._end_deferred = True  # once the state it waits for is in
                else:
                    self._end_ops()

    def _defer(self, message: Watermark | EndOfStream, channel: int | None) -> bool:
        """After its marker, a channel's watermarks (and its end, a watermark at infinity)
        speak for rows routed by the new plan: they wait until this task has handed its
        leaving key groups over, so none of their windows fires early."""
        sw = self._switch
        if sw is None or channel is None or channel not in sw.marked:
            return False
        sw.deferred.setdefault(channel, []).append(message)
        return True

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
        if self._pending is not None and (keys := self._input_keys[channel]) is not None:
            waiting = np.isin(key_groups(batch, keys, self.plan.max_parallelism), self._pending)
            if waiting.any():
                self._held.append((batch.filter(pa.array(waiting)), channel))
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
        if self._pending is not None:  # rows held back must not turn late
            self._held_watermark = value
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
        return TaskMetrics(m.rows_in, m.rows_out, m.batches_in, m.busy_s, m.backpressure_s,
                           m.watermark, counters)
