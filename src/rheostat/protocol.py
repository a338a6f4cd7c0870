"""The protocol between the controller and the workers, the one shape on every backend.

Events travel from the workers to the controller, commands the other way; the records
a task reports during a reconfiguration (:class:`StateHandoff`, :class:`TaskReconfigured`,
:class:`UpdateChecked`) ride inside them. All are frozen dataclasses, whether they cross a
pipe (local backend, pickled), an actor call (Ray) or nothing (the inline backend). A sink
batch crosses as Arrow IPC, so a sliced batch never drags its whole buffer along.

>>> import pickle, pyarrow as pa
>>> event = SinkData("out", pa.record_batch({"x": [1, 2, 3]}).slice(1), key=("out", 7))
>>> pickle.loads(pickle.dumps(event)).batch.to_pydict()
{'x': [2, 3]}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

# Re-exported: the ids that events and commands carry.
from rheostat.plan.ids import CheckpointId as CheckpointId
from rheostat.plan.ids import TaskId as TaskId
from rheostat.plan.reconfig import ReconfigSpec

# --- what a task reports during a live reconfiguration ------------------------------


@dataclass(frozen=True)
class StateHandoff:
    """The state of some key groups of ``step_id``, from ``from_task`` to ``to_task``."""

    reconfig_id: int
    step_id: str
    from_task: str
    to_task: str
    #: The operator's ``snapshot_state(groups)`` (immutable), or its encoding as bytes.
    state: Any


@dataclass(frozen=True)
class TaskReconfigured:
    reconfig_id: int
    task_id: str


@dataclass(frozen=True)
class UpdateChecked:
    """Whether this task's state passes the check of a function update (before any
    task switches); ``refusal`` says why not."""

    reconfig_id: int
    task_id: str
    refusal: str | None = None


# --- events: worker -> controller ---------------------------------------------------


@dataclass(frozen=True)
class TaskFinished:
    task_id: str


@dataclass(frozen=True)
class TaskFailed:
    task_id: str
    error: BaseException


@dataclass(frozen=True)
class WorkerDied:
    worker: int
    exitcode: int | None


@dataclass
class TaskMetrics:
    """What a task has done so far: its counts grow, its watermark is its latest.

    ``busy_s`` is the task's *useful time* (DS2): seconds in steps that moved work
    (reading, processing, routing, serialising), never waiting for input and never blocked;
    ``backpressure_s`` is the wall time it was blocked on output credit. The two do not
    overlap. ``queued_rows`` (rows waiting at its inputs) and ``backlog_rows`` (a source
    task's rows behind: not yet read, or due at its paced rate and not yet read; ``None``
    when unknown) and ``paced_rate_per_s`` (a paced source task's asked rate now, which a
    rate schedule changes; ``None`` when not paced) are gauges, as of the report.
    ``key_group_rows`` counts the rows the task
    routed, per keyed step downstream (a chain head), per key group (non-zero groups only).
    """

    rows_in: int = 0
    rows_out: int = 0
    batches_in: int = 0
    busy_s: float = 0.0
    backpressure_s: float = 0.0
    watermark: int | None = None
    counters: dict[str, int] = field(default_factory=dict)
    queued_rows: int = 0
    backlog_rows: int | None = None
    key_group_rows: dict[str, dict[int, int]] = field(default_factory=dict)
    paced_rate_per_s: float | None = None


@dataclass(frozen=True)
class MetricsReport:
    worker: int
    tasks: dict[str, TaskMetrics] = field(default_factory=dict)  # task id -> its metrics


@dataclass(frozen=True)
class SinkData:
    step_id: str
    batch: pa.RecordBatch
    #: A committed transaction's key: the driver delivers each key once. None: always.
    key: Any = None

    def __reduce__(self) -> tuple[Any, ...]:
        return _sink_data, (self.step_id, _to_ipc(self.batch), self.key)


def _to_ipc(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def _sink_data(step_id: str, ipc: bytes, key: Any) -> SinkData:
    return SinkData(step_id, pa.ipc.open_stream(pa.py_buffer(ipc)).read_next_batch(), key)


@dataclass(frozen=True)
class CheckpointAck:
    """A task's part of a checkpoint: parts it wrote to the store, or small ones inline."""

    task_id: str
    checkpoint_id: int
    parts: tuple[Any, ...] = ()  # PartInfo of parts already in the store
    inline: dict[str, bytes] = field(default_factory=dict)  # parts for the controller to write


@dataclass(frozen=True)
class FinalCommitted:
    """A worker's sinks have committed the job's final checkpoint."""

    worker: int


@dataclass(frozen=True)
class CheckpointFailed:
    task_id: str
    checkpoint_id: int
    reason: str


@dataclass(frozen=True)
class StateHandedOver:
    """A task handed over key groups' state; the controller delivers it (InstallState)."""

    handoff: StateHandoff


@dataclass(frozen=True)
class PartDone:
    """A task finished its part in a reconfiguration (or checked a function update)."""

    done: TaskReconfigured | UpdateChecked


@dataclass(frozen=True)
class WorkerStopped:
    """A worker's last event: it carried out ``StopWorker`` (backends keep it to
    themselves)."""

    worker: int


Event = (
    TaskFinished | TaskFailed | WorkerDied | MetricsReport | SinkData | CheckpointAck
    | CheckpointFailed | FinalCommitted | StateHandedOver | PartDone | WorkerStopped
)


# --- commands: controller -> worker -------------------------------------------------


@dataclass(frozen=True)
class StopWorker:
    """Stop hosting tasks and exit."""


@dataclass(frozen=True)
class TriggerCheckpoint:
    """Source tasks: snapshot and inject the barrier of ``checkpoint_id``."""

    checkpoint_id: int


@dataclass(frozen=True)
class CompleteCheckpoint:
    """Every task: ``checkpoint_id`` is durable (sinks commit). The finished tasks in
    ``finals`` had their final snapshot in it: they commit what it staged."""

    checkpoint_id: int
    finals: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reconfigure:
    """Every worker: carry out a reconfiguration; the plan after it travels pickled."""

    spec: ReconfigSpec
    plan: bytes  # cloudpickle of the new PhysicalPlan
    placement: dict[str, int]


@dataclass(frozen=True)
class InstallState:
    """The worker of ``handoff.to_task``: install the state handed over."""

    handoff: StateHandoff


@dataclass(frozen=True)
class CheckUpdate:
    """Every worker: check the function updates in ``plan`` against the tasks' state."""

    reconfig_id: int
    plan: bytes  # cloudpickle of the PhysicalPlan after the reconfiguration
    steps: tuple[str, ...]


Command = (
    StopWorker | TriggerCheckpoint | CompleteCheckpoint | Reconfigure | InstallState
    | CheckUpdate
)
