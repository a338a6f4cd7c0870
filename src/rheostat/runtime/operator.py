"""The operator interface: one step's logic inside a task, and the registry by step kind.

An operator receives batches and watermarks from the task that hosts it and emits batches
through its context. It never touches channels, processes or the backend, so the same
operator runs in the deterministic single-process mode, in local worker processes and on Ray.

>>> import pyarrow as pa
>>> from rheostat.plan.logical import UnionStep
>>> out = []
>>> op = Identity(UnionStep("u", ()))
>>> op.open(OperatorContext.for_test(op.step, out.append))
>>> op.on_batch(pa.record_batch({"x": [1]}), 0)
>>> out[0].num_rows
1
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from rheostat.plan.logical import MAIN, Step
from rheostat.runtime.messages import MIN_WATERMARK


@dataclass
class OperatorContext:
    step: Step
    task_index: int
    parallelism: int
    max_parallelism: int
    #: key group -> owning task index, for steps with a hash-routed input.
    key_group_owners: tuple[int, ...] | None
    #: emit(batch, port): hands a batch to whatever consumes that port of this step.
    emit_to: Callable[[pa.RecordBatch, str], None]
    send_to_driver: Callable[..., None] = lambda batch, key=None: None
    #: Whether the job takes checkpoints (sinks then stage output until they complete).
    checkpointing: bool = False
    #: The task's current input watermark (the minimum over its inputs).
    watermark: int = MIN_WATERMARK
    #: Named counters shown in metrics and the job summary (``late_dropped``, ``skipped``...).
    counters: Counter[str] = field(default_factory=Counter)

    def emit(self, batch: pa.RecordBatch, port: str = MAIN) -> None:
        if batch.num_rows:
            self.emit_to(batch, port)

    @classmethod
    def for_test(
        cls,
        step: Step,
        on_emit: Callable[[pa.RecordBatch], None],
        *,
        parallelism: int = 1,
        max_parallelism: int = 4096,
        owners: tuple[int, ...] | None = None,
        ports: dict[str, list[pa.RecordBatch]] | None = None,
    ) -> OperatorContext:
        """A context for unit tests: main-port batches go to ``on_emit``, others to ``ports``."""

        def emit_to(batch: pa.RecordBatch, port: str) -> None:
            if port == MAIN:
                on_emit(batch)
            elif ports is not None:
                ports.setdefault(port, []).append(batch)

        return cls(step, 0, parallelism, max_parallelism, owners, emit_to)


class Operator:
    """Base class. Subclasses override the hooks they need."""

    def __init__(self, step: Step) -> None:
        self.step = step
        self.ctx: OperatorContext

    def open(self, ctx: OperatorContext) -> None:
        self.ctx = ctx

    def on_batch(self, batch: pa.RecordBatch, input_index: int) -> None:
        raise NotImplementedError

    def on_watermark(self, watermark: int) -> None:
        """The input watermark advanced to ``watermark``: emit what is now complete."""

    def on_end(self) -> None:
        """Every input has ended (after the final watermark): emit what remains."""

    def close(self) -> None:
        """Release resources; called once, after ``on_end`` or on failure."""

    # --- state: an operator without any keeps these defaults --------------------------
    # Operators with state say so by their base class: KeyedStateOperator (state split by
    # key group, which moves between tasks) or TransactionalOperator (a sink's open
    # transaction, which moves with its task).

    def checkpoint(self, checkpoint_id: int) -> Any:
        """This operator's state at a barrier (picklable; None when it has none)."""
        return None

    def restore(self, parts: list[Any]) -> None:
        """Take back state from ``checkpoint`` results (several when tasks were merged)."""
        raise ValueError(f"step {self.step.step_id!r} has no state to restore")

    def adopt(self, old: Operator) -> None:
        """Take over the state of ``old``, this step's operator until a function update."""

    def check_update(self, new: Operator) -> None:
        """Raise if ``new`` (the step's operator after a function update, opened but
        holding nothing) could not take over this operator's state. Nothing changes here."""

    def checkpoint_complete(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` is durable everywhere (sinks commit here)."""


class KeyedStateOperator(Operator):
    """An operator whose state is split by key group: snapshotted, restored, handed to
    another task and dropped one key group at a time (windows, joins, keyed process)."""

    def snapshot_state(self, key_groups: Iterable[int] | None = None) -> Any:
        """The state of ``key_groups`` (all when None), immutable, keyed by key group."""
        raise NotImplementedError

    def restore_state(self, part: Any) -> None:
        """Add state taken by :meth:`snapshot_state` (key groups this task does not hold)."""
        raise NotImplementedError

    def drop_state(self, key_groups: Iterable[int]) -> None:
        """Forget ``key_groups`` (after they moved to another task)."""
        raise NotImplementedError

    def checkpoint(self, checkpoint_id: int) -> Any:
        return self.snapshot_state()

    def restore(self, parts: list[Any]) -> None:
        for part in parts:
            self.restore_state(part)

    def adopt(self, old: Operator) -> None:
        self.restore([old.checkpoint(0)])

    def check_update(self, new: Operator) -> None:
        new.restore([self.checkpoint(0)])

    def take_over(self, state: Any) -> None:
        """Add state of key groups another task handed over while the job runs."""
        self.restore([state])


class TransactionalOperator(Operator):
    """An operator holding open transactions (a two-phase sink): when its task moves to
    another worker they go along to the task's new instance."""

    def hand_over(self, reconfig_id: int) -> Any:
        """This instance stops: what the new instance needs to go on (``take_over``)."""
        raise NotImplementedError

    def take_over(self, state: Any) -> None:
        """Adopt what the task's old instance handed over."""
        raise NotImplementedError


def keep_key_groups(state: Any, owned: set[int]) -> Any:
    """The part of a per-key-group state that belongs to ``owned`` key groups.

    Keyed operators snapshot either ``{key_group: ...}`` or an Arrow table with a ``_kg``
    column; both are filtered here, so a task restores only the key groups it now owns.

    >>> keep_key_groups({1: "a", 2: "b"}, {2})
    {2: 'b'}
    """
    if isinstance(state, dict):
        return {g: v for g, v in state.items() if g in owned}
    if isinstance(state, pa.Table):
        kg_type = state.schema.field("_kg").type
        return state.filter(pc.is_in(state.column("_kg"), pa.array(sorted(owned), kg_type)))
    raise TypeError(f"cannot split state of type {type(state).__name__} by key group")


class Identity(Operator):
    def on_batch(self, batch: pa.RecordBatch, input_index: int) -> None:
        self.ctx.emit(batch)


OPERATORS: dict[str, type[Operator]] = {"union": Identity}

OperatorClass = TypeVar("OperatorClass", bound=type[Operator])


def register(kind: str) -> Callable[[OperatorClass], OperatorClass]:
    """Class decorator: the operator that runs steps of ``kind``."""

    def deco(cls: OperatorClass) -> OperatorClass:
        OPERATORS[kind] = cls
        return cls

    return deco


def build_operator(step: Step) -> Operator:
    # Importing the package registers every built-in operator.
    import rheostat.runtime.operators  # noqa: F401

    try:
        cls = OPERATORS[step.kind]
    except KeyError:
        raise ValueError(f"step {step.step_id!r}: no operator for kind {step.kind!r}") from None
    return cls(step)
